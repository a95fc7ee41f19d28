"""MLDAM: multi-level dual attention, as published (Mishra et al. 2019) and as ported by Goncalves & Cardoso 2021.

PAM, the Gram-matrix CAM and NormL are written by hand: no library provides these parameter-free variants.
All taps come from the backbone's single forward pass (goncalves2021's port re-ran the backbone for every tap).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medattn.api import AttentionContext, UserError

from .position import attend, attention_map, keep_for_maps, naive, state_without_graph
from .taps import level_info, pool_to, tile_channels

# Default taps per backbone arch and variant: q, k (pooled to v's size), v (PAM values), x (CAM input).
TAPS: dict[str, dict[str, dict[str, str]]] = {
    "mishra2019": {
        "vgg16": {"q": "conv4_1", "k": "conv4_3", "v": "conv5_1", "x": "conv5_3"},
        "resnet50": {"q": "layer3.0", "k": "layer3", "v": "layer4.0", "x": "layer4"},
        "resnet18": {"q": "layer3.0", "k": "layer3", "v": "layer4.0", "x": "layer4"},
        "densenet121": {"q": "denseblock3", "k": "denseblock4", "v": "denseblock4", "x": "norm5"},
    },
    "goncalves2021": {
        "vgg16": {"q": "pool3", "k": "pool4", "v": "pool5", "x": "pool5"},
        "resnet50": {"q": "layer2", "k": "layer3", "v": "layer4", "x": "layer4"},
        "resnet18": {"q": "layer2", "k": "layer3", "v": "layer4", "x": "layer4"},
        "densenet121": {"q": "denseblock2", "k": "denseblock3", "v": "norm5", "x": "norm5"},
    },
}

HEADS = {
    "mishra2019": {"name": "mlp", "params": {"hidden": [512, 512], "dropout": 0.25}},
    "goncalves2021": {"name": "mlp", "params": {"hidden": ["C", "C/2"], "dropout": 0.25}},
}


def pam_mishra(v: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mishra PAM as published (the reference): E = q k^T over positions, softmax per query row, out = A v,
    plus v. Returns (y, A)."""
    b, c, h, w = v.shape
    out, attn = naive(q.flatten(2), k.flatten(2), v.flatten(2), "row")  # out[c, i] = sum_j A[i, j] v[c, j]
    return out.view(b, c, h, w) + v, attn


def pam_goncalves(v: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """goncalves2021's PAM (the reference): softmax over the whole N*N energy, transposed aggregation out = v E,
    plus v. Returns (y, E)."""
    b, c, h, w = v.shape
    out, attn = naive(q.flatten(2), k.flatten(2), v.flatten(2), "global")  # out[c, j] = sum_i v[c, i] E[i, j]
    return out.view(b, c, h, w) + v, attn


SOFTMAX = {"mishra": "row", "goncalves": "global"}


def pam(v: torch.Tensor, q: torch.Tensor, k: torch.Tensor, kind: str, impl: str = "auto") -> torch.Tensor:
    """The PAM output ``v + out`` of ``kind`` (mishra | goncalves) by ``impl`` (auto | sdpa | naive)."""
    b, c, h, w = v.shape
    return attend(q.flatten(2), k.flatten(2), v.flatten(2), SOFTMAX[kind], impl).view(b, c, h, w) + v


def cam_gram(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The MLDAM CAM: G = x x^T over channels with no softmax, out = G x, plus x. Returns (y, G)."""
    b, c, h, w = x.shape
    a = x.flatten(2)
    gram = torch.bmm(a, a.transpose(1, 2))  # (B, C, C), symmetric: G x equals Keras' x G
    return torch.bmm(gram, a).view(b, c, h, w) + x, gram


class NormL(nn.Module):
    """Mishra's NormL: per-position layer norm over channels, (x - mean) / (std + eps) * a + b (population std)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.a = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.b = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        std = x.std(dim=1, keepdim=True, unbiased=False)
        return (x - mean) / (std + self.eps) * self.a + self.b


class MLDAM(nn.Module):
    """PAM(v, q, k) and CAM(x), each ReLU then a norm, averaged: (B, C, h, w) at v's resolution."""

    def __init__(self, variant: str, taps: dict[str, str], channels: dict[str, int], pam: str, norm: str,
                 eps: float = 1e-6, bn_momentum: float = 0.1, impl: str = "auto",
                 pool: dict[str, int | None] | None = None):
        super().__init__()
        self.variant, self.taps, self.pam_kind, self.tile = variant, dict(taps), pam, variant == "goncalves2021"
        self.impl, self.pool = impl, dict(pool or {})  # pool: static AvgPool kernels of q and k (exportable)
        self.default_head = {"name": HEADS[variant]["name"], "params": dict(HEADS[variant]["params"])}
        c = channels["v"]

        def make_norm() -> nn.Module:
            if norm == "batchnorm":
                return nn.BatchNorm2d(c, eps=eps, momentum=bn_momentum)
            return NormL(c, eps)

        self.pam_norm, self.cam_norm = make_norm(), make_norm()
        self._last: dict[str, torch.Tensor] = {}

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        v, x = features[self.taps["v"]], features[self.taps["x"]]
        size = tuple(v.shape[-2:])
        q = pool_to(features[self.taps["q"]], size, self.pool.get("q"))
        k = pool_to(features[self.taps["k"]], size, self.pool.get("k"))
        if self.tile:
            q, k = tile_channels(q, v.shape[1]), tile_channels(k, v.shape[1])
        p = pam(v, q, k, self.pam_kind, self.impl)
        cm, gram = cam_gram(x)
        self._last = {"q": keep_for_maps(self, q), "k": keep_for_maps(self, k), "cam": gram.detach()}
        return (self.pam_norm(F.relu(p)) + self.cam_norm(F.relu(cm))) / 2

    def __getstate__(self) -> dict:
        return state_without_graph(super().__getstate__())

    def attention_maps(self) -> dict[str, torch.Tensor]:
        """PAM weights (B, N, N; a (B, 1, h, w) summary above position.MAP_FULL_LIMIT positions), built now from
        the last forward's queries and keys (with their graph when it trained: a loss term can supervise them),
        and the CAM Gram matrix (B, C, C) of the last forward."""
        if not self._last:
            return {}
        q, k = self._last["q"], self._last["k"]
        pam_map = attention_map(q.flatten(2), k.flatten(2), SOFTMAX[self.pam_kind], tuple(q.shape[-2:]))
        return {"pam": pam_map, "cam": self._last["cam"]}

    def attention_map_kinds(self) -> dict[str, str]:
        """``pam`` is position attention, ``cam`` channel attention (it has no place in the image)."""
        return {"pam": "position", "cam": "channel"}


def _taps(params: dict[str, Any], ctx: AttentionContext) -> dict[str, str]:
    """The q, k, v, x levels: ``taps`` or the variant's table for the backbone's arch."""
    taps = params["taps"] or TAPS[params["variant"]].get(ctx.backbone.arch)
    if not taps:
        raise UserError(f"attention.params.taps: mldam has no default taps for backbone {ctx.backbone.arch!r} "
                        f"(defaults exist for {', '.join(TAPS[params['variant']])}); give taps: {{q: LEVEL, "
                        f"k: LEVEL, v: LEVEL, x: LEVEL}} from {', '.join(i.name for i in ctx.backbone.feature_info)}")
    return taps


def _check_channels(taps: dict[str, str], channels: dict[str, int], tiled: bool) -> None:
    """The tap channels the PAM and CAM can combine."""
    if channels["v"] != channels["x"]:
        raise UserError(f"attention.params.taps: v ({taps['v']}, {channels['v']} ch) and x ({taps['x']}, "
                        f"{channels['x']} ch) need the same channels to be averaged")
    if tiled and any(channels["v"] % channels[r] for r in ("q", "k")):
        raise UserError(f"attention.params.taps: q and k channels ({channels['q']}, {channels['k']}) must divide "
                        f"v's {channels['v']} to be tiled")
    if not tiled and channels["q"] != channels["k"]:
        raise UserError(f"attention.params.taps: q ({taps['q']}, {channels['q']} ch) and k ({taps['k']}, "
                        f"{channels['k']} ch) need the same channels (mishra2019 has no projections)")


def build_mldam(params: dict[str, Any], ctx: AttentionContext) -> nn.Module:
    """MLDAM with ``variant`` mishra2019 (published) or goncalves2021 (that paper's port), taps from one pass."""
    variant = params["variant"]
    taps = _taps(params, ctx)
    bad = [f"{r}={lv!r}" for r, lv in taps.items() if lv not in {i.name for i in ctx.backbone.feature_info}]
    if bad:
        raise UserError(f"attention.params.taps: {', '.join(bad)} not levels of backbone {ctx.backbone.arch}; "
                        f"levels: {', '.join(i.name for i in ctx.backbone.feature_info)}")
    channels = {r: level_info(ctx.backbone, taps[r], "attention.params.taps").channels for r in ("q", "k", "v", "x")}
    tiled = variant == "goncalves2021"
    _check_channels(taps, channels, tiled)
    pam = params["pam"] or ("goncalves" if tiled else "mishra")
    norm = params["norm"] or ("batchnorm" if tiled else "layernorm")
    return MLDAM(variant, taps, channels, pam, norm, params["eps"], params["bn_momentum"],
                 params.get("attention_impl", "auto"), static_pool(ctx, taps))


def static_pool(ctx: AttentionContext, taps: dict[str, str]) -> dict[str, int | None]:
    """The AvgPool kernel that brings q and k to v's size, from the levels' reductions (a constant, so an exported
    graph keeps it: ONNX needs pooling kernels fixed), or None where the reductions give no whole kernel."""
    red = {r: level_info(ctx.backbone, taps[r], "attention.params.taps").reduction for r in ("q", "k", "v")}
    return {r: red["v"] // red[r] if red[r] and red["v"] and red["v"] % red[r] == 0 else None for r in ("q", "k")}
