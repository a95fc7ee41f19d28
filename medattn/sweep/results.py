"""What a sweep found: the status table of its studies (``--status``), and the experiment file that runs each
variant's best params over seeds with paired comparisons (``--finalize``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import Experiment
from ..errors import UserError
from ..files import atomic_write_text, format_table
from .study import FINISHED, counts, open_studies, sweep_spec


def _shown(value: Any) -> Any:
    return f"{value:.4g}" if isinstance(value, float) else value


def status_rows(exp: Experiment, output_dir: str | None = None, storage: str | None = None) -> list[dict]:
    """One row per variant: trials done, pruned, failed, running and waiting, the best value and params."""
    from optuna.trial import TrialState

    rows = []
    for vs in open_studies(exp, output_dir, storage):
        n = counts(vs.study)
        complete = [t for t in vs.study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        best = vs.study.best_trial if complete else None
        rows.append({"variant": vs.name, "done": n[TrialState.COMPLETE], "pruned": n[TrialState.PRUNED],
                     "failed": n[TrialState.FAIL], "running": n[TrialState.RUNNING],
                     "waiting": n[TrialState.WAITING], "of": vs.spec["trials"],
                     "best": best.value if best else "",
                     "best params": ", ".join(f"{k}={_shown(v)}" for k, v in best.params.items()) if best else "",
                     "best trial": best.number if best else ""})
    return rows


def status_text(exp: Experiment, output_dir: str | None = None, storage: str | None = None) -> str:
    spec = sweep_spec(exp)
    rows = status_rows(exp, output_dir, storage)
    finished = sum(r["done"] + r["pruned"] >= r["of"] for r in rows)
    head = (f"{exp.name}: sweep of {spec['objective']['metric']} ({spec['objective']['epoch']} epoch), "
            f"{spec['trials']} trials per variant; {finished} of {len(rows)} variant(s) finished")
    return head + "\n" + format_table(rows)


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


def finalized(exp: Experiment, best: dict[str, dict]) -> dict:
    """The experiment file's own keys (``extends`` kept, ``--set`` applied) without ``sweep`` and ``matrix``, with
    ``seeds``, ``compare`` and a matrix bundle that gives each variant its choices and best params."""
    from ..config.compose import apply_overrides
    from ..config.yaml_marks import load_yaml

    raw = load_yaml(exp.path, str(exp.path))
    apply_overrides(raw, list(exp.overrides))
    data = {k: v for k, v in raw.data.items() if k not in ("sweep", "matrix")}
    first = exp.variants[0].config.data
    data["seeds"] = first.get("seeds") or [first["seed"] + i for i in range(3)]
    dataset = data.get("dataset") or {}
    data["dataset"] = {"name": dataset} if isinstance(dataset, str) else dataset
    if data["dataset"].get("seed") is None:  # one test set for every seed: comparisons paired image by image
        data["dataset"]["seed"] = first["dataset"]["seed"] if first["dataset"]["seed"] is not None else first["seed"]
    data["compare"] = first.get("compare") or {"reference": None}
    jobs = list(first["jobs"])
    data["jobs"] = jobs if "test" in jobs else jobs[:1] + ["test"] + jobs[1:]
    data["matrix"] = {"tuned": {v.name: {**v.choices, **best[v.name]} for v in exp.variants}}
    return data


def write_finalized(exp: Experiment, output: Path | None = None, output_dir: str | None = None,
                    storage: str | None = None) -> Path:
    """Write the tuned experiment next to the sweep's file (``NAME-tuned.yaml``, or ``output``) and return it."""
    import yaml

    spec = sweep_spec(exp)
    data = finalized(exp, best_params(exp, output_dir, storage))
    path = Path(output) if output else exp.path.with_name(f"{exp.path.stem}-tuned.yaml")
    if path.resolve() == exp.path.resolve():
        raise UserError(f"--output {path}: that is the sweep's own file; choose another name")
    head = (f"# written by medattn sweep --finalize from {exp.path.name}: each variant's best params after "
            f"{spec['trials']} trials ({spec['objective']['metric']}),\n# run over seeds with paired comparisons. "
            f"Runs go beside the sweep: OUTPUT_DIR/{exp.name}/VARIANT/seed-N/\n")
    atomic_write_text(path, head + yaml.safe_dump(data, sort_keys=False))
    return path
