"""The runner: plan the runs, check them all before any work, run the jobs, then summarise.

Jobs run job by job across the runs (every variant is tested before any is explained, so ``select: agreed``
works in one command). Grids spread runs over devices (``--devices``) or take one slice of them
(``--shard I/N``); runs whose jobs are all done are then skipped.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from .config import Experiment
from .errors import UserError
from .identity import check_run_dir
from .manifest import write_run_files
from .plan import check_prerequisites, job, plan
from .run_state import Run
from .summary import experiment_view, printed, summarize


def run_experiment(exp: Experiment, output_dir: str | None = None, jobs: list[str] | None = None,
                   device: str | None = None, log: Callable[[str], None] = print, devices: str | None = None,
                   shard: str | None = None) -> list[dict]:
    """Plan, check every run (directory, device, prerequisites) before any work, run the jobs, summarise;
    returns the rows of the summary table."""
    from .distributed import is_main
    from .grid import is_complete, parse_devices, parse_shard, run_parallel, shard_of

    runs = plan(exp, output_dir, jobs, device)
    chosen = shard_of(runs, *parse_shard(shard)) if shard else list(runs)
    slots = parse_devices(devices) if devices else None
    todo = []
    for run, run_jobs in chosen:  # every check first: a bad device or a foreign run dir stops before any work
        run.log = log
        if check_run_dir(run) == "replaced":
            log(f"== {run.label}: the run directory held another run without checkpoints; replacing it")
        if not slots:
            _ = run.device
        if (slots or shard) and is_complete(run, run_jobs):
            log(f"== {run.experiment}/{run.label}: complete ({', '.join(run_jobs)}); skipped")
        else:
            todo.append((run, run_jobs))
    check_prerequisites(todo, exp.registry)
    if shard or slots:
        log(f"== {'shard ' + shard + ': ' if shard else ''}{len(chosen)} of {len(runs)} run(s), "
            f"{len(todo)} to run" + (f" over {', '.join(slots)}" if slots else ""))
    t0 = time.time()
    if slots:
        failed = run_parallel([(r.variant, r.seed) for r, _ in todo], slots, parallel_worker,
                              (str(exp.path), list(exp.overrides), output_dir, jobs), log)
        if failed:
            raise UserError("run(s) failed: " + "; ".join(f"{v} (exit {c})" for v, c in failed))
    else:
        run_in_order(exp, todo, log)
    if not is_main():  # under torchrun only rank 0 writes the summary
        return []
    view = summarize(experiment_view(exp.name, [r for r, _ in runs], log), exp.registry)
    for name in dict.fromkeys(j for _, run_jobs in chosen for j in run_jobs):
        written = job(exp.registry, name).finish(view)
        if written:
            log(f"== {name} across the experiment: {', '.join(str(p) for p in written)}")
    log(f"== {len(todo)} run(s) in {time.time() - t0:.0f}s; summary in {view.dir.root}")
    log(printed(view))
    return list(view.tables.get("summary", []))


def run_in_order(exp: Experiment, todo: list[tuple[Run, list[str]]], log: Callable[[str], None]) -> None:
    """Job by job across the runs, after writing every run's config and manifest."""
    from .distributed import is_main

    for run, run_jobs in todo:
        log(f"== {run.experiment}/{run.label} on {run.device}: {', '.join(run_jobs)}")
        if is_main():
            write_run_files(run)
    for name in dict.fromkeys(j for _, run_jobs in todo for j in run_jobs):
        batch = [run for run, run_jobs in todo if name in run_jobs]
        for i, run in enumerate(batch, 1):
            log(f"== {name} [{i}/{len(batch)}] {run.experiment}/{run.label}")
            execute_job(exp, run, name, log)


def execute_run(exp: Experiment, run: Run, run_jobs: list[str], log: Callable[[str], None] = print) -> None:
    """Write the run files, then run the jobs in order (one run's process in a grid)."""
    from .distributed import is_main

    if is_main():
        write_run_files(run)
    for name in run_jobs:
        execute_job(exp, run, name, log)


def execute_job(exp: Experiment, run: Run, name: str, log: Callable[[str], None] = print) -> None:
    """One job of one run, recorded in jobs_done.json when it finishes (grids skip complete runs)."""
    from .distributed import is_main, sync_ranks
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


def parallel_worker(file: str, overrides: list[str], output_dir: str | None, jobs: list[str] | None,
                    device: str, variant: str, seed: int | None) -> None:
    """Entry point of one run's process in a grid: load the experiment, run that run on ``device``."""
    import sys

    from .config import load_experiment
    from .errors import EXIT_BAD_INPUT, render_error

    tag = variant if seed is None else f"{variant}/seed-{seed}"

    def log(msg: str) -> None:
        print(f"[{tag}@{device}] {msg}", flush=True)

    try:
        exp = load_experiment(Path(file), overrides)
        (run, run_jobs), = [(r, j) for r, j in plan(exp, output_dir, jobs, device)
                            if r.variant == variant and r.seed == seed]
        run.log = log
        check_run_dir(run)
        log(f"{run.experiment}/{run.label} on {run.device}: {', '.join(run_jobs)}")
        execute_run(exp, run, run_jobs, log)
    except (UserError, OSError) as exc:
        print(f"[{tag}] {render_error(exc)}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
