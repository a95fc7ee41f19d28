"""What a sweep found: the status table of its studies (``--status``), and the experiment file that runs each
variant's best params over seeds with paired comparisons (``--finalize``)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from ..config import Experiment
from ..errors import UserError
from ..files import atomic_write_text, format_table
from ..jobs.figure import default_kinds
from ..registry import is_file_spec
from .study import (
    FINISHED,
    REPEAT_OF,
    counted_failures,
    failure_reason,
    is_stopped,
    open_studies,
    sweep_spec,
)


def _shown(value: Any) -> Any:
    return f"{value:.4g}" if isinstance(value, float) else value


def status_rows(exp: Experiment, output_dir: str | None = None, storage: str | None = None) -> list[dict]:
    """One row per variant: trials done (complete; ``repeats`` of them reused a finished twin's result), pruned,
    failed, running and waiting, the best value and params, the last failure's reason (``STOPPED`` first when the
    variant is at its failure limit), and ``stopped`` (that, as a boolean; :func:`status_text` leaves it out)."""
    from optuna.trial import TrialState

    rows = []
    for vs in open_studies(exp, output_dir, storage):
        trials = vs.study.get_trials(deepcopy=False)
        n = Counter(t.state for t in trials)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        best = vs.study.best_trial if complete else None
        failed = [t for t in trials if t.state == TrialState.FAIL]
        stopped = is_stopped(vs, trials)
        last = f"trial {failed[-1].number}: {failure_reason(failed[-1])}" if failed else ""
        if stopped:
            last = f"STOPPED ({len(counted_failures(vs.study, trials))} failed) {last}"
        rows.append({"variant": vs.name, "done": n[TrialState.COMPLETE],
                     "repeats": sum(REPEAT_OF in t.user_attrs for t in trials if t.state in FINISHED),
                     "pruned": n[TrialState.PRUNED], "failed": n[TrialState.FAIL], "running": n[TrialState.RUNNING],
                     "waiting": n[TrialState.WAITING], "of": vs.spec["trials"],
                     "best": best.value if best else "",
                     "best params": ", ".join(f"{k}={_shown(v)}" for k, v in best.params.items()) if best else "",
                     "best trial": best.number if best else "",
                     "last failure": last if len(last) <= 100 else last[:97] + "...", "stopped": stopped})
    return rows


def stopped_variants(rows: list[dict]) -> list[str]:
    """The variants of :func:`status_rows` that stopped at their failure limit."""
    return [r["variant"] for r in rows if r["stopped"]]


def status_text(exp: Experiment, output_dir: str | None = None, storage: str | None = None,
                rows: list[dict] | None = None) -> str:
    spec = sweep_spec(exp)
    rows = rows if rows is not None else status_rows(exp, output_dir, storage)
    finished = sum(r["done"] + r["pruned"] >= r["of"] for r in rows)
    head = (f"{exp.name}: sweep of {spec['objective']['metric']} ({spec['objective']['epoch']} epoch), "
            f"{spec['trials']} trials per variant; {finished} of {len(rows)} variant(s) finished")
    hidden = {"stopped"} if any(r["last failure"] for r in rows) else {"stopped", "last failure"}
    return head + "\n" + format_table([{k: v for k, v in r.items() if k not in hidden} for r in rows])


def best_params(exp: Experiment, output_dir: str | None = None, storage: str | None = None) -> dict[str, dict]:
    """variant -> the params of its best complete trial; every study must have finished its trials."""
    from optuna.trial import TrialState

    out, problems = {}, []
    for vs in open_studies(exp, output_dir, storage):
        trials = vs.study.get_trials(deepcopy=False)
        finished = sum(t.state in FINISHED for t in trials)
        if not any(t.state == TrialState.COMPLETE for t in trials):
            problems.append(f"{vs.name}: no complete trial yet")
        elif finished < vs.spec["trials"]:
            problems.append(f"{vs.name}: {finished} of {vs.spec['trials']} trials finished")
        else:
            out[vs.name] = dict(vs.study.best_params)
    if problems:
        raise UserError("--finalize: the sweep is not finished (" + "; ".join(problems) + "); run medattn sweep "
                        f"{exp.path} to finish it")
    return out


def rebased(path: str, old_dir: Path, new_dir: Path) -> str:
    """A path written relative to ``old_dir``, rewritten relative to ``new_dir`` (absolute ones stay)."""
    import os

    if os.path.isabs(path):
        return path
    target = os.path.abspath(old_dir / path)
    try:
        return Path(os.path.relpath(target, os.path.abspath(new_dir))).as_posix()
    except ValueError:  # another drive (Windows): no relative path exists
        return target


def figure_kinds(exp: Experiment, storage: str | None) -> list | None:
    """The tuned file's figure.kinds: the file's own with ``sweep`` and ``report`` added, or None (every kind, the
    default) when the file lists none and the studies are the journals the sweep kind finds by itself."""
    first = exp.variants[0].config.data
    kinds = [k if isinstance(k, dict) else {"name": k} for k in first["figure"]["kinds"]]
    if not kinds and not storage:
        return None
    if not kinds:  # every kind the default would draw, listed, so that the sweep kind can be given the storage
        kinds = [{"name": n} for n in default_kinds(exp.registry)]
    for name in ("sweep", "report"):
        if not any(k["name"] == name for k in kinds):
            kinds.append({"name": name})
    if storage:
        kinds = [{"name": "sweep", "params": {**k.get("params", {}), "storage": storage}} if k["name"] == "sweep"
                 else k for k in kinds]
    return kinds


def finalized(exp: Experiment, best: dict[str, dict], folder: Path | None = None, storage: str | None = None) -> dict:
    """The experiment file's own keys (``extends`` kept, ``--set`` applied) without ``sweep`` and ``matrix``, with
    ``seeds``, ``compare``, the test and figure jobs (the sweep's figures in the report), and a matrix bundle that
    gives each variant its choices and best params. Written into ``folder`` (default: the file's own), ``extends``
    and the plugin files are rebased so that the file loads there."""
    from ..config.compose import apply_overrides
    from ..config.yaml_marks import load_yaml

    raw = load_yaml(exp.path, str(exp.path))
    apply_overrides(raw, list(exp.overrides))
    data = {k: v for k, v in raw.data.items() if k not in ("sweep", "matrix")}
    first = exp.variants[0].config.data
    here = exp.path.parent
    there = folder if folder is not None else here
    if Path(there).resolve() != here.resolve():
        if isinstance(data.get("extends"), str):
            data["extends"] = rebased(data["extends"], here, there)
        elif isinstance(data.get("extends"), list):
            data["extends"] = [rebased(p, here, there) for p in data["extends"]]
        if first.get("plugins"):  # the merged list: a parent's plugin files load relative to this file too
            data["plugins"] = [rebased(p, here, there) if is_file_spec(p) else p for p in first["plugins"]]
    data["seeds"] = first.get("seeds") or [first["seed"] + i for i in range(3)]
    dataset = data.get("dataset") or {}
    data["dataset"] = {"name": dataset} if isinstance(dataset, str) else dataset
    if data["dataset"].get("seed") is None:  # one test set for every seed: comparisons paired image by image
        data["dataset"]["seed"] = first["dataset"]["seed"] if first["dataset"]["seed"] is not None else first["seed"]
    data["compare"] = first.get("compare") or {"reference": None}
    jobs = list(first["jobs"])
    jobs = jobs if "test" in jobs else jobs[:1] + ["test"] + jobs[1:]
    data["jobs"] = jobs if "figure" in jobs else jobs + ["figure"]
    kinds = figure_kinds(exp, storage)
    if kinds is not None:
        data["figure"] = {**(data.get("figure") or {}), "kinds": kinds}
    data["matrix"] = {"tuned": {v.name: {**v.choices, **best[v.name]} for v in exp.variants}}
    return data


def write_finalized(exp: Experiment, output: Path | None = None, output_dir: str | None = None,
                    storage: str | None = None) -> Path:
    """Write the tuned experiment beside the sweep's file (``FILE-tuned.yaml``, FILE's stem), or to ``output``,
    and return its path."""
    import yaml

    spec = sweep_spec(exp)
    path = Path(output) if output else exp.path.with_name(f"{exp.path.stem}-tuned.yaml")
    if path.resolve() == exp.path.resolve():
        raise UserError(f"--output {path}: that is the sweep's own file; choose another name")
    data = finalized(exp, best_params(exp, output_dir, storage), path.parent, storage)
    head = (f"# written by medattn sweep --finalize from {exp.path.name}: each variant's best params after "
            f"{spec['trials']} trials ({spec['objective']['metric']}),\n# run over seeds with paired comparisons. "
            f"Runs go beside the sweep: OUTPUT_DIR/{exp.name}/VARIANT/seed-N/\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, head + yaml.safe_dump(data, sort_keys=False))
    return path
