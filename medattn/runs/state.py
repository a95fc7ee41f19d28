"""One run of an experiment (a matrix variant, and one seed of it with ``seeds:``): its config, its run
directory, its device, and the data set and model its jobs share."""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..registry import Registry
from ..store.rundir import RunDir
from ..store.views import RunView, frozen_config


@dataclass
class Run:
    """What the jobs of one run share. ``writes=False`` (``medattn validate``) builds everything but writes nothing."""

    experiment: str
    variant: str
    config: dict
    dir: RunDir
    registry: Registry
    device_spec: str
    seed: int | None = None  # the repeat's seed for experiments with ``seeds:``, else None
    log: Callable[[str], None] = print
    writes: bool = True
    cache_dir: Path | None = None  # decoded-image cache shared by the runs of an output folder
    choices: dict[str, Any] = field(default_factory=dict)  # the matrix choices that made this variant
    epoch_hook: Callable[[int, dict], None] | None = None  # called after each trained epoch (medattn sweep)
    _cache: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``variant`` or ``variant/seed-N``."""
        return self.variant if self.seed is None else f"{self.variant}/seed-{self.seed}"

    @property
    def device(self):  # torch.device, resolved lazily so that planning never imports torch
        if "device" not in self._cache:
            from ..device import resolve_device

            self._cache["device"] = resolve_device(self.device_spec)
        return self._cache["device"]

    def view(self) -> RunView:
        return RunView(self.experiment, self.variant, self.dir, frozen_config(self.config), self.log, self.seed)

    # -- shared pieces, built once per run -------------------------------------------------------
    def data(self):
        """(bundle, prepared splits); the dataset is built once and shared by every job of the run."""
        if "data" not in self._cache:
            import torch

            from ..components.data import build_data
            from ..store.manifest import record_data
            from ..components.model import build_backbone

            # the backbone says how many channels and which normalisation it wants; it is built under the
            # run's seed and kept, with the RNG state after it, for the first model (no second build)
            seed_everything(self.config["seed"])
            backbone = build_backbone(self.registry, self.config)
            self._cache["backbone"] = (backbone, torch.get_rng_state())
            self._cache["data"] = build_data(self.registry, self.config, backbone,
                                             self.dir if self.writes else None, self.log,
                                             cache_dir=self.cache_dir if self.writes else None)
            if self.writes:
                record_data(self)
        return self._cache["data"]

    def new_model(self):
        """A freshly initialised model for this run, seeded so that it does not depend on job order."""
        import torch

        from ..components.model import build_model

        bundle, _ = self.data()
        seed_everything(self.config["seed"])
        backbone = None
        if "backbone" in self._cache:  # as if built just now: same weights, same RNG state after it
            backbone, state = self._cache.pop("backbone")
            torch.set_rng_state(state)
        return build_model(self.registry, self.config, bundle.class_names, backbone)

    def load_model(self, checkpoint: str):
        """The model of the run's model file ``checkpoint`` (written by the train job), on the run's device."""
        from ..store.checkpoints import load_model

        return load_model(self.dir.checkpoint(checkpoint), device=self.device,
                          registry=self.registry)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every GPU)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
