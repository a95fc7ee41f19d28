"""Helpers shared by the attention plugins: which backbone level to attend, and how to bring taps together."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from medattn.errors import UserError


def feature_level(backbone: Any, level: str | None, field: str) -> str:
    """``level`` if given, else the backbone's deepest feature-map level (not a global pool); requested."""
    if not level:
        level = getattr(backbone, "spatial_level", None) or backbone.feature_info[-1]["name"]
    available = list(getattr(backbone, "available_levels", []) or [i["name"] for i in backbone.feature_info])
    if level not in available:
        raise UserError(f"{field}: level {level!r} is not a level of backbone {getattr(backbone, 'arch', '?')}; "
                        f"available: {', '.join(available)}")
    backbone.request_levels([level])
    return level


def level_channels(backbone: Any, level: str) -> int:
    """Channels of a requested level, from ``feature_info``."""
    for info in backbone.feature_info:
        if info["name"] == level:
            return int(info["channels"])
    raise UserError(f"backbone {getattr(backbone, 'arch', '?')} does not report level {level!r} in feature_info")


def pool_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Average-pool ``x`` to ``size``: a plain AvgPool(k) where k = H/h gives it (the papers), adaptive otherwise."""
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    kh, kw = h // size[0], w // size[1]
    if kh >= 1 and kw >= 1 and (h // kh, w // kw) == tuple(size):
        return F.avg_pool2d(x, (kh, kw))
    return F.adaptive_avg_pool2d(x, size)


def tile_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Repeat ``x`` along channels (concatenation, as the seed port does) to reach ``channels``."""
    c = x.shape[1]
    if c == channels:
        return x
    if channels % c:
        raise UserError(f"mldam: cannot tile {c} channels to {channels} (not a multiple)")
    return torch.cat([x] * (channels // c), dim=1)
