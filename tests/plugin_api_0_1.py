"""An attention plugin as written against the 0.1 plugin API (the backbone's available_levels / request_levels /
level_channels and dict entries of feature_info): 0.2 must run it, with warnings, not crash."""
from __future__ import annotations

import torch
from torch import nn

from medattn.api import Component, hookimpl


class OldGate(nn.Module):
    def __init__(self, level: str, channels: int) -> None:
        super().__init__()
        self.level = level
        self.gate = nn.Conv2d(channels, 1, 1)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        x = features[self.level]
        return x * torch.sigmoid(self.gate(x))


def build(params: dict, ctx) -> OldGate:
    backbone = ctx.backbone
    level = params.get("level") or backbone.spatial_level
    if level not in backbone.available_levels:
        raise ValueError(f"no level {level}")
    backbone.request_levels([level])
    assert backbone.feature_info[-1]["channels"] == backbone.level_channels(backbone.final_level)
    return OldGate(level, backbone.level_channels(level))


@hookimpl
def medattn_components() -> list[Component]:
    return [Component(kind="attention", name="old_gate", factory=build, description="a 0.1-API gate",
                      params_schema={"type": "object", "properties": {"level": {"type": "string", "default": ""}}},
                      defaults={"head": {"name": "linear", "params": {}}})]
