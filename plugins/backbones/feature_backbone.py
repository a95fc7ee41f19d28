"""The base class of the built-in backbones: named levels from one pass, level requests, freezing."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from medattn.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def stats_for(in_chans: int, mean: Iterable[float], std: Iterable[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation for ``in_chans``: the RGB statistics, or their average for one channel."""
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if in_chans == 1 and len(mean) != 1:
        return (sum(mean) / len(mean),), (sum(std) / len(std),)
    return mean, std


class FeatureBackbone(nn.Module):
    """A backbone whose forward returns ``{level: tensor}`` (shallow to deep, final level last) from one pass.

    Subclasses set ``body`` (the only registered child: its state_dict keys are ``body.*``), implement
    ``_rebuild()`` (make ``body`` return ``self.levels_out``) and ``_units()`` (modules in forward order,
    each with the last level it belongs to, for ``freeze``).
    """

    def __init__(self, arch: str, in_chans: int, mean: Iterable[float], std: Iterable[float],
                 levels: list[dict[str, Any]], final: str):
        super().__init__()
        self.arch = arch
        self.in_chans = int(in_chans)
        self.mean, self.std = stats_for(self.in_chans, mean, std)
        names = [lv["name"] for lv in levels]
        if final not in names:
            raise UserError(f"backbone {arch}: final_level {final!r} is not a level; choose one of {', '.join(names)}")
        self._level_table = OrderedDict((lv["name"], dict(lv)) for lv in levels[: names.index(final) + 1])
        self.final_level = final
        self._requested: list[str] = [final]
        self._frozen_norms: list[nn.Module] = []
        self.cam_layer = ""

    # -- levels -----------------------------------------------------------------------------------------------
    @property
    def available_levels(self) -> list[str]:
        """Level names ``request_levels`` accepts, shallow to deep (the final level last)."""
        return list(self._level_table)

    @property
    def levels_out(self) -> list[str]:
        """The levels forward currently returns, shallow to deep."""
        return [n for n in self._level_table if n in self._requested]

    @property
    def feature_info(self) -> list[dict[str, Any]]:
        """``{name, channels, reduction}`` of the returned levels (reduction None for a global pool)."""
        return [{"name": n, "channels": self._level_table[n]["channels"],
                 "reduction": self._level_table[n]["reduction"]} for n in self.levels_out]

    @property
    def spatial_level(self) -> str:
        """The deepest available level that is a feature map (not a global pool): where attention goes."""
        spatial = [n for n, lv in self._level_table.items() if lv["reduction"] is not None]
        return spatial[-1]

    def level_channels(self, name: str) -> int:
        """Channels of an available level."""
        return int(self._level_table[name]["channels"])

    def request_levels(self, names: Iterable[str]) -> None:
        """Make later forwards also return the named levels."""
        names = [str(n) for n in names]
        unknown = [n for n in names if n not in self._level_table]
        if unknown:
            raise UserError(f"backbone {self.arch}: unknown level(s) {', '.join(map(repr, unknown))}; "
                            f"available: {', '.join(self._level_table)}")
        new = [n for n in names if n not in self._requested]
        if new:
            self._requested.extend(new)
            self._rebuild()

    def _rebuild(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- freezing ---------------------------------------------------------------------------------------------
    def _units(self) -> list[tuple[nn.Module, str]]:  # pragma: no cover - abstract
        """(module, level it is computed in) for every parameterised unit, in forward order."""
        raise NotImplementedError

    def freeze(self, spec: str) -> None:
        """Freeze ``none``, ``all`` or every module up to and including the named level (BatchNorm stays in eval)."""
        if spec in (None, "", "none"):
            return
        if spec != "all" and spec not in self._level_table:
            raise UserError(f"backbone {self.arch}: freeze {spec!r} is not 'none', 'all' or a level; "
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
