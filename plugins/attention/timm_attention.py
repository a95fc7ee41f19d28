"""``timm_attn``: any shape-preserving ``timm.layers.create_attn`` module (SE, ECA, CBAM, GC, ...) on chosen levels."""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from medattn.api import AttentionContext, FeatureInfo, UserError, failure_reason

from .taps import feature_level, pool_to


def _record_gate(module: nn.Module, args: Any, output: torch.Tensor) -> None:
    """Forward hook: keep the gate's output on the gate module (survives deepcopy, no reference to the parent);
    with its graph while training, so that a loss term can supervise it."""
    keep = output if module.training and torch.is_grad_enabled() else output.detach()
    module.__dict__.setdefault("_medattn_maps", []).append(keep)


def _level_key(level: str) -> str:
    return level.replace(".", "_")


def create_level_attn(attn_type: str, info: FeatureInfo, kwargs: dict[str, Any], ctx: AttentionContext) -> nn.Module:
    """``create_attn(attn_type, channels, **kwargs)`` for one level, tried once on a map of that level's size, so a
    module that cannot work there (halo needs a side that is a multiple of its block) is refused at build time."""
    from timm.layers import create_attn

    try:
        module = create_attn(attn_type, info.channels, **kwargs)
    except (TypeError, ValueError, AssertionError) as e:
        raise UserError(f"attention.params.kwargs: timm create_attn({attn_type!r}) rejected {kwargs}: "
                        f"{type(e).__name__}: {e}") from None
    h, w = ctx.image_size
    r = info.reduction or max(h, w)  # a global pool is (C, 1, 1)
    side = (max(1, h // r), max(1, w // r))
    try:
        with torch.no_grad():
            module.eval()(torch.zeros(1, info.channels, *side))
    except Exception as e:  # noqa: BLE001 - whatever the library raises, the user gets one line
        reason = failure_reason(e)
        size = f"{h}" if h == w else f"{h}x{w}"
        raise UserError(f"attention.params.type: {attn_type} cannot be built on {ctx.backbone.arch} at {size} px: "
                        f"level {info.name} is {side[0]}x{side[1]} ({reason})") from None
    return module.train()


class TimmAttention(nn.Module):
    """One timm attention module per chosen level; returns the deepest attended level (or all, concatenated)."""

    default_head = {"name": "linear", "params": {}}

    def __init__(self, modules: dict[str, nn.Module], fuse: str):
        super().__init__()
        self.levels = list(modules)  # shallow to deep
        self.fuse = fuse
        self.attn = nn.ModuleDict({_level_key(level): m for level, m in modules.items()})
        self._gates = [(f"{level}/{name}", f"{_level_key(level)}.{name}") for level in self.levels
                       for name, _ in self.attn[_level_key(level)].named_modules()
                       if name == "gate" or name.endswith(".gate")]
        for _, path in self._gates:
            self.attn.get_submodule(path).register_forward_hook(_record_gate)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        for _, path in self._gates:
            self.attn.get_submodule(path).__dict__["_medattn_maps"] = []
        outs = [self.attn[_level_key(level)](features[level]) for level in self.levels]
        if self.fuse == "concat" and len(outs) > 1:
            size = tuple(outs[-1].shape[-2:])
            return torch.cat([pool_to(o, size) for o in outs], dim=1)
        return outs[-1]

    def __deepcopy__(self, memo: dict) -> TimmAttention:
        """A copy (explainers take one) whose kept gate maps carry no graph: after a training forward they do, and
        a tensor with a graph cannot be deep-copied. The original keeps its maps as they were."""
        kept = {path: self.attn.get_submodule(path).__dict__.get("_medattn_maps", []) for _, path in self._gates}
        for path, maps in kept.items():
            self.attn.get_submodule(path).__dict__["_medattn_maps"] = [m.detach() for m in maps]
        try:
            new = self.__class__.__new__(self.__class__)
            memo[id(self)] = new
            new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        finally:
            for path, maps in kept.items():
                self.attn.get_submodule(path).__dict__["_medattn_maps"] = maps
        return new

    def attention_maps(self) -> dict[str, torch.Tensor]:
        """Gate outputs of the last forward: ``level/gate`` -> (B, C, 1, 1) channel or (B, 1, H, W) spatial weights
        (coord's per-row weights: ``other``). No ``attention_map_kinds()``: the shapes say it, as
        :func:`medattn.api.attention_map_kinds` reads an undeclared map."""
        maps = {}
        for key, path in self._gates:
            for i, m in enumerate(self.attn.get_submodule(path).__dict__.get("_medattn_maps", [])):
                maps[key if i == 0 else f"{key}_{i + 1}"] = m  # a gate called twice (coord: height, width)
        return maps


def build_timm_attn(params: dict[str, Any], ctx: AttentionContext) -> nn.Module:
    """timm attention of ``type`` after each of ``levels`` (default: the deepest feature map)."""
    chosen = {feature_level(ctx.backbone, lv, "attention.params.levels").name for lv in params["levels"] or [None]}
    infos = [info for info in ctx.backbone.feature_info if info.name in chosen]  # shallow to deep
    modules = {info.name: create_level_attn(params["type"], info, params["kwargs"], ctx) for info in infos}
    return TimmAttention(modules, params["fuse"])
