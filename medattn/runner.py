"""The runner: experiment -> plan (one run per matrix variant) -> jobs in order, each in its run directory.

Run directory: ``OUTPUT_DIR/EXPERIMENT/VARIANT/`` with ``config.yaml`` (the resolved config),
``manifest.json``, ``checkpoints/``, ``metrics/``, ``explanations/``, ``figures/``. A job reads what earlier
jobs wrote, so ``--jobs explain,figure`` works on an existing run without retraining.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import Experiment
from .errors import UserError
from .registry import Registry

# The keys that decide what a trained model is: a run directory with different values is another run.
IDENTITY_KEYS = ("seed", "dataset", "model", "train")


@dataclass
class Run:
    """One variant of an experiment: its config, directory, device, and what its jobs share."""

    experiment: str
    variant: str
    config: dict
    dir: Path
    registry: Registry
    device_spec: str
    log: Callable[[str], None] = print
    _cache: dict[str, Any] = field(default_factory=dict)

    # -- paths -----------------------------------------------------------------------------------
    def path(self, *parts: str) -> Path:
        p = self.dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def device(self):  # torch.device, resolved lazily so that planning never imports torch
        if "device" not in self._cache:
            from .device import resolve_device

            self._cache["device"] = resolve_device(self.device_spec)
        return self._cache["device"]

    # -- shared pieces, built once per run -------------------------------------------------------
    def data(self):
        """(bundle, prepared splits); the dataset is built once and shared by every job of the run."""
        if "data" not in self._cache:
            import torch

            from .data import build_data
            from .model import build_backbone

            # the backbone says how many channels and which normalisation it wants; it is built under the
            # run's seed and kept, with the RNG state after it, for the first model (no second build)
            seed_everything(int(self.config.get("seed", 42)))
            backbone = build_backbone(self.registry, self.config, num_outputs=1)
            self._cache["backbone"] = (backbone, torch.get_rng_state())
            self._cache["data"] = build_data(self.registry, self.config, backbone, self.dir, self.log,
                                             cache_dir=self.dir.parent.parent / ".cache")
            record_data(self)
        return self._cache["data"]

    def class_names(self) -> list[str]:
        return list(self.data()[0].class_names)

    def new_model(self):
        """A freshly initialised model for this run, seeded so that it does not depend on job order."""
        import torch

        from .model import build_model

        bundle, _ = self.data()
        seed_everything(int(self.config.get("seed", 42)))
        backbone = None
        if "backbone" in self._cache:  # as if built just now: same weights, same RNG state after it
            backbone, state = self._cache.pop("backbone")
            torch.set_rng_state(state)
        return build_model(self.registry, self.config, bundle.class_names, backbone)

    def load_model(self, checkpoint: str):
        """The model with the weights of ``checkpoints/<checkpoint>.pt`` (written by the train job)."""
        from . import checkpoints

        file = self.dir / "checkpoints" / f"{checkpoint}.pt"
        if not file.is_file():
            have = sorted(p.stem for p in (self.dir / "checkpoints").glob("*.pt"))
            raise UserError(f"{file}: checkpoint not found (run the train job first"
                            f"{'; this run has: ' + ', '.join(have) if have else ''})")
        model = self.new_model()
        model.load_state_dict(checkpoints.load(file)["model"])
        return model.to(self.device).eval()


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def plan(exp: Experiment, output_dir: str | None = None, jobs: list[str] | None = None,
         device: str | None = None) -> list[tuple[Run, list[str]]]:
    """The runs of an experiment and the jobs each will run, checked before anything is written."""
    out = []
    for variant in exp.variants:
        cfg = variant.config.data
        run_jobs = list(jobs or cfg.get("jobs") or [])
        unknown = [j for j in run_jobs if j not in exp.registry.names("job")]
        if unknown:
            raise UserError(f"--jobs: unknown job(s) {', '.join(unknown)}; known: {', '.join(exp.registry.names('job'))}")
        if "explain" in run_jobs and not (cfg.get("explain") or {}).get("methods"):
            raise UserError("explain.methods: the explain job needs at least one explainer, e.g. "
                            "explain: {methods: [{name: saliency}]} (medattn plugins --kind explainer lists them)")
        base = Path(output_dir or cfg.get("output_dir", "runs"))
        run = Run(exp.name, variant.name, cfg, base / exp.name / variant.name, exp.registry,
                  device or cfg.get("device", "auto"))
        out.append((run, run_jobs))
    return out


def check_run_dir(run: Run) -> str:
    """'new', 'same' or 'updated' (only non-identity keys changed); a different identity is refused."""
    file = run.dir / "config.yaml"
    if not file.is_file():
        return "new"
    try:
        old = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError:
        raise UserError(f"{file}: exists but is not readable YAML; move the run directory away") from None
    old_id, new_id = _identity(old), _identity(run.config)
    diffs = [k for k in IDENTITY_KEYS if _canon(old_id.get(k)) != _canon(new_id.get(k))]
    if diffs:
        detail = "; ".join(_first_difference(old_id.get(k), new_id.get(k), k) for k in diffs)
        raise UserError(f"{run.dir}: this run directory holds a different experiment ({detail}). "
                        f"Refusing to mix them: use --output-dir, rename the experiment, or remove the folder.")
    return "same" if _canon(old) == _canon(run.config) else "updated"


# train keys that change how a run is watched or fed, not what it learns: free to change on a resume
VOLATILE_TRAIN_KEYS = ("progress", "tensorboard", "loader")


def _identity(config: dict) -> dict:
    """The config without the volatile train keys."""
    train = config.get("train")
    if not isinstance(train, dict):
        return config
    return {**config, "train": {k: v for k, v in train.items() if k not in VOLATILE_TRAIN_KEYS}}


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _first_difference(a: Any, b: Any, at: str) -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if _canon(a.get(k)) != _canon(b.get(k)):
                return _first_difference(a.get(k), b.get(k), f"{at}.{k}")
    return f"{at}: was {json.dumps(a, default=str)}, now {json.dumps(b, default=str)}"


def write_run_files(run: Run) -> None:
    """config.yaml (resolved) and manifest.json, written before the first job."""
    run.dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.dir / "config.yaml", yaml.safe_dump(run.config, sort_keys=False))
    atomic_write_text(run.dir / "manifest.json", json.dumps(manifest(run), indent=2))


def manifest(run: Run) -> dict:
    import importlib.metadata as md

    versions = {}
    for pkg in ("medattn", "torch", "torchvision", "timm", "captum", "numpy", "scikit-learn"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    selected = {}
    for kind, spec in (("dataset", run.config["dataset"]), ("backbone", run.config["model"]["backbone"]),
                       ("attention", run.config["model"].get("attention") or {"name": "none"})):
        comp = run.registry.get(kind, spec["name"])
        selected[kind] = {"name": comp.name, "plugin": comp.plugin, "version": comp.version}
    return {
        "experiment": run.experiment, "variant": run.variant, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": sys.version.split()[0], "platform": platform.platform(), "versions": versions,
        "components": selected, "seed": run.config.get("seed"), "device": str(run.device),
        "git_sha": git_sha(), "config_sha256": hashlib.sha256(_canon(run.config).encode()).hexdigest(),
    }


def record_data(run: Run) -> None:
    """Add what the data set was to manifest.json: classes, split sizes and a fingerprint (the dataset's own,
    else a hash of the split lists it wrote), so two runs can be checked to have seen the same data."""
    from .distributed import is_main

    file = run.dir / "manifest.json"
    if not is_main() or not file.is_file():
        return
    bundle, splits = run._cache["data"]
    listed = run.dir / "splits.json"
    fingerprint = bundle.info.get("fingerprint") or (
        "sha256:" + hashlib.sha256(listed.read_bytes()).hexdigest() if listed.is_file() else None)
    data = json.loads(file.read_text())
    data["data"] = {"classes": list(bundle.class_names), "sizes": {k: len(v) for k, v in splits.items()},
                    "fingerprint": fingerprint}
    atomic_write_text(file, json.dumps(data, indent=2))


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> None:
    """A CSV of dict rows, written whole and renamed into place."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns or list(dict.fromkeys(k for r in rows for k in r)))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def run_experiment(exp: Experiment, output_dir: str | None = None, jobs: list[str] | None = None,
                   device: str | None = None, log: Callable[[str], None] = print, devices: str | None = None,
                   shard: str | None = None) -> list[dict]:
    """Plan, check every run (directory and device) before any work, run the jobs, summarise.

    ``devices`` (e.g. ``cuda:0,cuda:1``) runs variants in parallel, one process per device slot; ``shard``
    (``I/N``) runs the I-th of N slices of the matrix. With either, variants whose jobs are done are skipped.
    """
    from .distributed import is_main
    from .grid import is_complete, parse_devices, parse_shard, run_parallel, shard_of

    runs = plan(exp, output_dir, jobs, device)
    chosen = shard_of(runs, *parse_shard(shard)) if shard else list(runs)
    slots = parse_devices(devices) if devices else None
    todo = []
    for run, run_jobs in chosen:  # every check first: a bad device or a foreign run dir stops before any work
        run.log = log
        check_run_dir(run)
        if not slots:
            _ = run.device
        if (slots or shard) and is_complete(run, run_jobs):
            log(f"== {run.experiment}/{run.variant}: complete ({', '.join(run_jobs)}); skipped")
        else:
            todo.append((run, run_jobs))
    if shard or slots:
        log(f"== {'shard ' + shard + ': ' if shard else ''}{len(chosen)} of {len(runs)} variant(s), "
            f"{len(todo)} to run" + (f" over {', '.join(slots)}" if slots else ""))
    t0 = time.time()
    if slots:
        failed = run_parallel(todo, slots, exp.path, exp.overrides, output_dir, jobs, log)
        if failed:
            raise UserError("variant(s) failed: " + "; ".join(f"{v} (exit {c})" for v, c in failed))
    else:  # job by job across the variants: every variant is tested before any is explained (select: agreed)
        for run, run_jobs in todo:
            log(f"== {run.experiment}/{run.variant} on {run.device}: {', '.join(run_jobs)}")
            if is_main():
                write_run_files(run)
        for job in dict.fromkeys(j for _, run_jobs in todo for j in run_jobs):
            batch = [run for run, run_jobs in todo if job in run_jobs]
            for i, run in enumerate(batch, 1):
                log(f"== {job} [{i}/{len(batch)}] {run.experiment}/{run.variant}")
                execute_job(exp, run, job, log)
    if not is_main():  # under torchrun only rank 0 writes the summary
        return []
    rows, quality_rows = summarize(exp, runs)
    if any("figure" in run_jobs for _, run_jobs in chosen):
        experiment_figures(exp, runs, rows, quality_rows, log)
    log(f"== {len(todo)} run(s) in {time.time() - t0:.0f}s; summary in {summary_dir(runs)}")
    log(format_table(rows, SUMMARY_COLUMNS))
    if quality_rows:
        log("explanation quality (explanations/quality.json):")
        log(format_table(quality_rows))
    return rows


# jobs that run on every torchrun rank (they shard the data); the others run on rank 0 only
DISTRIBUTED_JOBS = ("train", "test")


def execute_run(exp: Experiment, run: Run, run_jobs: list[str], log: Callable[[str], None] = print) -> None:
    """Write the run files, then run the jobs in order (one variant's process in a grid)."""
    from .distributed import is_main

    if is_main():
        write_run_files(run)
    for job in run_jobs:
        execute_job(exp, run, job, log)


def execute_job(exp: Experiment, run: Run, job: str, log: Callable[[str], None] = print) -> None:
    """One job of one run, recorded in jobs_done.json when it finishes (grids skip complete variants)."""
    from .distributed import is_main, sync_ranks
    from .grid import mark_done

    main = is_main()
    if not main and job not in DISTRIBUTED_JOBS:
        return
    started = time.time()
    exp.registry.factory("job", job)(run)
    if job in DISTRIBUTED_JOBS:
        sync_ranks()  # under torchrun every rank leaves a job together (no rank tears down mid-job)
    if main:
        mark_done(run, job)
        log(f"   {job} done in {time.time() - started:.1f}s")


@dataclass
class ExperimentSummary:
    """What an experiment-scope figure component receives: every run of the experiment and the summary rows."""

    dir: Path
    runs: list[Run]
    rows: list[dict]  # test metrics: one row per variant and checkpoint (summary.csv)
    quality: list[dict]  # explanation quality: one row per variant and method (quality.csv)
    config: dict  # the first run's config (its figure section decides format and dpi)

    def path(self, *parts: str) -> Path:
        p = self.dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


def experiment_figures(exp: Experiment, runs: list[tuple[Run, list[str]]], rows: list[dict],
                       quality_rows: list[dict], log: Callable[[str], None]) -> None:
    """Figure components declared with ``defaults={"scope": "experiment"}`` draw across all variants."""
    from .config.schema import component_params
    from .jobs.figure import selected_kinds

    first = runs[0][0]
    summary = ExperimentSummary(summary_dir(runs), [r for r, _ in runs], rows, quality_rows, first.config)
    written = []
    for spec in selected_kinds(first, scope="experiment"):
        draw = exp.registry.factory("figure", spec["name"])
        written.extend(draw(component_params(exp.registry, "figure", spec), summary) or [])
    if written:
        log(f"== experiment figures: {', '.join(str(p) for p in written)}")


def summary_dir(runs: list[tuple[Run, list[str]]]) -> Path:
    return runs[0][0].dir.parent


SUMMARY_COLUMNS = ("variant", "checkpoint", "n", "accuracy", "balanced_accuracy", "precision", "recall",
                   "specificity", "f1", "roc_auc")


def summarize(exp: Experiment, runs: list[tuple[Run, list[str]]]) -> tuple[list[dict], list[dict]]:
    """One row per variant and tested checkpoint (metrics/test_*.json) and one per variant and explainer
    (explanations/quality.json); written as summary.csv / summary.md and quality.csv beside the runs."""
    rows: list[dict] = []
    quality_rows: list[dict] = []
    for run, _ in runs:
        for file in sorted((run.dir / "metrics").glob("test_*.json")):
            metrics = json.loads(file.read_text())
            row = {"variant": run.variant, "checkpoint": file.stem[len("test_"):]}
            row.update({k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
            rows.append(row)
        quality = run.dir / "explanations" / "quality.json"
        if quality.is_file():
            for method, scores in json.loads(quality.read_text()).items():
                if isinstance(scores, dict):
                    quality_rows.append({"variant": run.variant, "method": method,
                                         **{k: v for k, v in scores.items()
                                            if isinstance(v, (int, float)) and not isinstance(v, bool)}})
    out = summary_dir(runs)
    out.mkdir(parents=True, exist_ok=True)
    for name, table in (("summary", rows), ("quality", quality_rows)):
        if not table:
            continue
        write_csv(out / f"{name}.csv", table)  # written whole: shards finishing together never interleave
    if rows or quality_rows:
        text = format_table(rows) + ("\n\n## Explanation quality\n\n" + format_table(quality_rows) if quality_rows else "")
        atomic_write_text(out / "summary.md", f"# {exp.name}: summary\n\n{text}\n")
    from .seed_report import write_experiment

    write_experiment(out, [r for r, _ in runs])  # the seed's text format (REFERENCE 1.5) across every variant
    return rows, quality_rows


def format_table(rows: list[dict], columns: tuple[str, ...] | None = None) -> str:
    """A Markdown table of rows (numbers to 4 decimals); ``columns`` picks and orders the ones shown."""
    if not rows:
        return "(no test metrics yet: run the test job)"
    present = list(dict.fromkeys(k for r in rows for k in r))
    columns = [c for c in columns if c in present] if columns else present
    cells = [[f"{r[c]:.4f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    return "\n".join([line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])
