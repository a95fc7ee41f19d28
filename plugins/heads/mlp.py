"""``mlp`` head: flatten, hidden Linear-ReLU-Dropout layers, a final Linear (the MLDAM papers' heads)."""
from __future__ import annotations

import math
from typing import Any

from torch import nn

from medattn.api import HeadContext, UserError


def resolve_width(spec: int | str, channels: int, field: str) -> int:
    """A hidden width: an int, ``"C"`` (the input's channels) or ``"C/k"`` (channels divided by k); the schema has
    checked the spelling."""
    if isinstance(spec, int):
        return spec
    div = int(spec[2:]) if spec.startswith("C/") else 1
    if channels % div:
        raise UserError(f"{field}: {spec!r} with C={channels} is not a whole number")
    return channels // div


def build_mlp(params: dict[str, Any], ctx: HeadContext) -> nn.Module:
    """Flatten (or GAP with pool: avg), then Linear-ReLU-Dropout per hidden width, then Linear to num_outputs."""
    shape = tuple(ctx.in_shape)
    channels = shape[0]
    layers: list[nn.Module] = []
    if params["pool"] == "avg" and len(shape) == 3:
        layers += [nn.AdaptiveAvgPool2d(1)]
        features = channels
    else:
        features = math.prod(shape)
    layers.append(nn.Flatten(1))
    for i, spec in enumerate(params["hidden"]):
        width = resolve_width(spec, channels, f"head.params.hidden.{i}")
        layers += [nn.Linear(features, width), nn.ReLU(inplace=True), nn.Dropout(params["dropout"])]
        features = width
    layers.append(nn.Linear(features, ctx.num_outputs))
    return nn.Sequential(*layers)
