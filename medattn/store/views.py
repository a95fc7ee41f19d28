"""Read-only views of a run and of an experiment: what jobs' figure kinds and other plugins are handed.

A view carries the resolved config, the run directory (:class:`medattn.store.rundir.RunDir`), a log function
and the class names from manifest.json. It never builds the data set: ``--jobs figure`` needs no data root.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .rundir import ExperimentDir, RunDir


@dataclass(frozen=True)
class RunView:
    """One run, read-only: ``config`` is a copy (changing it changes nothing), ``dir`` owns the paths."""

    experiment: str
    variant: str
    dir: RunDir
    config: Mapping[str, Any]
    log: Callable[[str], None] = print
    seed: int | None = None  # the run's seed when the experiment repeats seeds, else None

    @classmethod
    def from_dir(cls, path: Path | str, log: Callable[[str], None] = print) -> RunView:
        """The view of a run directory on disk (config.yaml and manifest.json)."""
        rd = RunDir(path)
        config = rd.read_config()
        manifest = rd.read_manifest() if rd.manifest.is_file() else {}
        return cls(manifest.get("experiment", rd.root.parent.name), manifest.get("variant", rd.root.name), rd,
                   config, log, manifest.get("repeat_seed"))

    @property
    def label(self) -> str:
        """``variant`` or ``variant/seed-N``: how the run is named in tables and titles."""
        return self.variant if self.seed is None else f"{self.variant}/seed-{self.seed}"

    @property
    def class_names(self) -> list[str]:
        return self.dir.class_names()

    def load_model(self, checkpoint: str = "best_val_loss", device: str = "cpu") -> Any:
        """The trained model of ``checkpoints/<checkpoint>.pt`` in eval mode (from the self-contained file)."""
        from .checkpoints import load_model

        return load_model(self.dir.checkpoint(checkpoint), device=device)


@dataclass(frozen=True)
class ExperimentView:
    """Every run of an experiment and the tables the jobs contributed (``tables["summary"]``, ...)."""

    name: str
    dir: ExperimentDir
    runs: list[RunView]
    tables: Mapping[str, list[dict]] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)  # the first run's config
    log: Callable[[str], None] = print


def frozen_config(config: Mapping[str, Any]) -> dict:
    """A private copy of a config for a view."""
    return copy.deepcopy(dict(config))


def save_figure(fig: Any, view: RunView | ExperimentView, stem: str) -> Path:
    """Save a matplotlib figure as ``figures/<stem>.<format>`` of the run (or experiment) at the configured
    dpi (config ``figure.format`` / ``figure.dpi``), close it, and return the path."""
    import matplotlib.pyplot as plt

    cfg = view.config.get("figure") or {}
    path = view.dir.figure(stem, cfg.get("format", "png"))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=cfg.get("dpi", 120), bbox_inches="tight")
    plt.close(fig)
    return path
