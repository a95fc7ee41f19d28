"""DANet position (PAM) and channel (CAM) attention, AG-PAD (Chen & Ross) and the general ``dual`` component.

PAM and CAM are written by hand: neither torchvision nor timm provides them (timm's ``nl`` non-local block is a
different normalisation without the C/8 query/key and the zero-initialised gamma).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medattn.api import AttentionContext

from .position import attend, attention_map, keep_for_maps, state_without_graph
from .taps import feature_level

BN_PRESETS = {"torch": {"momentum": 0.1, "eps": 1e-5}, "keras": {"momentum": 0.01, "eps": 1e-3}}


class PositionAttention(nn.Module):
    """DANet PAM: 1x1 projections (query, key to C/r; value to C), softmax per query row, y = gamma * out + x.

    ``impl``: ``naive`` builds the N x N matrix (the published code), ``sdpa`` goes through
    scaled_dot_product_attention without it, ``auto`` picks (see ``position.resolve``). The matrix for
    explanations is built only when ``attention_map()`` asks, from the last forward's queries and keys."""

    def __init__(self, channels: int, reduction: int = 8, bias: bool = True, he_normal: bool = False,
                 impl: str = "auto"):
        super().__init__()
        inner = max(1, channels // reduction)
        self.impl = impl
        self.query = nn.Conv2d(channels, inner, 1, bias=bias)
        self.key = nn.Conv2d(channels, inner, 1, bias=bias)
        self.value = nn.Conv2d(channels, channels, 1, bias=bias)
        self.gamma = nn.Parameter(torch.zeros(1))
        if he_normal:  # Keras he_normal (untruncated here), as the AG-PAD code initialises its projections
            for conv in (self.query, self.key, self.value):
                nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
        self._last: tuple[torch.Tensor, torch.Tensor, tuple[int, int]] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.query(x).flatten(2)  # (B, C', N)
        k = self.key(x).flatten(2)
        v = self.value(x).flatten(2)  # (B, C, N)
        out = attend(q, k, v, "row", self.impl)  # out[:, c, i] = sum_j softmax_j(q_i . k_j) v[c, j]
        self._last = (keep_for_maps(self, q), keep_for_maps(self, k), (h, w))
        return self.gamma * out.view(b, c, h, w) + x

    def __getstate__(self) -> dict:
        return state_without_graph(super().__getstate__())

    @property
    def last_map(self) -> torch.Tensor | None:
        """The position weights of the last forward ((B, N, N), or a (B, 1, h, w) summary for large N), with the
        graph when that forward trained (see ``position.keep_for_maps``)."""
        return None if self._last is None else attention_map(*self._last[:2], "row", self._last[2])


class ChannelAttention(nn.Module):
    """DANet CAM: softmax over the channel Gram matrix, y = gamma * out + x.

    ``order="danet"`` aggregates out = S x (Fu et al.; with ``max_trick`` the energy is max - energy);
    ``order="keras"`` is the AG-PAD code: with A = x as (N, C), out = A S, i.e. S transposed.
    """

    def __init__(self, max_trick: bool = True, order: str = "danet"):
        super().__init__()
        if order not in ("danet", "keras"):
            raise ValueError(order)
        self.max_trick, self.order = max_trick, order
        self.gamma = nn.Parameter(torch.zeros(1))
        self.last_map: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        a = x.flatten(2)  # (B, C, N)
        energy = torch.bmm(a, a.transpose(1, 2))  # (B, C, C)
        if self.max_trick:
            energy = energy.amax(dim=-1, keepdim=True) - energy
        attn = torch.softmax(energy, dim=-1)
        out = torch.bmm(attn if self.order == "danet" else attn.transpose(1, 2), a)
        self.last_map = attn.detach()
        return self.gamma * out.view(b, c, h, w) + x


def _bn(channels: int, bn: dict[str, float]) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=bn["eps"], momentum=bn["momentum"])


class AGPAD(nn.Module):
    """Chen & Ross AG-PAD: ReLU(last level) -> PAM and CAM branches -> conv3x3-BN-ReLU-Drop-conv3x3 each -> sum
    -> Dropout -> conv1x1-BN-ReLU. The paper's head (GAP + Linear) is the default head ``linear``."""

    default_head = {"name": "linear", "params": {}}

    def __init__(self, level: str, channels: int, width: int = 512, reduction: int = 8, dropout: float = 0.5,
                 relu_input: bool = True, bn: dict[str, float] | None = None, impl: str = "auto"):
        super().__init__()
        bn = bn or BN_PRESETS["keras"]
        self.level, self.relu_input = level, relu_input
        self.pam = PositionAttention(channels, reduction, bias=False, he_normal=True, impl=impl)
        self.cam = ChannelAttention(max_trick=False, order="keras")

        def branch() -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(channels, width, 3, padding=1, bias=False), _bn(width, bn),
                                 nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Conv2d(width, width, 3, padding=1, bias=False))

        self.pam_conv, self.cam_conv = branch(), branch()
        self.dropout = nn.Dropout(dropout)
        self.fuse = nn.Sequential(nn.Conv2d(width, width, 1), _bn(width, bn), nn.ReLU(inplace=True))

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        x = features[self.level]
        if self.relu_input:
            x = F.relu(x)  # Keras DenseNet121 ends with BN + ReLU; torchvision's norm5 has no ReLU
        y = self.pam_conv(self.pam(x)) + self.cam_conv(self.cam(x))
        return self.fuse(self.dropout(y))

    def attention_maps(self) -> dict[str, torch.Tensor]:
        """PAM weights (B, N, N; a (B, 1, h, w) summary above position.MAP_FULL_LIMIT positions), built now from
        the last forward's queries and keys, and CAM weights (B, C, C) of the last forward."""
        maps = {"pam": self.pam.last_map, "cam": self.cam.last_map}
        return {k: m for k, m in maps.items() if m is not None}

    def attention_map_kinds(self) -> dict[str, str]:
        """``pam`` is position attention, ``cam`` channel attention (it has no place in the image)."""
        return {"pam": "position", "cam": "channel"}


class DualAttention(nn.Module):
    """DANet position + channel attention on one level (gamma 0: the identity at init), fused by sum or mean."""

    default_head = {"name": "linear", "params": {}}

    def __init__(self, level: str, channels: int, reduction: int = 8, fuse: str = "sum", impl: str = "auto"):
        super().__init__()
        self.level, self.fuse = level, fuse
        self.pam = PositionAttention(channels, reduction, bias=True, impl=impl)
        self.cam = ChannelAttention(max_trick=True, order="danet")

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        x = features[self.level]
        y = self.pam(x) + self.cam(x)
        return y / 2 if self.fuse == "mean" else y

    def attention_maps(self) -> dict[str, torch.Tensor]:
        """PAM weights (B, N, N; a (B, 1, h, w) summary above position.MAP_FULL_LIMIT positions), built now from
        the last forward's queries and keys, and CAM weights (B, C, C) of the last forward."""
        maps = {"pam": self.pam.last_map, "cam": self.cam.last_map}
        return {k: m for k, m in maps.items() if m is not None}

    def attention_map_kinds(self) -> dict[str, str]:
        """``pam`` is position attention, ``cam`` channel attention (it has no place in the image)."""
        return {"pam": "position", "cam": "channel"}


def build_agpad(params: dict[str, Any], ctx: AttentionContext) -> nn.Module:
    """AG-PAD dual attention on the deepest feature map (densenet121 norm5 + ReLU in the paper)."""
    level = feature_level(ctx.backbone, params["level"], "attention.params.level")
    bn = dict(BN_PRESETS[params["bn"]])
    for key in ("momentum", "eps"):
        if params[f"bn_{key}"] is not None:
            bn[key] = params[f"bn_{key}"]
    return AGPAD(level.name, level.channels, width=params["width"], reduction=params["reduction"],
                 dropout=params["dropout"], relu_input=params["relu_input"], bn=bn,
                 impl=params.get("attention_impl", "auto"))


def build_dual(params: dict[str, Any], ctx: AttentionContext) -> nn.Module:
    """DANet PAM + CAM on one level of any backbone."""
    level = feature_level(ctx.backbone, params["level"], "attention.params.level")
    return DualAttention(level.name, level.channels, params["reduction"], params["fuse"], params.get("attention_impl", "auto"))
