"""The runner: plan the runs, check them all before any work, run the jobs, then summarise.

Jobs run job by job across the runs (every variant is tested before any is explained, so ``select: agreed``
works in one command). Grids spread runs over devices (``--devices``) or take one slice of them
(``--shard I/N``). A job already done for the same config (``jobs_done.json``) is skipped, and so are the
runs with nothing left to do; ``--force JOB`` runs a job again. One process works in a run directory at a
time (:mod:`medattn.runs.lock`).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from ..config import Experiment
from ..errors import UserError
from ..store.identity import check_run_dir
from ..store.manifest import write_run_files
from .plan import Plan, Todo, job, jobs_of, plan, runs_of
from .state import Run
from .summary import experiment_view, printed, summarize


def run_experiment(exp: Experiment, output_dir: str | None = None, jobs: list[str] | None = None,
                   device: str | None = None, log: Callable[[str], None] = print, devices: str | None = None,
                   shard: str | None = None, force: list[str] | None = None) -> list[dict]:
    """Plan (every check before any work), execute the plan, summarise; returns the summary table's rows."""
    return execute(plan(exp, output_dir, jobs, device, shard=shard, devices=devices, force=force, log=log), log)


def execute(p: Plan, log: Callable[[str], None] = print) -> list[dict]:
    """Run a plan's pending jobs (over its device slots, or in this process holding its locks), then
    rebuild the experiment tables; returns the summary table's rows."""
    from ..distributed import is_main
    from .lock import locked_runs

    exp = p.experiment
    if p.shard or p.slots:
        log(f"== {'shard ' + p.shard + ': ' if p.shard else ''}{len(p.chosen)} of {len(p.runs)} run(s), "
            f"{len(p.todo)} to run" + (f" over {', '.join(p.slots)}" if p.slots else ""))
    t0 = time.time()
    if p.slots:
        run_grid(p, log)
    else:
        with locked_runs(p.locks):
            run_in_order(exp, p.todo, log)
    if not is_main():  # under torchrun only rank 0 writes the summary
        return []
    view = summarize(experiment_view(exp.name, [r for r, _ in p.runs], log), exp.registry)
    for name in jobs_of(p.chosen):
        written = job(exp.registry, name).finish(view)
        if written:
            log(f"== {name} across the experiment: {', '.join(str(q) for q in written)}")
    log(f"== {len(p.todo)} run(s) in {time.time() - t0:.0f}s; summary in {view.dir.root}")
    log(printed(view))
    return list(view.tables.get("summary", []))


def run_grid(p: Plan, log: Callable[[str], None]) -> None:
    """The plan's runs in parallel over its device slots, one process each; a job that reads other runs
    waits, in a second phase, until every run has finished the jobs before it."""
    from .grid import run_parallel
    from .lock import check_unlocked

    for run, _ in p.todo:  # a run held by another process stops the grid before any work
        check_unlocked(run.dir)
    exp = p.experiment
    first, _ = p.phases
    for n, phase in enumerate(q for q in p.phases if q):
        if n and first:
            log(f"== second phase ({p.why}): {', '.join(jobs_of(phase))}")
        failed = run_parallel([(r.variant, r.seed, run_jobs) for r, run_jobs in phase], p.slots, parallel_worker,
                              (str(exp.path), list(exp.overrides), p.output_dir), log)
        if failed:
            raise UserError("run(s) failed: " + "; ".join(f"{v} (exit {c})" for v, c in failed))


def run_in_order(exp: Experiment, todo: Todo, log: Callable[[str], None]) -> None:
    """Job by job across the runs, after writing every run's config and manifest."""
    from ..distributed import is_main

    for run, run_jobs in todo:
        log(f"== {run.experiment}/{run.label} on {run.device}: {', '.join(run_jobs)}")
        if is_main():
            write_run_files(run)
    for name in jobs_of(todo):
        batch = [run for run, run_jobs in todo if name in run_jobs]
        for i, run in enumerate(batch, 1):
            log(f"== {name} [{i}/{len(batch)}] {run.experiment}/{run.label}")
            execute_job(exp, run, name, log)


def execute_run(exp: Experiment, run: Run, run_jobs: list[str], log: Callable[[str], None] = print) -> None:
    """Write the run files, then run the jobs in order (one run's process in a grid)."""
    from ..distributed import is_main

    if is_main():
        write_run_files(run)
    for name in run_jobs:
        execute_job(exp, run, name, log)


def execute_job(exp: Experiment, run: Run, name: str, log: Callable[[str], None] = print) -> None:
    """One job of one run, recorded in jobs_done.json when it finishes (a re-run skips it)."""
    from ..distributed import is_main, sync_ranks
    from .grid import mark_done

    main = is_main()
    this = job(exp.registry, name)
    if not main and not this.distributed:
        return
    started = time.time()
    this.run(run)
    if this.distributed:
        sync_ranks()  # under torchrun every rank leaves a job together (no rank tears down mid-job)
    if main:
        mark_done(run, name)
        log(f"   {name} done in {time.time() - started:.1f}s")


def parallel_worker(file: str, overrides: list[str], output_dir: str | None, device: str, variant: str,
                    seed: int | None, run_jobs: list[str]) -> None:
    """Entry point of one run's process in a grid: load the experiment, run ``run_jobs`` of that run on
    ``device``, holding the run directory's lock."""
    import sys

    from ..config import load_experiment
    from ..errors import EXIT_BAD_INPUT, render_error
    from .lock import locked_runs

    tag = variant if seed is None else f"{variant}/seed-{seed}"

    def log(msg: str) -> None:
        print(f"[{tag}@{device}] {msg}", flush=True)

    try:
        exp = load_experiment(Path(file), overrides)
        (run, _), = [(r, j) for r, j in runs_of(exp, output_dir, run_jobs, device)
                     if r.variant == variant and r.seed == seed]
        run.log = log
        check_run_dir(run)
        with locked_runs([run.dir]):
            log(f"{run.experiment}/{run.label} on {run.device}: {', '.join(run_jobs)}")
            execute_run(exp, run, run_jobs, log)
    except (UserError, OSError) as exc:
        print(f"[{tag}] {render_error(exc)}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
