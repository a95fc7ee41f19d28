"""``mlp`` head: flatten, hidden Linear-ReLU-Dropout layers, a final Linear (the MLDAM papers' heads)."""
from __future__ import annotations

import math
import re
from typing import Any

from torch import nn

from medattn.errors import UserError
from medattn.hookspecs import HeadContext

_WIDTH = re.compile(r"^C(?:/([1-9][0-9]*))?$")


def resolve_width(spec: int | str, channels: int, field: str) -> int:
    """A hidden width: an int, ``"C"`` (the input's channels) or ``"C/k"`` (channels divided by k)."""
    if isinstance(spec, bool):
        raise UserError(f"{field}: {spec!r} is not a width (an int, 'C' or 'C/k')")
    if isinstance(spec, int):
        width = spec
    else:
        m = _WIDTH.match(str(spec).strip())
        if not m:
            raise UserError(f"{field}: {spec!r} is not a width (an int, 'C' or 'C/k')")
        div = int(m.group(1) or 1)
        if channels % div:
            raise UserError(f"{field}: {spec!r} with C={channels} is not a whole number")
        width = channels // div
    if width < 1:
        raise UserError(f"{field}: width {width} must be at least 1")
    return width


def build_mlp(params: dict[str, Any], ctx: HeadContext) -> nn.Module:
    """Flatten (or GAP with pool: avg), then Linear-ReLU-Dropout per hidden width, then Linear to num_outputs."""
    params = params or {}
    shape = tuple(int(s) for s in ctx.in_shape)
    channels = shape[0]
    pool = params.get("pool", "none")
    layers: list[nn.Module] = []
    if pool == "avg" and len(shape) == 3:
        layers += [nn.AdaptiveAvgPool2d(1)]
        features = channels
    else:
        features = math.prod(shape)
    layers.append(nn.Flatten(1))
    dropout = float(params.get("dropout", 0.25))
    for i, spec in enumerate(params.get("hidden", ["C", "C/2"])):
        width = resolve_width(spec, channels, f"head.params.hidden[{i}]")
        layers += [nn.Linear(features, width), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        features = width
    layers.append(nn.Linear(features, int(ctx.num_outputs)))
    return nn.Sequential(*layers)
