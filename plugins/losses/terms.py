"""The built-in loss terms: classification, attention_mask, rrr, gain and mask_fraction (see docs/guided.md)."""
from __future__ import annotations

import dataclasses
import math
import zlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medattn.api import LossBatch, LossContext, UserError

from .common import (
    EPS,
    label_probability,
    mask_at,
    mask_weights,
    outside_fraction,
    running_stats_kept,
    weighted_mean,
)


class Classification(nn.Module):
    """The model's own loss: BCE-with-logits (one output) or cross-entropy, with ``train.class_weights``."""

    def forward(self, batch: LossBatch) -> torch.Tensor:
        return batch.classification(batch.logits)


def spatial_maps(attention: dict[str, torch.Tensor], size: tuple[int, int], keys: list[str]) -> dict[str, torch.Tensor]:
    """The attention maps that have a place in the image, as (B, 1, h, w): spatial gates as they are, position
    attention (B, N, N) as how much each position is attended to. Channel weights have no place: left out."""
    out = {}
    for key, m in attention.items():
        if keys and key not in keys:
            continue
        if m.ndim == 4 and m.shape[1] == 1 and m.shape[-2:] != (1, 1):
            out[key] = m
        elif m.ndim == 3 and m.shape[1] == m.shape[2]:
            n = m.shape[1]
            h = max(1, round(math.sqrt(n * size[0] / size[1])))
            if n % h == 0:
                out[key] = m.mean(dim=1).reshape(-1, 1, h, n // h)
    return out


class AttentionMask(nn.Module):
    """Supervises the attention module's own spatial maps with the lesion mask: the share of each map's mass
    outside the mask (``energy``), or binary cross-entropy of the map against the mask at its resolution (``bce``)."""

    needs_attention_maps = True

    def __init__(self, penalty: str, keys: list[str]) -> None:
        super().__init__()
        self.penalty, self.keys = penalty, keys

    def forward(self, batch: LossBatch) -> torch.Tensor:
        maps = spatial_maps(batch.attention, tuple(batch.images.shape[-2:]), self.keys)
        if not maps:
            shown = ", ".join(f"{k} {tuple(v.shape)}" for k, v in batch.attention.items()) or "none"
            raise UserError(f"loss attention_mask: the attention module exposes no spatial map to supervise "
                            f"(attention_maps(): {shown}); choose one with spatial attention (e.g. timm_attn "
                            f"type cbam, mldam, dual, agpad) or drop the term")
        if torch.is_grad_enabled() and not any(m.requires_grad for m in maps.values()):
            raise UserError("loss attention_mask: the attention maps carry no gradient: the attention module "
                            "detaches what attention_maps() returns while training, so they cannot be supervised")
        w = mask_weights(batch, "attention_mask")
        per_image = torch.stack([self._penalty(m.float(), batch.masks) for m in maps.values()]).mean(0)
        return weighted_mean(per_image, w)

    def _penalty(self, m: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        if self.penalty == "energy":
            return outside_fraction(m.abs(), masks)
        target = mask_at(masks, tuple(m.shape[-2:]))
        return F.binary_cross_entropy(m.clamp(EPS, 1 - EPS), target, reduction="none").flatten(1).mean(1)


def log_probabilities(batch: LossBatch) -> torch.Tensor:
    """(B,) the sum over classes of log p (RRR's explained quantity)."""
    z = batch.logits.float()
    if batch.model.output == "sigmoid":
        z = z.reshape(-1)
        return F.logsigmoid(z) + F.logsigmoid(-z)
    return F.log_softmax(z, dim=1).sum(1)


class RightReasons(nn.Module):
    """Right for the Right Reasons: input gradients outside the lesion are penalised (double backprop), as their
    squared sum (``l2``) or as the share of the gradient's magnitude that lies outside (``fraction``)."""

    needs_input_gradients = True

    def __init__(self, penalty: str, explained: str) -> None:
        super().__init__()
        self.penalty, self.explained = penalty, explained

    def forward(self, batch: LossBatch) -> torch.Tensor:
        w = mask_weights(batch, "rrr")
        out = log_probabilities(batch) if self.explained == "log_probabilities" else batch.class_logit()
        grads = batch.input_gradients(out)
        outside = 1 - batch.masks
        if self.penalty == "l2":
            per_image = ((grads * outside) ** 2).flatten(1).sum(1)
        else:
            per_image = outside_fraction(grads.sum(1, keepdim=True).abs(), batch.masks)
        return weighted_mean(per_image, w)


class AttentionMining(nn.Module):
    """GAIN: a Grad-CAM of each image's own class on the attention module's output (the map the head reads);
    the region it points at is erased softly and the class probability left in the erased image is penalised
    (mining), and the Grad-CAM outside the lesion is penalised (the mask term)."""

    needs_features = True

    def __init__(self, params: dict[str, Any]) -> None:
        super().__init__()
        self.p = params

    def forward(self, batch: LossBatch) -> torch.Tensor:
        a = batch.attended
        if a is None or a.ndim != 4:
            raise UserError("loss gain: the attention module gives no feature map (B, C, H, W) for a Grad-CAM "
                            f"(its output: {None if a is None else tuple(a.shape)})")
        grads = torch.autograd.grad(batch.class_logit().sum(), a, create_graph=True)[0]
        cam = F.relu((grads.mean(dim=(2, 3), keepdim=True) * a).sum(1, keepdim=True))
        cam = F.interpolate(cam, size=tuple(batch.images.shape[-2:]), mode="bilinear", align_corners=False)
        scaled = cam / (cam.flatten(1).amax(1).view(-1, 1, 1, 1) + EPS)
        total = batch.logits.new_zeros(()).float()
        if self.p["mining_weight"] > 0:
            soft = torch.sigmoid(self.p["omega"] * (scaled - self.p["sigma"]))
            erased = batch.images - soft * batch.images
            with running_stats_kept(batch.model):
                left = label_probability(batch, batch.model(erased))
            total = total + self.p["mining_weight"] * left.mean()
        if self.p["mask_weight"] > 0:
            w = mask_weights(batch, "gain")
            if self.p["mask_penalty"] == "energy":
                per_image = outside_fraction(cam, batch.masks)
            else:
                per_image = ((scaled - batch.masks) ** 2).flatten(1).mean(1)
            total = total + self.p["mask_weight"] * weighted_mean(per_image, w)
        return total


class MaskFraction(nn.Module):
    """Another mask term on a fixed share of the training images (chosen by image id); the other images
    contribute no mask (the classification term still trains on them): annotations are rarely complete."""

    def __init__(self, inner: nn.Module, fraction: float) -> None:
        super().__init__()
        self.inner, self.fraction = inner, fraction
        self.needs_input_gradients = getattr(inner, "needs_input_gradients", False)
        self.needs_features = getattr(inner, "needs_features", False)
        self.needs_attention_maps = getattr(inner, "needs_attention_maps", False)

    def forward(self, batch: LossBatch) -> torch.Tensor:
        keep = torch.tensor([annotated(i, self.fraction) for i in batch.ids], dtype=torch.float32,
                            device=batch.labels.device)
        if batch.mask_weight is not None:
            keep = keep * batch.mask_weight.to(keep)
        return self.inner(dataclasses.replace(batch, mask_weight=keep))


def annotated(image_id: str, fraction: float) -> bool:
    """Whether an image is among the annotated share: a hash of its id, the same in every epoch and run."""
    return zlib.crc32(image_id.encode()) / 2**32 < fraction


def build_classification(params: dict[str, Any], ctx: LossContext) -> nn.Module:
    return Classification()


def build_attention_mask(params: dict[str, Any], ctx: LossContext) -> nn.Module:
    return AttentionMask(params["penalty"], list(params["maps"]))


def build_rrr(params: dict[str, Any], ctx: LossContext) -> nn.Module:
    return RightReasons(params["penalty"], params["explained"])


def build_gain(params: dict[str, Any], ctx: LossContext) -> nn.Module:
    return AttentionMining(params)


def build_mask_fraction(params: dict[str, Any], ctx: LossContext) -> nn.Module:
    from . import SCHEMAS

    name = params["term"]
    schema = SCHEMAS[name]["properties"]
    inner = {k: p["default"] for k, p in schema.items() if "default" in p} | dict(params["params"])
    return MaskFraction(BUILDERS[name](inner, ctx), float(params["fraction"]))


BUILDERS = {"attention_mask": build_attention_mask, "rrr": build_rrr, "gain": build_gain}
