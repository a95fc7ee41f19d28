"""The spatial gate module (the heavy part of the plugin, imported lazily)."""
from __future__ import annotations

import torch
from torch import nn

from medattn.api import AttentionContext


class SpatialGate(nn.Module):
    """y = x * sigmoid(g(x)) on the backbone's last level; the gate is exposed as an attention map."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.gate = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, 1, 1))
        self._last: torch.Tensor | None = None

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        x = list(features.values())[-1]  # the final level is the last entry
        weights = torch.sigmoid(self.gate(x))
        self._last = weights.detach()
        return x * weights

    def attention_maps(self) -> dict[str, torch.Tensor]:
        return {} if self._last is None else {"gate": self._last}


def build(params: dict, ctx: AttentionContext) -> SpatialGate:
    """Factory: medattn calls it with the validated params (schema defaults filled in) and an AttentionContext."""
    return SpatialGate(ctx.backbone.feature_info[-1].channels, params["hidden"])
