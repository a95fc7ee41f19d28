"""The attention module's own maps as an explainer: no gradients, drawn at the input's size."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from medattn.api import NotApplicable, attention_map_kinds

from .base import Explainer


def render_attention(maps: dict[str, torch.Tensor], features: dict[str, torch.Tensor],
                     size: tuple[int, int], kinds: dict[str, str] | None = None) -> dict[str, torch.Tensor]:
    """Attention maps as (B, 1, H, W) images: spatial gates as they are, position attention (B, N, N) by how much
    each position is attended to (column mean), channel weights (B, C, 1, 1) or channel attention (B, C, C)
    (row mean) by weighting the channels of the level they act on. Maps that fit none of these are left out.
    ``kinds``: the map kinds (:func:`medattn.api.attention_map_kinds`); a square map is read as positions only
    when its kind is ``position`` (or no kinds are given), as channels when it is ``channel``, else left out."""
    shapes = {n: tuple(f.shape[1:]) for n, f in features.items() if f.ndim == 4}
    out = {}
    for key, m in maps.items():
        img = _as_image(m.detach().float(), features, shapes, (kinds or {}).get(key))
        if img is not None:
            out[key] = F.interpolate(img, size=size, mode="bilinear", align_corners=False)
    return out


def _as_image(m: torch.Tensor, features: dict[str, torch.Tensor], shapes: dict,
              kind: str | None = None) -> torch.Tensor | None:
    """One map as (B, 1, h, w) at its level's resolution, or None."""
    if m.ndim == 4 and m.shape[1] == 1:
        return m
    if m.ndim == 4 and m.shape[2:] == (1, 1):
        return _weighted(m[:, :, 0, 0], features, shapes)
    if m.ndim == 3 and m.shape[1] == m.shape[2] and kind == "channel":
        return _weighted(m.mean(dim=1), features, shapes)
    if m.ndim == 3 and m.shape[1] == m.shape[2] and kind in (None, "position"):  # None: no kinds given at all
        n = m.shape[1]
        hw = next(((h, w) for c, h, w in reversed(list(shapes.values())) if h * w == n), None)
        if hw is not None:
            return m.mean(dim=1).reshape(-1, 1, *hw)
        return _weighted(m.mean(dim=1), features, shapes)
    return None


def _weighted(weights: torch.Tensor, features: dict[str, torch.Tensor], shapes: dict) -> torch.Tensor | None:
    """sum_c w_c * A_c over the deepest level with as many channels as there are weights."""
    name = next((n for n, s in reversed(list(shapes.items())) if s[0] == weights.shape[1]), None)
    if name is None:
        return None
    return (weights[:, :, None, None] * features[name].detach().float()).sum(dim=1, keepdim=True)


class AttentionMaps(Explainer):
    """The maps the attention module exposes (``model.attention_maps()``), rendered at input resolution.

    ``key`` picks one map; null averages every map, each scaled to [0, 1] per image. Raises NotApplicable for a
    model whose attention exposes no drawable map."""

    name = "attention_maps"

    def attribute(self, model: torch.nn.Module, inputs: torch.Tensor, target: Any) -> torch.Tensor:
        seen: dict[str, Any] = {}
        handle = model.attention.register_forward_pre_hook(lambda mod, args: seen.update(features=args[0]))
        try:
            with torch.no_grad():
                model(inputs)
        finally:
            handle.remove()
        maps = model.attention_maps()
        rendered = render_attention(maps, seen.get("features") or {}, tuple(inputs.shape[-2:]),
                                    attention_map_kinds(model.attention, maps))
        if not rendered:
            raise NotApplicable("the attention module exposes no map that can be drawn over the image")
        key = self.params["key"]
        if key is not None:
            if key not in rendered:
                raise NotApplicable(f"no attention map {key!r}; this model has {', '.join(sorted(rendered))}")
            return rendered[key]
        normed = []
        for v in rendered.values():
            lo = v.amin(dim=(1, 2, 3), keepdim=True)
            hi = v.amax(dim=(1, 2, 3), keepdim=True)
            normed.append((v - lo) / (hi - lo).clamp_min(1e-12))
        return torch.stack(normed).mean(0)
