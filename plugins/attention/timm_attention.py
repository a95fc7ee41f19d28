"""``timm_attn``: any shape-preserving ``timm.layers.create_attn`` module (SE, ECA, CBAM, GC, ...) on chosen levels."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medattn.errors import UserError
from medattn.hookspecs import AttentionContext

from .taps import feature_level, level_channels, pool_to
from .timm_types import TIMM_ATTN_TYPES


def _record_gate(module: nn.Module, args: Any, output: torch.Tensor) -> None:
    """Forward hook: keep the gate's output on the gate module (survives deepcopy, no reference to the parent)."""
    module.__dict__.setdefault("_medattn_maps", []).append(output.detach())


class TimmAttention(nn.Module):
    """One timm attention module per chosen level; returns the deepest attended level (or all, concatenated)."""

    default_head = {"name": "linear", "params": {}}

    def __init__(self, backbone: Any, attn_type: str, levels: list[str], kwargs: dict[str, Any], fuse: str):
        super().__init__()
        from timm.layers import create_attn

        order = list(getattr(backbone, "available_levels", levels))
        self.levels = sorted(levels, key=order.index)
        self.fuse = fuse
        self.attn = nn.ModuleDict()
        for level in self.levels:
            try:
                module = create_attn(attn_type, level_channels(backbone, level), **kwargs)
            except (TypeError, ValueError, AssertionError) as e:
                raise UserError(f"attention.params.kwargs: timm create_attn({attn_type!r}) rejected {kwargs}: "
                                f"{type(e).__name__}: {e}") from None
            self.attn[self._key(level)] = module
        self._gates = [(f"{level}/{name}", f"{self._key(level)}.{name}") for level in self.levels
                       for name, _ in self.attn[self._key(level)].named_modules()
                       if name == "gate" or name.endswith(".gate")]
        for _, path in self._gates:
            self.attn.get_submodule(path).register_forward_hook(_record_gate)

    @staticmethod
    def _key(level: str) -> str:
        return level.replace(".", "_")

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        for _, path in self._gates:
            self.attn.get_submodule(path).__dict__["_medattn_maps"] = []
        outs = [self.attn[self._key(level)](features[level]) for level in self.levels]
        if self.fuse == "concat" and len(outs) > 1:
            size = tuple(outs[-1].shape[-2:])
            return torch.cat([pool_to(o, size) for o in outs], dim=1)
        return outs[-1]

    def attention_maps(self) -> dict[str, torch.Tensor]:
        """Gate outputs of the last forward: ``level/gate`` -> (B, C, 1, 1) channel or (B, 1, H, W) spatial weights."""
        maps = {}
        for key, path in self._gates:
            for i, m in enumerate(self.attn.get_submodule(path).__dict__.get("_medattn_maps", [])):
                maps[key if i == 0 else f"{key}_{i + 1}"] = m  # a gate called twice (coord: height, width)
        return maps


def build_timm_attn(params: dict[str, Any], ctx: AttentionContext) -> nn.Module:
    """timm attention of ``type`` after each of ``levels`` (default: the deepest feature map)."""
    params = params or {}
    attn_type = params.get("type", "se")
    if attn_type not in TIMM_ATTN_TYPES:
        raise UserError(f"attention.params.type: {attn_type!r} is not one of {', '.join(TIMM_ATTN_TYPES)}")
    levels = list(params.get("levels") or [None])
    levels = [feature_level(ctx.backbone, lv, "attention.params.levels") for lv in levels]
    return TimmAttention(ctx.backbone, attn_type, list(dict.fromkeys(levels)), dict(params.get("kwargs") or {}),
                         params.get("fuse", "last"))
