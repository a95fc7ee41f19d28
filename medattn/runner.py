"""The runner: plan the runs, check them all before any work, run the jobs, then summarise.

Jobs run job by job across the runs (every variant is tested before any is explained, so ``select: agreed``
works in one command). Grids spread runs over devices (``--devices``) or take one slice of them
(``--shard I/N``). A job already done for the same config (``jobs_done.json``) is skipped, and so are the
runs with nothing left to do; ``--force JOB`` runs a job again. One process works in a run directory at a
time (:mod:`medattn.run_lock`).
"""
from __future__ import annotations

import shlex
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

Todo = list[tuple[Run, list[str]]]


def run_experiment(exp: Experiment, output_dir: str | None = None, jobs: list[str] | None = None,
                   device: str | None = None, log: Callable[[str], None] = print, devices: str | None = None,
                   shard: str | None = None, force: list[str] | None = None) -> list[dict]:
    """Plan, check every run (directory, device, prerequisites, locks) before any work, run the jobs that
    are not done, summarise; returns the rows of the summary table."""
    from .distributed import is_main
    from .grid import parse_devices, parse_shard, shard_of
    from .run_lock import locked_runs

    runs = plan(exp, output_dir, jobs, device)
    check_force(force or [], runs)
    chosen = shard_of(runs, *parse_shard(shard)) if shard else list(runs)
    slots = parse_devices(devices) if devices else None
    todo = pending(chosen, force or [], bool(slots), log)
    check_prerequisites(todo, exp.registry)
    if shard:
        check_shard_phases(exp, runs, todo, shard, output_dir)
    if shard or slots:
        log(f"== {'shard ' + shard + ': ' if shard else ''}{len(chosen)} of {len(runs)} run(s), "
            f"{len(todo)} to run" + (f" over {', '.join(slots)}" if slots else ""))
    t0 = time.time()
    if slots:
        run_grid(exp, todo, slots, output_dir, log)
    else:
        with locked_runs([r.dir for r, _ in todo] if is_main() else []):
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


def check_force(force: list[str], runs: Todo) -> None:
    """Every ``--force`` name is a job of this command (or ``all``)."""
    named = jobs_of(runs)
    bad = [f for f in force if f != "all" and f not in named]
    if bad:
        raise UserError(f"--force {','.join(bad)}: not a job of this command (jobs: {', '.join(named)}; "
                        f"all: every one)")


def pending(chosen: Todo, force: list[str], grid: bool, log: Callable[[str], None]) -> Todo:
    """The runs with jobs left to do and those jobs (checking each run directory and device on the way)."""
    from .grid import pending_jobs

    todo = []
    for run, run_jobs in chosen:  # every check first: a bad device or a foreign run dir stops before any work
        run.log = log
        if check_run_dir(run) == "replaced":
            log(f"== {run.label}: the run directory held another run without checkpoints; replacing it")
        if not grid:
            _ = run.device
        left = pending_jobs(run, run_jobs, force)
        done = [j for j in run_jobs if j not in left]
        if not left:
            log(f"== {run.experiment}/{run.label}: complete ({', '.join(run_jobs)} done for this config); "
                f"skipped (--force JOB runs a job again)")
            continue
        if done:
            log(f"== {run.experiment}/{run.label}: {', '.join(done)} already done for this config; skipped")
        todo.append((run, left))
    return todo


def phases(exp: Experiment, todo: Todo) -> tuple[Todo, Todo, str | None]:
    """(the jobs before the first job that reads other runs, that job and those after it, its reason)."""
    first: Todo = []
    second: Todo = []
    why = None
    for run, run_jobs in todo:
        cut = len(run_jobs)
        for i, name in enumerate(run_jobs):
            reason = job(exp.registry, name).reads_other_runs(run.config)
            if reason:
                cut, why = i, reason
                break
        if run_jobs[:cut]:
            first.append((run, run_jobs[:cut]))
        if run_jobs[cut:]:
            second.append((run, run_jobs[cut:]))
    return first, second, why


def check_shard_phases(exp: Experiment, runs: Todo, todo: Todo, shard: str, output_dir: str | None) -> None:
    """A shard cannot wait for the others: a job that reads other runs is refused, before any work, when
    jobs before it are still to run, with the two commands that run the grid in phases."""
    first, second, why = phases(exp, todo)
    if not (first and second):
        return
    every = phases(exp, runs)
    head, tail = jobs_of(every[0]), jobs_of(every[1])
    n = shard.split("/")[1]
    base = ["medattn", "run", str(exp.path)] + [a for o in exp.overrides for a in ("--set", o)]
    base += ["--output-dir", output_dir] if output_dir else []
    one = shlex.join(base + ["--jobs", ",".join(head), "--shard", f"I/{n}"])
    two = shlex.join(base + ["--jobs", ",".join(tail)])
    raise UserError(f"--shard: {why}, so a sharded grid runs in two phases (a shard cannot wait for the "
                    f"others):\n  1. {one}   (every shard, I = 0..{int(n) - 1}, e.g. $SLURM_ARRAY_TASK_ID/{n})"
                    f"\n  2. {two}   (once, after every shard has finished)")


def jobs_of(todo: Todo) -> list[str]:
    return list(dict.fromkeys(j for _, run_jobs in todo for j in run_jobs))


def run_grid(exp: Experiment, todo: Todo, slots: list[str], output_dir: str | None,
             log: Callable[[str], None]) -> None:
    """Runs in parallel over device slots, one process each; a job that reads other runs waits, in a second
    phase, until every run has finished the jobs before it."""
    from .grid import run_parallel
    from .run_lock import check_unlocked

    for run, _ in todo:  # a run held by another process stops the grid before any work
        check_unlocked(run.dir)
    first, second, why = phases(exp, todo)
    for n, phase in enumerate(p for p in (first, second) if p):
        if n and first:
            log(f"== second phase ({why}): {', '.join(jobs_of(phase))}")
        failed = run_parallel([(r.variant, r.seed, run_jobs) for r, run_jobs in phase], slots, parallel_worker,
                              (str(exp.path), list(exp.overrides), output_dir), log)
        if failed:
            raise UserError("run(s) failed: " + "; ".join(f"{v} (exit {c})" for v, c in failed))


def run_in_order(exp: Experiment, todo: Todo, log: Callable[[str], None]) -> None:
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
    """One job of one run, recorded in jobs_done.json when it finishes (a re-run skips it)."""
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


def parallel_worker(file: str, overrides: list[str], output_dir: str | None, device: str, variant: str,
                    seed: int | None, run_jobs: list[str]) -> None:
    """Entry point of one run's process in a grid: load the experiment, run ``run_jobs`` of that run on
    ``device``, holding the run directory's lock."""
    import sys

    from .config import load_experiment
    from .errors import EXIT_BAD_INPUT, render_error
    from .run_lock import locked_runs

    tag = variant if seed is None else f"{variant}/seed-{seed}"

    def log(msg: str) -> None:
        print(f"[{tag}@{device}] {msg}", flush=True)

    try:
        exp = load_experiment(Path(file), overrides)
        (run, _), = [(r, j) for r, j in plan(exp, output_dir, run_jobs, device)
                     if r.variant == variant and r.seed == seed]
        run.log = log
        check_run_dir(run)
        with locked_runs([run.dir]):
            log(f"{run.experiment}/{run.label} on {run.device}: {', '.join(run_jobs)}")
            execute_run(exp, run, run_jobs, log)
    except (UserError, OSError) as exc:
        print(f"[{tag}] {render_error(exc)}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
