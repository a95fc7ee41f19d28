"""``none``: no attention, the backbone's final level passes through unchanged."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medattn.api import AttentionContext


class Identity(nn.Module):
    """Returns the last (final) level of the backbone's dict."""

    default_head = {"name": "linear", "params": {}}

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return next(reversed(features.values()))

    def attention_maps(self) -> dict[str, torch.Tensor]:
        """No attention, no maps."""
        return {}


def build_none(params: dict[str, Any], ctx: AttentionContext) -> nn.Module:
    """The identity on the final level."""
    return Identity()
