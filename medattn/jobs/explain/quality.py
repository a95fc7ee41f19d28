"""The explain job's quality step: every method's maps scored (medattn.evidence.explanation_quality), with the
randomised model of the sanity check built once per run and only when its score is wanted."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ...evidence import explanation_quality as quality
from .attribution import randomized_copy
from .methods import attribute


class Scorer:
    """Scores of each method's maps on the images of one run, collected for quality.json."""

    def __init__(self, cfg: dict, model: nn.Module, inputs: torch.Tensor, target: np.ndarray | None,
                 masks: np.ndarray | None, device: Any, batch_size: int, seed: int,
                 confound_masks: np.ndarray | None = None) -> None:
        self.cfg, self.model, self.inputs, self.target, self.masks = cfg, model, inputs, target, masks
        self.confound_masks = confound_masks
        self.device, self.batch_size, self.seed = device, batch_size, seed
        self.scores: dict[str, dict[str, float]] = {}
        self.per_image: dict[str, dict[str, np.ndarray]] = {}  # method label -> score -> (N,) values
        self.curves: dict[str, np.ndarray] = {}
        self._randomised: nn.Module | None = None

    @property
    def active(self) -> bool:
        return bool(self.cfg["scores"])

    def randomised(self) -> nn.Module:
        """The model with re-initialised weights (built on first use)."""
        if self._randomised is None:
            self._randomised = randomized_copy(self.model, self.seed)
        return self._randomised

    def score(self, label: str, explainer: Any, attributions: np.ndarray) -> dict[str, float]:
        """Score one method's maps; returns (and keeps) its scores."""
        rand = None
        if "randomisation" in self.cfg["scores"]:
            rand = attribute(explainer, self.randomised(), self.inputs, self.target, self.batch_size, self.device)
        each: dict[str, np.ndarray] = {}
        s, c = quality.score_method(self.model, explainer, self.inputs, self.target, attributions, self.masks,
                                    self.cfg, self.device, self.batch_size, rand, each, self.confound_masks)
        if each:
            self.per_image[label] = each
        self.scores[label] = s
        self.curves.update({f"{label}/{k}": v for k, v in c.items()})
        return s
