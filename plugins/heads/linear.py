"""Single-layer heads: ``linear`` (global average pool + Linear) and ``flatten_linear`` (goncalves2021's baseline)."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from medattn.api import HeadContext, UserError


def _in_shape(ctx: HeadContext, name: str) -> tuple[int, ...]:
    shape = tuple(int(s) for s in ctx.in_shape)
    if len(shape) not in (1, 3):
        raise UserError(f"head {name}: expects a (C, H, W) feature map or a (D,) vector, got shape {shape}")
    return shape


class LinearHead(nn.Module):
    """Global average pool (for a feature map), optional dropout, one Linear."""

    def __init__(self, in_features: int, num_outputs: int, dropout: float = 0.0):
        super().__init__()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_features, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = self.pool(x)
        return self.fc(self.dropout(x))


def build_linear(params: dict[str, Any], ctx: HeadContext) -> nn.Module:
    """GAP (when the input is a feature map) + optional dropout + Linear(C, num_outputs)."""
    shape = _in_shape(ctx, "linear")
    return LinearHead(shape[0], ctx.num_outputs, params["dropout"])


def build_flatten_linear(params: dict[str, Any], ctx: HeadContext) -> nn.Module:
    """Flatten without pooling + one Linear: goncalves2021's baseline head (densenet121 at 224: Linear(50176, 1))."""
    shape = _in_shape(ctx, "flatten_linear")
    return nn.Sequential(nn.Flatten(1), nn.Linear(math.prod(shape), ctx.num_outputs))
