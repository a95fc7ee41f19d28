"""Helpers shared by the attention plugins: which backbone level to attend, and how to bring taps together."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from medattn.api import Backbone, FeatureInfo, UserError


def level_info(backbone: Backbone, level: str, field: str) -> FeatureInfo:
    """The ``feature_info`` entry of ``level``; a level the backbone does not return is an error naming ``field``."""
    for info in backbone.feature_info:
        if info.name == level:
            return info
    raise UserError(f"{field}: {level!r} is not a level of backbone {backbone.arch}; "
                    f"levels: {', '.join(i.name for i in backbone.feature_info)}")


def feature_level(backbone: Backbone, level: str | None, field: str) -> FeatureInfo:
    """``level`` if given, else the backbone's deepest feature map (not a global pool)."""
    if level:
        return level_info(backbone, level, field)
    spatial = [info for info in backbone.feature_info if info.spatial]
    if not spatial:
        raise UserError(f"{field}: backbone {backbone.arch} returns no feature map, only global pools")
    return spatial[-1]


def pool_to(x: torch.Tensor, size: tuple[int, int], kernel: int | None = None) -> torch.Tensor:
    """Average-pool ``x`` to ``size``: a plain AvgPool(k) where k = H/h gives it (the papers), adaptive otherwise.

    ``kernel`` (from the levels' reductions) is used when it gives ``size``: a Python constant, so an exported
    graph keeps the pooling fixed (a kernel computed from a traced shape is not constant for ONNX)."""
    h, w = (int(v) for v in x.shape[-2:])
    if (h, w) == tuple(size):
        return x
    if kernel and (h // kernel, w // kernel) == tuple(size):
        return F.avg_pool2d(x, kernel)
    kh, kw = h // size[0], w // size[1]
    if kh >= 1 and kw >= 1 and (h // kh, w // kw) == tuple(size):
        return F.avg_pool2d(x, (kh, kw))
    return F.adaptive_avg_pool2d(x, size)


def tile_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Repeat ``x`` along channels (concatenation, as goncalves2021's port does) to reach ``channels`` (a multiple
    of x's channels: the factory checks it)."""
    c = x.shape[1]
    return x if c == channels else torch.cat([x] * (channels // c), dim=1)
