"""Planning: experiment -> runs (one per matrix variant, and per seed with ``seeds:``) -> jobs, all checked
before any work: job names, job configs, and that every artifact a job reads exists or is written by an
earlier job of the same command."""
from __future__ import annotations

import copy
from functools import cache
from pathlib import Path

from .config import Experiment
from .errors import UserError
from .jobs.base import Job
from .registry import Registry
from .run_state import Run
from .rundir import ExperimentDir


@cache  # one instance per registry and name
def job(registry: Registry, name: str) -> Job:
    """The job component ``name`` (its factory, given the registry, returns a Job)."""
    return registry.factory("job", name)(registry)


def plan(exp: Experiment, output_dir: str | None = None, jobs: list[str] | None = None,
         device: str | None = None, writes: bool = True) -> list[tuple[Run, list[str]]]:
    """The runs of an experiment and the jobs each will run, checked before anything is written."""
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
    spec = config.get("compare")
    if not spec:
        return []
    ref, problems = spec["reference"], []
    named = ref.items() if isinstance(ref, dict) else [] if ref in (None, "none") else [(ref, ref)]
    for name in dict.fromkeys(n for pair in named for n in pair):
        if name not in variants:
            problems.append(f"compare.reference: {name!r} is not a variant of this experiment "
                            f"(variants: {', '.join(variants)}; none: each against its variant without attention)")
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
