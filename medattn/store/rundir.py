"""The one owner of the run directory: every path inside a run (and inside an experiment folder), and
the readers for those files. Nothing else in medattn or its plugins spells a file name of a run.

Layout of a run, ``OUTPUT_DIR/EXPERIMENT/VARIANT/`` (or ``.../VARIANT/seed-N/`` with ``seeds:``)::

    config.yaml          the resolved config           manifest.json   versions, data, components
    splits.json          the data split lists          skipped.csv     files a dataset skipped
    jobs_done.json       jobs finished for this config
    run.lock             held by the one medattn process working in the run; run.lock.json names it
    plugins/             copies of the plugin files the run was made with (loaded when the run is reopened)
    checkpoints/         last.pt (resume) and best_*.pt (self-contained model files)
    metrics/             history.csv, test_<ckpt>.json, predictions_<ckpt>.csv, roc_<ckpt>.csv, ...
    explanations/        samples.npz, <method>.npz, quality.json, quality_curves.npz, quality_images.csv,
                         attention_raw.npz
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

# npz files of explanations/ that are not one method's attributions
EXPLANATION_FILES = ("samples", "quality_curves", "attention_raw")


class _Fixed(property):
    """A fixed path inside the folder, as a read-only property; ``relative`` (and its doc) is the path, a folder's
    ending in ``/``."""

    def __init__(self, *parts: str, folder: bool = False) -> None:
        self.relative = "/".join(parts) + ("/" if folder else "")
        super().__init__(lambda self: self.root.joinpath(*parts))
        self.__doc__ = self.relative


def _at(*parts: str) -> property:
    """A fixed file inside the folder."""
    return _Fixed(*parts)


def _folder(*parts: str) -> property:
    """A fixed folder inside the folder."""
    return _Fixed(*parts, folder=True)


class _Folder:
    """A folder of medattn's, by its root (``os.fspath`` gives the root)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    def __fspath__(self) -> str:
        return str(self.root)


class RunDir(_Folder):
    """Paths and readers of one run directory. Creating paths creates no folders; writers do that."""

    # -- files at the top --------------------------------------------------------------------------------
    config = _at("config.yaml")
    manifest = _at("manifest.json")
    splits = _at("splits.json")
    skipped = _at("skipped.csv")
    jobs_done = _at("jobs_done.json")
    lock = _at("run.lock")
    lock_holder = _at("run.lock.json")
    plugin_files = _folder("plugins")
    tensorboard = _folder("tensorboard")

    # -- checkpoints -------------------------------------------------------------------------------------
    checkpoints = _folder("checkpoints")

    def checkpoint(self, name: str) -> Path:
        return self.checkpoints / f"{name}.pt"

    last = _at("checkpoints", "last.pt")

    def checkpoint_names(self) -> list[str]:
        """Names of the checkpoints on disk (``last``, ``best_val_loss``, ...)."""
        return sorted(p.stem for p in self.checkpoints.glob("*.pt") if p.is_file()) if self.checkpoints.is_dir() else []

    # -- metrics -----------------------------------------------------------------------------------------
    metrics = _folder("metrics")
    history = _at("metrics", "history.csv")

    def test_metrics(self, checkpoint: str) -> Path:
        return self.metrics / f"test_{checkpoint}.json"

    def predictions(self, checkpoint: str, split: str = "test") -> Path:
        """One row per image of ``split`` (test.splits) as predicted by ``checkpoint``."""
        return self.metrics / (f"predictions_{checkpoint}.csv" if split == "test" else
                               f"predictions_{checkpoint}.{split}.csv")

    def roc(self, checkpoint: str) -> Path:
        return self.metrics / f"roc_{checkpoint}.csv"

    def shortcut_images(self, checkpoint: str) -> Path:
        """One row per test image: the true class's probability with and without the confound, and the reliance."""
        return self.metrics / f"shortcut_{checkpoint}.csv"

    def pad_roc(self, checkpoint: str) -> Path:
        return self.metrics / f"pad_roc_{checkpoint}.csv"

    def triage(self, checkpoint: str) -> Path:
        """The triage table of a tested checkpoint (test.triage: the most uncertain images sent to a reader)."""
        return self.metrics / f"triage_{checkpoint}.csv"

    def subgroups(self, checkpoint: str) -> Path:
        """The metrics per group of test.subgroups of a tested checkpoint."""
        return self.metrics / f"subgroups_{checkpoint}.csv"

    def metrics_file(self, name: str) -> Path:
        """Any other file under metrics/ (a plugin's own, e.g. ``original_results.txt``)."""
        return self.metrics / name

    def tested_checkpoints(self) -> list[str]:
        """Checkpoints the test job wrote metrics for."""
        return sorted(p.stem[len("test_"):] for p in self.metrics.glob("test_*.json")) if self.metrics.is_dir() else []

    # -- explanations ------------------------------------------------------------------------------------
    explanations = _folder("explanations")
    samples = _at("explanations", "samples.npz")

    def attributions(self, label: str) -> Path:
        return self.explanations / f"{label}.npz"

    quality = _at("explanations", "quality.json")
    quality_curves = _at("explanations", "quality_curves.npz")
    quality_images = _at("explanations", "quality_images.csv")  # id, method, one column per per-image score
    attention_raw = _at("explanations", "attention_raw.npz")

    def attribution_labels(self) -> list[str]:
        """Method labels that have an attributions file, sorted."""
        if not self.explanations.is_dir():
            return []
        return sorted(p.stem for p in self.explanations.glob("*.npz") if p.stem not in EXPLANATION_FILES)

    # -- figures -----------------------------------------------------------------------------------------
    figures = _folder("figures")

    def figure(self, stem: str, fmt: str = "png") -> Path:
        return self.figures / f"{stem}.{fmt}"

    # -- the whole layout --------------------------------------------------------------------------------
    @classmethod
    def layout(cls) -> list[str]:
        """Every path a run directory can hold, relative to it, sorted: each fixed path (a folder's ends in ``/``)
        and what each path method gives for ``<placeholders>``. docs/run-directory.md names exactly these (a test
        checks it): a new path of a run is a new property, or a new method called here, and a row on that page."""
        rd = cls("")
        made = [rd.checkpoint("best_<split>_<metric>"), rd.test_metrics("<ckpt>"), rd.predictions("<ckpt>"),
                rd.predictions("<ckpt>", "<split>"), rd.roc("<ckpt>"), rd.pad_roc("<ckpt>"), rd.triage("<ckpt>"),
                rd.subgroups("<ckpt>"), rd.shortcut_images("<ckpt>"), rd.metrics_file("<file>"), rd.attributions("<method>"), rd.figure("<kind>", "<format>")]
        fixed = [p.relative for k in dir(cls) if isinstance(p := getattr(cls, k), _Fixed)]
        return sorted({*fixed, *(p.as_posix() for p in made)})

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

    def read_quality_images(self) -> list[dict[str, str]]:
        return _csv_rows(self.quality_images) if self.quality_images.is_file() else []

    def read_history(self) -> list[dict[str, str]]:
        return _csv_rows(self.history)

    def read_predictions(self, checkpoint: str, split: str = "test") -> list[dict[str, str]]:
        return _csv_rows(self.predictions(checkpoint, split))

    def read_shortcut_images(self, checkpoint: str) -> list[dict[str, str]]:
        f = self.shortcut_images(checkpoint)
        return _csv_rows(f) if f.is_file() else []

    def read_subgroups(self, checkpoint: str) -> list[dict[str, str]]:
        f = self.subgroups(checkpoint)
        return _csv_rows(f) if f.is_file() else []

    def read_npz(self, path: Path) -> dict[str, Any] | None:
        """An .npz file of this run as a dict of arrays (no pickles), or None when it is missing."""
        import numpy as np

        if not Path(path).is_file():
            return None
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}


class ExperimentDir(_Folder):
    """Paths of an experiment folder: the runs below it and the tables and figures across them."""

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

    summary = _at("summary.md")

    figures = _folder("figures")

    def figure(self, stem: str, fmt: str = "png") -> Path:
        return self.figures / f"{stem}.{fmt}"

    def file(self, *parts: str) -> Path:
        """Any other path inside the experiment folder (a plugin's tables/, report.md, ...)."""
        return self.root.joinpath(*parts)

    def read_table(self, name: str) -> list[dict[str, str]]:
        return _csv_rows(self.table(name))


def _yaml(path: Path) -> dict:
    import yaml

    return _mapping(path, "YAML", yaml.safe_load, yaml.YAMLError)


def _json(path: Path) -> dict:
    return _mapping(path, "JSON", json.loads, json.JSONDecodeError)


def _mapping(path: Path, kind: str, parse: Any, errors: type[Exception]) -> dict:
    """The mapping a YAML or JSON file of a run holds, or a UserError naming the file."""
    from ..errors import UserError

    try:
        data = parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: not found (is this a medattn run directory?)") from None
    except (errors, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: not readable {kind} ({first}); move the run directory away") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping, got {type(data).__name__}")
    return data


def _csv_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
