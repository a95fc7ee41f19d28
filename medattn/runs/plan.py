"""Planning: experiment -> one :class:`Plan`, decided and checked before any work.

The plan holds the runs (one per matrix variant, and per seed with ``seeds:``) with the jobs of this command,
the runs this process works on (``--shard``), the jobs each has left (a job done for the same config is
skipped unless ``--force``d), the grid's device slots and phases, and the run directories to lock. Building
it checks job names and configs, that every artifact a job reads exists or is written by an earlier job,
and that a shard is not asked to wait for the others. The runner executes it and asks nothing again.
"""
from __future__ import annotations

import copy
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from ..config import Experiment
from ..errors import UserError
from ..jobs.base import Job
from ..registry import Registry
from ..store.identity import check_run_dir
from ..store.rundir import ExperimentDir, RunDir
from .state import Run

Todo = list[tuple[Run, list[str]]]


@dataclass
class Plan:
    """What one command will do. Iterating or indexing a plan goes over :attr:`runs`."""

    experiment: Experiment
    runs: Todo                       # every run of the experiment, with the jobs this command names
    chosen: Todo                     # the runs of this process (all, or one ``--shard``)
    todo: Todo                       # the chosen runs with jobs left, and those jobs, in order
    slots: list[str] | None = None   # ``--devices``: one process per slot
    shard: str | None = None
    phases: tuple[Todo, Todo] = ([], [])  # the jobs before the first that reads other runs; that job on
    why: str | None = None           # why the second phase waits (the job's reason)
    locks: list[RunDir] = field(default_factory=list)  # run directories this process holds while it runs
    output_dir: str | None = None    # ``--output-dir`` as given (a grid's processes are started with it)

    def __iter__(self) -> Iterator[tuple[Run, list[str]]]:
        return iter(self.runs)

    def __getitem__(self, i: int) -> tuple[Run, list[str]]:
        return self.runs[i]

    def __len__(self) -> int:
        return len(self.runs)


def jobs_of(todo: Todo) -> list[str]:
    """The jobs that some run of ``todo`` has, each once, in order."""
    return list(dict.fromkeys(j for _, run_jobs in todo for j in run_jobs))


@cache  # one instance per registry and name
def job(registry: Registry, name: str) -> Job:
    """The job component ``name`` (its factory, given the registry, returns a Job)."""
    return registry.factory("job", name)(registry)


def plan(exp: Experiment, output_dir: str | None = None, jobs: list[str] | None = None,
         device: str | None = None, writes: bool = True, *, shard: str | None = None,
         devices: str | None = None, force: list[str] | None = None,
         log: Callable[[str], None] = print) -> Plan:
    """The plan of one command. With ``writes=False`` (validate, ``--print-config``) it only lists the runs
    and their jobs; otherwise it also checks every run directory and device, finds the jobs left, checks their
    prerequisites and the shard's phases, and names the locks, all before anything is written."""
    from ..distributed import is_main
    from .grid import parse_devices, parse_shard, shard_of

    runs = runs_of(exp, output_dir, jobs, device, writes)
    if not writes:
        return Plan(exp, runs, runs, runs, output_dir=output_dir)
    check_force(force or [], runs)
    chosen = shard_of(runs, *parse_shard(shard)) if shard else list(runs)
    slots = parse_devices(devices) if devices else None
    todo = pending(chosen, force or [], bool(slots), log)
    check_prerequisites(todo, exp.registry)
    first, second, why = phases(exp.registry, todo)
    if shard and first and second:
        refuse_shard(exp, runs, shard, output_dir, device, why)
    locks = [r.dir for r, _ in todo] if is_main() and not slots else []
    return Plan(exp, runs, chosen, todo, slots, shard, (first, second), why, locks, output_dir)


def runs_of(exp: Experiment, output_dir: str | None = None, jobs: list[str] | None = None,
            device: str | None = None, writes: bool = True) -> Todo:
    """The runs of an experiment and the jobs each will run, with job names and configs checked."""
    out = []
    known = exp.registry.names("job")
    problems: list[str] = []
    for variant in exp.variants:
        cfg = variant.config.data
        run_jobs = list(jobs or cfg["jobs"])
        unknown = [j for j in run_jobs if j not in known]
        if unknown:
            raise UserError(f"--jobs: unknown job(s) {', '.join(unknown)}; known: {', '.join(known)}")
        for name in run_jobs:
            problems.extend(_check_line(variant, p, len(exp.variants) > 1) for p in job(exp.registry, name).check(cfg))
        base = Path(output_dir or cfg["output_dir"])
        folder = ExperimentDir(base / exp.name)
        for seed in cfg.get("seeds") or [None]:
            config = cfg if seed is None else {**copy.deepcopy({k: v for k, v in cfg.items() if k != "seeds"}),
                                               "seed": seed}
            run = Run(exp.name, variant.name, config, folder.run(variant.name, seed), exp.registry,
                      device or cfg["device"], seed, writes=writes, cache_dir=base / ".cache",
                      choices=dict(variant.choices))
            out.append((run, run_jobs))
    problems.extend(compare_problems(exp.variants[0].config.data, [v.name for v in exp.variants]))
    if problems:
        raise UserError("\n".join(dict.fromkeys(problems)))
    return out


def _check_line(variant, problem: str | tuple[tuple, str], several: bool) -> str:
    """A job's config problem as a line: ``VARIANT: dotted.path: message``, or for a (path, message) pair
    ``FILE:LINE:COL dotted.path: message`` with the variant named when the experiment has several."""
    if isinstance(problem, str):
        return f"{variant.name}: {problem}"
    path, message = problem
    mark = variant.config.mark(path)
    head = " ".join(x for x in (str(mark) if mark else "", f"{'.'.join(map(str, path))}:") if x)
    return f"{head} {message}" + (f" [variant {variant.name}]" if several else "")


def compare_problems(config: dict, variants: list[str]) -> list[str]:
    """``compare:`` names variants and a checkpoint the schema cannot know: check them before any training."""
    from ..evidence.metric_specs import metric_subgroup

    spec = config.get("compare")
    if not spec:
        return []
    ref, problems = spec["reference"], []
    named = ref.items() if isinstance(ref, dict) else [] if ref in (None, "none") else [(ref, ref)]
    for name in dict.fromkeys(n for pair in named for n in pair):
        if name not in variants:
            problems.append(f"compare.reference: {name!r} is not a variant of this experiment "
                            f"(variants: {', '.join(variants)}; none: each against its variant without attention)")
    for name in spec["metrics"]:
        column = (metric_subgroup(name) or (None, None))[0]
        if column is not None and column not in config["test"]["subgroups"]:
            problems.append(f"compare.metrics: {name!r} compares the images whose {column} is a value, but "
                            f"test.subgroups does not list {column!r} (listed: "
                            f"{', '.join(config['test']['subgroups']) or 'none'}): add it there so the test job "
                            "writes it into the predictions")
    checkpoint = spec["checkpoint"]
    if checkpoint is not None and checkpoint not in config["test"]["checkpoints"]:
        problems.append(f"compare.checkpoint: {checkpoint!r} is not tested (test.checkpoints: "
                        f"{', '.join(config['test']['checkpoints'])})")
    return problems


def check_prerequisites(runs: list[tuple[Run, list[str]]], registry: Registry) -> None:
    """Every artifact a job reads is on disk or written by an earlier job of the command; else one error
    naming, for each run, the missing file and the job that writes it."""
    problems = []
    for run, run_jobs in runs:
        produced: set[str] = set()
        for name in run_jobs:
            this = job(registry, name)
            for artifact, files in this.needs(run.dir, run.config).items():
                missing = [f for f in files if not Path(f).exists()]
                if artifact in produced or not missing:
                    continue
                makers = [n for n in registry.names("job") if artifact in job(registry, n).writes]
                hint = f"; run the {' or '.join(makers)} job first" if makers else ""
                problems.append(f"{run.label}: the {name} job needs {missing[0]} ({artifact}){hint}")
            produced.update(this.writes)
    if problems:
        raise UserError("cannot start:\n  " + "\n  ".join(dict.fromkeys(problems)))


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


def phases(registry: Registry, todo: Todo) -> tuple[Todo, Todo, str | None]:
    """(the jobs before the first job that reads other runs, that job and those after it, its reason)."""
    first: Todo = []
    second: Todo = []
    why = None
    for run, run_jobs in todo:
        cut = len(run_jobs)
        for i, name in enumerate(run_jobs):
            reason = job(registry, name).reads_other_runs(run.config)
            if reason:
                cut, why = i, reason
                break
        if run_jobs[:cut]:
            first.append((run, run_jobs[:cut]))
        if run_jobs[cut:]:
            second.append((run, run_jobs[cut:]))
    return first, second, why


def refuse_shard(exp: Experiment, runs: Todo, shard: str, output_dir: str | None, device: str | None,
                 why: str | None) -> None:
    """A shard cannot wait for the others: a job that reads other runs is refused, before any work, when
    jobs before it are still to run, with the two commands that run the grid in phases."""
    every = phases(exp.registry, runs)
    head, tail = jobs_of(every[0]), jobs_of(every[1])
    n = shard.split("/")[1]
    base = ["medattn", "run", str(exp.path)] + [a for o in exp.overrides for a in ("--set", o)]
    base += ["--output-dir", output_dir] if output_dir else []
    base += ["--device", device] if device else []
    one = shlex.join(base + ["--jobs", ",".join(head), "--shard", f"I/{n}"])
    two = shlex.join(base + ["--jobs", ",".join(tail)])
    raise UserError(f"--shard: {why}, so a sharded grid runs in two phases (a shard cannot wait for the "
                    f"others):\n  1. {one}   (every shard, I = 0..{int(n) - 1}, e.g. $SLURM_ARRAY_TASK_ID/{n})"
                    f"\n  2. {two}   (once, after every shard has finished)")
