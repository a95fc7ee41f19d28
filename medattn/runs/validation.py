"""``medattn validate``: everything short of training, every problem at once, nothing written.

Per run: the device, the run directory (identity), the data set (root, files, classes and per-class counts; a
split with one class is an error; a loss term that needs masks on a data set without them), the model (weights, components that fail to build), the explainer layers,
and the files the chosen jobs need. Each problem is ``FILE:LINE:COL dotted.path: message``.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from ..config import Experiment
from ..errors import UserError, user_message
from ..store.identity import check_run_dir
from .plan import check_prerequisites, job, plan


def validate_runs(exp: Experiment, output_dir: str | None = None,
                  device: str | None = None) -> tuple[list[str], list[str]]:
    """(a line per valid run, every problem found)."""
    marks = {v.name: v.config for v in exp.variants}
    lines: list[str] = []
    problems: list[str] = []
    runs = plan(exp, output_dir=output_dir, device=device, writes=False)
    for run, jobs in runs:
        where = _where(marks[run.variant], run.label if len(runs) > 1 else "")
        found = _check_run(run, jobs, exp, where)
        if isinstance(found, str):
            lines.append(found)
        else:
            problems.extend(found)
    return lines, list(dict.fromkeys(problems))


def _where(marked: Any, label: str):
    def at(path: tuple, message: str) -> str:
        mark = marked.mark(path) if path else None
        dotted = ".".join(map(str, path))
        named = dotted and not message.startswith((f"{dotted}.", f"{dotted}:"))  # the message names its field
        return " ".join(x for x in (str(mark) if mark else "", f"{dotted}:" if named else "", message,
                                    f"[run {label}]" if label else "") if x)
    return at


def _check_run(run, jobs: list[str], exp: Experiment, at) -> str | list[str]:
    problems: list[str] = []
    try:
        device = run.device
    except UserError as exc:
        problems.append(at(("device",), user_message(exc)))
        device = None
    try:
        state = check_run_dir(run)
    except UserError as exc:
        problems.append(at((), user_message(exc)))
        state = "?"
    try:
        check_prerequisites([(run, jobs)], exp.registry)
    except UserError as exc:
        problems.append(at(("jobs",), user_message(exc)))
    try:
        bundle, splits = run.data()
    except UserError as exc:  # the data set, or the backbone it is built for: tell them apart, report both
        model_problem = _model_problem(run)
        if model_problem:
            problems.append(at(("model",), model_problem))
        if user_message(exc) != model_problem:
            problems.append(at(("dataset",), user_message(exc)))
        return problems
    counts, class_problems = _class_counts(bundle, splits)
    problems.extend(at(("dataset",), p) for p in class_problems)
    for name in jobs:
        problems.extend(at(path, message) for path, message in job(exp.registry, name).check_data(run.config, bundle,
                                                                                                   splits))
    try:
        model = run.new_model()
    except UserError as exc:
        return [*problems, at(("model",), user_message(exc))]
    for name in jobs:
        problems.extend(at(path, message) for path, message in job(exp.registry, name).check_model(run.config, model))
    if problems:
        return problems
    params = sum(p.numel() for p in model.parameters())
    return (f"ok {run.label}: device {device}; classes {', '.join(bundle.class_names)}; {counts}; "
            f"model {params / 1e6:.2f}M parameters; jobs {', '.join(jobs)}; run dir {state}")


def _model_problem(run) -> str | None:
    """The message of a model that cannot be built (weights, a component that fails), checked without the data
    set (two placeholder classes): when the data set fails, was the model the cause too?"""
    from ..components.model import build_model
    from .state import seed_everything

    seed_everything(run.config["seed"])
    try:
        build_model(run.registry, run.config, ["class0", "class1"])
    except UserError as exc:
        return user_message(exc)
    return None


def _class_counts(bundle, splits) -> tuple[str, list[str]]:
    """'train 40 (normal 20, effusion 20); ...' and the problems (a split with a single class)."""
    from ..train.engine import split_labels

    names = list(bundle.class_names)
    parts, problems = [], []
    if len(names) < 2:
        problems.append(f"the data set has {len(names)} class(es) ({', '.join(names) or 'none'}); a classifier "
                        "needs at least 2 (is the root one level too deep?)")
    main = ("train", "val", "test")
    for split in [*main, *(s for s in splits if s not in main)]:  # then the extra splits (calibration, shifted ...)
        counts = Counter(split_labels(splits[split]))
        shown = ", ".join(f"{names[k] if k < len(names) else k} {counts[k]}" for k in sorted(counts))
        parts.append(f"{split} {sum(counts.values())} ({shown})")
        if split not in main:
            continue
        if len(names) >= 2 and len(counts) < 2 and sum(counts.values()) > 0:
            problems.append(f"the {split} split holds a single class ({shown}); every split needs at least 2")
        if sum(counts.values()) == 0:
            problems.append(f"the {split} split is empty")
    return "; ".join(parts), problems
