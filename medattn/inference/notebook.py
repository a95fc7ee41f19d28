"""Running experiments from Python (a notebook): ``medattn.run``, which plans and runs an experiment file, or a
dict holding one, through the runner, and returns the summary rows and the runs, each loadable as a
:class:`medattn.inference.predictor.Predictor`::

    import medattn
    done = medattn.run("experiments/demo.yaml", train__epochs=2)
    done.summary[0]["roc_auc"], done.runs
    p = done.load()                                    # the Predictor of the only run (or load("variant"))
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..store.rundir import ExperimentDir, RunDir
from .predictor import Predictor, load_run, run_label


@dataclass
class Finished:
    """What :func:`run_experiment_file` returns: the summary rows (one per run and tested checkpoint) and the
    run directories (absolute paths); ``load(variant)`` gives a run's :class:`Predictor`."""

    summary: list[dict[str, Any]]
    runs: list[RunDir]

    def load(self, variant: str | None = None, checkpoint: str = "best_val_loss", device: str = "cpu", *,
             allow_changed_plugins: bool = False) -> Predictor:
        """The predictor of a run (``variant``, or ``variant/seed-N``; None when there is one run)."""
        labels = {run_label(r): r for r in self.runs}
        if variant is None and len(labels) == 1:
            variant = next(iter(labels))
        if variant not in labels:
            raise UserError(f"variant {variant!r}: expected one of {', '.join(labels) or '(no runs)'}")
        return load_run(labels[variant].root, checkpoint, device, allow_changed_plugins=allow_changed_plugins)


def run_experiment_file(source: str | Path | dict, *, output_dir: str | None = None, jobs: list[str] | None = None,
                        device: str | None = None, log: Callable[[str], None] = print, **overrides: Any) -> Finished:
    """``medattn.run``: run an experiment file, or a dict holding one, from Python (a notebook).

    Keyword arguments override config values, nested keys joined by ``__``:
    ``medattn.run("exp.yaml", train__epochs=3)`` does what ``medattn run exp.yaml --set train.epochs=3`` does.
    A dict's relative paths are taken from the current folder.
    """
    import os
    import tempfile

    import yaml

    from ..config import load_experiment
    from ..runs.runner import run_experiment

    sets = [f"{key.replace('__', '.')}={json.dumps(value, default=str)}" for key, value in overrides.items()]
    temp = None
    if isinstance(source, dict):
        fd, temp = tempfile.mkstemp(prefix=".medattn-", suffix=".yaml", dir=".")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yaml.safe_dump(source, fh, sort_keys=False)
    try:
        exp = load_experiment(temp or source, sets)
    finally:
        if temp:
            os.unlink(temp)
    rows = run_experiment(exp, output_dir=output_dir, jobs=jobs, device=device, log=log)
    base = Path(output_dir or exp.variants[0].config.data.get("output_dir", "runs")).absolute()
    names = {v.name for v in exp.variants}
    runs = [r for r in ExperimentDir(base / exp.name).runs() if run_label(r).split("/")[0] in names]
    return Finished(rows, runs)
