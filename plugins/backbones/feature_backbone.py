"""The base class of the built-in backbones: every level up to the final one from one pass, and freezing."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from medattn.api import FeatureInfo, UserError, warn_renamed

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def stats_for(in_chans: int, mean: Iterable[float], std: Iterable[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation for ``in_chans``: the RGB statistics, or their average for one channel."""
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if in_chans == 1 and len(mean) != 1:
        return (sum(mean) / len(mean),), (sum(std) / len(std),)
    return mean, std


def deepest_spatial(levels: Iterable[FeatureInfo]) -> str:
    """The deepest level that is a feature map (not a global pool)."""
    return [info.name for info in levels if info.spatial][-1]


class FeatureBackbone(nn.Module):
    """A backbone whose forward returns ``{level: tensor}`` for every level up to ``final`` (shallow to deep, from
    one pass): the :class:`medattn.api.Backbone` protocol. The levels are fixed here, when it is built.

    Subclasses set ``body`` (the only registered child: its state_dict keys are ``body.*``) and implement
    ``_units()`` (modules in forward order, each with the last level it belongs to, for ``freeze``).
    """

    def __init__(self, arch: str, in_chans: int, mean: Iterable[float], std: Iterable[float],
                 levels: list[dict[str, Any]], final: str):
        super().__init__()
        self.arch = arch
        self.in_chans = int(in_chans)
        self.mean, self.std = stats_for(self.in_chans, mean, std)
        names = [lv["name"] for lv in levels]
        self._level_table = OrderedDict((lv["name"], dict(lv)) for lv in levels[: names.index(final) + 1])
        self.feature_info = tuple(FeatureInfo(n, int(lv["channels"]), lv["reduction"])
                                  for n, lv in self._level_table.items())
        self._frozen_norms: list[nn.Module] = []
        self.cam_layer = ""

    # -- the 0.1 level API: warning shims, kept until 0.3 (every level now comes from one pass) --------------
    __jit_unused_properties__ = ["available_levels", "levels_out", "final_level", "spatial_level"]

    @property
    def available_levels(self) -> list[str]:
        """0.1: the level names; use ``[info.name for info in feature_info]``."""
        warn_renamed("available_levels", "feature_info")
        return [info.name for info in self.feature_info]

    @property
    def levels_out(self) -> list[str]:
        """0.1: the levels forward returns (now every level of ``feature_info``)."""
        warn_renamed("levels_out", "feature_info")
        return [info.name for info in self.feature_info]

    @property
    def final_level(self) -> str:
        """0.1: the deepest level; use ``feature_info[-1].name``."""
        warn_renamed("final_level", "feature_info[-1].name")
        return self.feature_info[-1].name

    @property
    def spatial_level(self) -> str:
        """0.1: the deepest feature-map level; use the last ``info`` of ``feature_info`` with ``info.spatial``."""
        warn_renamed("spatial_level", "feature_info (the last level whose .spatial is True)")
        return deepest_spatial(self.feature_info)

    def level_channels(self, name: str) -> int:
        """0.1: channels of a level; use ``info.channels`` of ``feature_info``."""
        warn_renamed("level_channels", "feature_info (info.channels)")
        return int(self._level(name)["channels"])

    def request_levels(self, names: Iterable[str]) -> None:
        """0.1: ask forward for more levels; now a no-op, since forward returns every level of ``feature_info``."""
        warn_renamed("request_levels", "feature_info (every level is returned: nothing to request)")
        for name in names:
            self._level(str(name))

    def _level(self, name: str) -> dict[str, Any]:
        if name not in self._level_table:
            raise UserError(f"backbone {self.arch}: unknown level {name!r}; levels: {', '.join(self._level_table)}")
        return self._level_table[name]

    # -- freezing ---------------------------------------------------------------------------------------------
    def _units(self) -> list[tuple[nn.Module, str]]:  # pragma: no cover - abstract
        """(module, level it is computed in) for every parameterised unit, in forward order."""
        raise NotImplementedError

    def freeze(self, spec: str) -> None:
        """Freeze ``none``, ``all`` or every module up to and including the named level (BatchNorm stays in eval)."""
        if spec == "none":
            return
        if spec != "all" and spec not in self._level_table:
            raise UserError(f"backbone.params.freeze: {spec!r} is not 'none', 'all' or a level of {self.arch}; "
                            f"levels: {', '.join(self._level_table)}")
        if spec == "all":
            modules = [self.body]
        else:
            order = list(self._level_table)
            stop = order.index(spec)
            modules = [m for m, level in self._units() if order.index(level) <= stop]
        for module in modules:
            for p in module.parameters():
                p.requires_grad_(False)
            self._frozen_norms.extend(m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
        self.train(self.training)

    def train(self, mode: bool = True) -> FeatureBackbone:
        """Set train/eval mode; frozen BatchNorm layers always stay in eval mode (running stats fixed)."""
        super().train(mode)
        for m in self._frozen_norms:
            m.eval()
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError
