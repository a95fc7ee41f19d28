"""The one owner of the run directory: every path inside a run (and inside an experiment folder), and
the readers for those files. Nothing else in medattn or its plugins spells a file name of a run.

Layout of a run, ``OUTPUT_DIR/EXPERIMENT/VARIANT/`` (or ``.../VARIANT/seed-N/`` with ``seeds:``)::

    config.yaml          the resolved config           manifest.json   versions, data, components
    splits.json          the data split lists          skipped.csv     files a dataset skipped
    jobs_done.json       jobs finished for this config
    checkpoints/         last.pt (resume) and best_*.pt (self-contained model files)
    metrics/             history.csv, test_<ckpt>.json, predictions_<ckpt>.csv, roc_<ckpt>.csv, ...
    explanations/        samples.npz, <method>.npz, quality.json, quality_curves.npz, attention_raw.npz
    figures/             <kind>.<png|svg|pdf>
    tensorboard/         event files

An experiment folder ``OUTPUT_DIR/EXPERIMENT/`` holds the runs and the tables across them
(``<table>.csv``, ``summary.md``, ``aggregate.*``, ``comparisons.*``) and experiment figures.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import yaml

# npz files of explanations/ that are not one method's attributions
EXPLANATION_FILES = ("samples", "quality_curves", "attention_raw")


class RunDir:
    """Paths and readers of one run directory. Creating paths creates no folders; writers do that."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    def __fspath__(self) -> str:
        return str(self.root)

    # -- files at the top --------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def splits(self) -> Path:
        return self.root / "splits.json"

    @property
    def skipped(self) -> Path:
        return self.root / "skipped.csv"

    @property
    def jobs_done(self) -> Path:
        return self.root / "jobs_done.json"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    # -- checkpoints -------------------------------------------------------------------------------------
    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, name: str) -> Path:
        return self.checkpoints / f"{name}.pt"

    @property
    def last(self) -> Path:
        return self.checkpoint("last")

    def checkpoint_names(self) -> list[str]:
        """Names of the checkpoints on disk (``last``, ``best_val_loss``, ...)."""
        return sorted(p.stem for p in self.checkpoints.glob("*.pt")) if self.checkpoints.is_dir() else []

    # -- metrics -----------------------------------------------------------------------------------------
    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    @property
    def history(self) -> Path:
        return self.metrics / "history.csv"

    def test_metrics(self, checkpoint: str) -> Path:
        return self.metrics / f"test_{checkpoint}.json"

    def predictions(self, checkpoint: str) -> Path:
        return self.metrics / f"predictions_{checkpoint}.csv"

    def roc(self, checkpoint: str) -> Path:
        return self.metrics / f"roc_{checkpoint}.csv"

    def pad_roc(self, checkpoint: str) -> Path:
        return self.metrics / f"pad_roc_{checkpoint}.csv"

    def metrics_file(self, name: str) -> Path:
        """Any other file under metrics/ (a plugin's own, e.g. ``original_results.txt``)."""
        return self.metrics / name

    def tested_checkpoints(self) -> list[str]:
        """Checkpoints the test job wrote metrics for."""
        return sorted(p.stem[len("test_"):] for p in self.metrics.glob("test_*.json")) if self.metrics.is_dir() else []

    # -- explanations ------------------------------------------------------------------------------------
    @property
    def explanations(self) -> Path:
        return self.root / "explanations"

    @property
    def samples(self) -> Path:
        return self.explanations / "samples.npz"

    def attributions(self, label: str) -> Path:
        return self.explanations / f"{label}.npz"

    @property
    def quality(self) -> Path:
        return self.explanations / "quality.json"

    @property
    def quality_curves(self) -> Path:
        return self.explanations / "quality_curves.npz"

    @property
    def attention_raw(self) -> Path:
        return self.explanations / "attention_raw.npz"

    def attribution_labels(self) -> list[str]:
        """Method labels that have an attributions file, sorted."""
        if not self.explanations.is_dir():
            return []
        return sorted(p.stem for p in self.explanations.glob("*.npz") if p.stem not in EXPLANATION_FILES)

    # -- figures -----------------------------------------------------------------------------------------
    @property
    def figures(self) -> Path:
        return self.root / "figures"

    def figure(self, stem: str, fmt: str = "png") -> Path:
        return self.figures / f"{stem}.{fmt}"

    # -- readers -----------------------------------------------------------------------------------------
    def read_config(self) -> dict:
        return _yaml(self.config)

    def read_manifest(self) -> dict:
        return _json(self.manifest)

    def class_names(self) -> list[str]:
        """Class names as recorded in manifest.json (no data set needed)."""
        return list((self.read_manifest().get("data") or {}).get("classes") or [])

    def read_jobs_done(self) -> dict:
        return _json(self.jobs_done) if self.jobs_done.is_file() else {}

    def read_test_metrics(self, checkpoint: str) -> dict | None:
        f = self.test_metrics(checkpoint)
        return _json(f) if f.is_file() else None

    def read_quality(self) -> dict | None:
        return _json(self.quality) if self.quality.is_file() else None

    def read_history(self) -> list[dict[str, str]]:
        return _csv_rows(self.history)

    def read_predictions(self, checkpoint: str) -> list[dict[str, str]]:
        return _csv_rows(self.predictions(checkpoint))

    def read_npz(self, path: Path) -> dict[str, Any] | None:
        """An .npz file of this run as a dict of arrays (no pickles), or None when it is missing."""
        import numpy as np

        if not Path(path).is_file():
            return None
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}


class ExperimentDir:
    """Paths of an experiment folder: the runs below it and the tables and figures across them."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ExperimentDir({str(self.root)!r})"

    def __fspath__(self) -> str:
        return str(self.root)

    def run(self, variant: str, seed: int | None = None) -> RunDir:
        """The run directory of a variant (and of one seed of it, for experiments with ``seeds:``)."""
        return RunDir(self.root / variant / f"seed-{seed}" if seed is not None else self.root / variant)

    def runs(self) -> list[RunDir]:
        """Every run directory on disk below this folder (one with a config.yaml), sorted."""
        if not self.root.is_dir():
            return []
        found = [p.parent for p in self.root.glob("*/config.yaml")] + [p.parent for p in
                                                                     self.root.glob("*/seed-*/config.yaml")]
        return [RunDir(p) for p in sorted(found)]

    def table(self, name: str, ext: str = "csv") -> Path:
        """``<name>.<ext>``: summary, quality, aggregate, comparisons, ..."""
        return self.root / f"{name}.{ext}"

    @property
    def summary(self) -> Path:
        return self.table("summary", "md")

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    def figure(self, stem: str, fmt: str = "png") -> Path:
        return self.figures / f"{stem}.{fmt}"

    def file(self, *parts: str) -> Path:
        """Any other path inside the experiment folder (a plugin's tables/, report.md, ...)."""
        return self.root.joinpath(*parts)

    def read_table(self, name: str) -> list[dict[str, str]]:
        return _csv_rows(self.table(name))


def _yaml(path: Path) -> dict:
    from .errors import UserError

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: not found (is this a medattn run directory?)") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not readable YAML ({type(exc).__name__}); move the run directory away") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping, got {type(data).__name__}")
    return data


def _json(path: Path) -> dict:
    from .errors import UserError

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: not found (is this a medattn run directory?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _csv_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
