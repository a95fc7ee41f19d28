"""The built-in loss terms: classification, attention_mask, rrr, rrr_gradcam, gain and mask_fraction (see
docs/guided.md)."""
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
    penalised_region,
    running_stats_kept,
    weighted_mean,
)


class Classification(nn.Module):
    """The model's own loss: BCE-with-logits (one output) or cross-entropy, with ``train.class_weights``."""

    def forward(self, batch: LossBatch) -> torch.Tensor:
        return batch.classification(batch.logits)


def spatial_maps(attention: dict[str, torch.Tensor], kinds: dict[str, str], size: tuple[int, int],
                 keys: list[str]) -> dict[str, torch.Tensor]:
    """The attention maps that have a place in the image, as (B, 1, h, w): spatial gates as they are, position
    attention (B, N, N) as how much each position is attended to (its column-mean summary as it is). Which is
    which comes from the module's declared kinds (:func:`medattn.api.attention_map_kinds`), never from the
    shape alone: channel attention (B, C, C) is square too. ``keys``: only these (each must be a spatial or
    position map of the module: see :func:`map_key_problems`)."""
    out = {}
    for key, m in attention.items():
        kind = kinds.get(key, "other")
        if (keys and key not in keys) or kind not in ("spatial", "position"):
            continue
        if m.ndim == 4 and m.shape[1] == 1:
            out[key] = m
        elif kind == "position" and m.ndim == 3 and m.shape[1] == m.shape[2]:
            n = m.shape[1]
            h = max(1, round(math.sqrt(n * size[0] / size[1])))
            if n % h == 0:
                out[key] = m.mean(dim=1).reshape(-1, 1, h, n // h)
    return out


def map_key_problems(keys: list[str], kinds: dict[str, str]) -> list[tuple[int, str]]:
    """(index in ``maps``, message) for each listed key that is not a map of the module, or has no place in the
    image (a channel map), with a did-you-mean."""
    import difflib

    usable = sorted(k for k, kind in kinds.items() if kind in ("spatial", "position"))
    out = []
    for i, key in enumerate(keys):
        if key not in kinds:
            close = difflib.get_close_matches(key, list(kinds), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            out.append((i, f"{key!r} is not a map of this attention module{hint}; it has "
                           f"{', '.join(sorted(kinds)) or 'none'}"))
        elif kinds[key] not in ("spatial", "position"):
            out.append((i, f"{key!r} is a {kinds[key]} map: it has no place in the image to supervise (spatial or "
                           f"position maps: {', '.join(usable) or 'none'})"))
    return out


def probe_maps(model: nn.Module, size: tuple[int, int]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The attention maps of one forward of a blank image (eval, no gradient) and their kinds: what a term can
    check its keys against before training."""
    from medattn.api import attention_map_kinds

    first = next((p for p in model.parameters()), None)
    if first is None:
        return {}, {}
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, int(model.backbone.in_chans), *size, device=first.device))
        maps = model.attention_maps() if hasattr(model, "attention_maps") else {}
    finally:
        model.train(was)
    return maps, attention_map_kinds(getattr(model, "attention", None), maps)


class AttentionMask(nn.Module):
    """Supervises the attention module's own spatial maps with the lesion mask: the share of each map's mass
    outside the mask (``energy``), or binary cross-entropy of the map against the mask at its resolution (``bce``)."""

    needs_attention_maps = True

    def __init__(self, penalty: str, keys: list[str], image_size: tuple[int, int] = (224, 224)) -> None:
        super().__init__()
        self.penalty, self.keys, self.image_size = penalty, keys, tuple(image_size)
        self._kinds: tuple[frozenset, dict[str, str]] | None = None  # (map keys, their kinds), checked once

    def model_problems(self, model: nn.Module) -> list[tuple[tuple, str]]:
        """(path under the term's params, message) for each ``maps`` key the model does not expose as a spatial
        or position map (``medattn validate``)."""
        if not self.keys:
            return []
        _, kinds = probe_maps(model, self.image_size)
        return [(("maps", i), message) for i, message in map_key_problems(self.keys, kinds)]

    def map_kinds(self, batch: LossBatch) -> dict[str, str]:
        """The kinds of the batch's maps, with ``maps`` checked against them: once per set of map keys (the
        module's maps keep their kinds from step to step)."""
        from medattn.api import attention_map_kinds

        keys = frozenset(batch.attention)
        if self._kinds is None or self._kinds[0] != keys:
            kinds = attention_map_kinds(getattr(batch.model, "attention", None), batch.attention)
            problems = map_key_problems(self.keys, kinds)
            if problems:
                raise UserError(f"loss attention_mask: params.maps.{problems[0][0]}: {problems[0][1]}")
            self._kinds = (keys, kinds)
        return self._kinds[1]

    def forward(self, batch: LossBatch) -> torch.Tensor:
        kinds = self.map_kinds(batch)
        maps = spatial_maps(batch.attention, kinds, tuple(batch.images.shape[-2:]), self.keys)
        if not maps:
            shown = ", ".join(f"{k} {tuple(v.shape)} {kinds[k]}" for k, v in batch.attention.items()) or "none"
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
        # binary_cross_entropy is refused under CUDA autocast (unsafe in half precision): computed in float32
        with torch.autocast(device_type=m.device.type, enabled=False):
            return F.binary_cross_entropy(m.float().clamp(EPS, 1 - EPS), target.float(),
                                          reduction="none").flatten(1).mean(1)


def log_probabilities(batch: LossBatch) -> torch.Tensor:
    """(B,) the sum over classes of log p (RRR's explained quantity)."""
    z = batch.logits.float()
    if batch.model.output == "sigmoid":
        z = z.reshape(-1)
        return F.logsigmoid(z) + F.logsigmoid(-z)
    return F.log_softmax(z, dim=1).sum(1)


class RightReasons(nn.Module):
    """Right for the Right Reasons: input gradients in the penalised region (outside the lesion, or inside the
    confound mask) are penalised (double backprop), as their squared sum (``l2``, Ross et al. 2017) or as the
    share of the gradient's magnitude that lies there (``fraction``)."""

    needs_input_gradients = True

    def __init__(self, penalty: str, explained: str, region: str = "outside_mask") -> None:
        super().__init__()
        self.penalty, self.explained, self.region = penalty, explained, region

    def forward(self, batch: LossBatch) -> torch.Tensor:
        region, w = penalised_region(batch, self.region, "rrr")
        out = log_probabilities(batch) if self.explained == "log_probabilities" else batch.class_logit()
        grads = batch.input_gradients(out)
        if self.penalty == "l2":
            per_image = ((grads * region) ** 2).flatten(1).sum(1)
        else:  # the share of |gradient| in the region: what lies outside its complement
            per_image = outside_fraction(grads.sum(1, keepdim=True).abs(), 1 - region)
        return weighted_mean(per_image, w)


def grad_cam(batch: LossBatch, a: torch.Tensor) -> torch.Tensor:
    """(B, 1, h, w) Grad-CAM of each image's own class on the feature map ``a`` (B, C, h, w) of this forward:
    relu(sum_c alpha_c a_c), alpha_c the spatial mean of d logit / d a_c. The gradient keeps its graph
    (``create_graph``), so a loss on the map trains the weights that make alpha too, not only those that make a."""
    grads = batch.gradients(batch.class_logit(), a)
    return F.relu((grads.mean(dim=(2, 3), keepdim=True) * a.float()).sum(1, keepdim=True))


def level_problems(model: nn.Module, level: str) -> list[tuple[tuple, str]]:
    """(("level",), message) when ``level`` is neither the attention's output (``attended``) nor a level of the
    backbone, with a did-you-mean (``medattn validate``)."""
    import difflib

    levels = ["attended", *(i.name for i in getattr(model.backbone, "feature_info", []))]
    if level in levels:
        return []
    close = difflib.get_close_matches(level, levels, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return [(("level",), f"{level!r} is not a level of this model{hint}; levels: {', '.join(levels)}")]


def cam_at(batch: LossBatch, level: str, term: str) -> torch.Tensor:
    """(B, 1, H, W) :func:`grad_cam` at ``level`` (``attended``: the attention module's output; else a backbone
    level of ``batch.features``), drawn at the image's size; a level without a (B, C, h, w) map is a UserError."""
    a = batch.attended if level == "attended" else (batch.features or {}).get(level)
    if a is None or a.ndim != 4:
        shape = "" if a is None else f"; it gives {tuple(a.shape)}"
        raise UserError(f"loss {term}: level {level!r} gives no feature map (B, C, H, W) for a Grad-CAM (levels: "
                        f"{', '.join(['attended', *(batch.features or {})])}{shape})")
    return F.interpolate(grad_cam(batch, a), size=tuple(batch.images.shape[-2:]), mode="bilinear",
                         align_corners=False)


def above_chance(batch: LossBatch, logits: torch.Tensor) -> torch.Tensor:
    """(B,) how far each image's own class is above chance, in [0, 1]: max(0, (p - 1/K) / (1 - 1/K)), p the
    probability of the label among K classes (K = 2 for a one-logit model). GAIN's mining score: erasing all
    the evidence should leave the model undecided (p = 1/K), which this scores 0; lowering p further would only
    mean predicting another class, which it does not reward."""
    k = 2 if batch.model.output == "sigmoid" else int(logits.shape[1])
    p = label_probability(batch, logits)
    return F.relu((p - 1 / k) / (1 - 1 / k))


class AttentionMining(nn.Module):
    """GAIN: a Grad-CAM of each image's own class on the attention module's output (the map the head reads) or a
    backbone level (``level``);
    the region it points at is erased softly and the class evidence left in the erased image is penalised
    (mining: the label's probability above chance), and the Grad-CAM outside the lesion is penalised (the mask
    term)."""

    needs_features = True

    def __init__(self, params: dict[str, Any]) -> None:
        super().__init__()
        self.p = params

    def model_problems(self, model: nn.Module) -> list[tuple[tuple, str]]:
        """The Grad-CAM's level is the attention's output or a level of the backbone."""
        return level_problems(model, self.p.get("level", "attended"))

    def forward(self, batch: LossBatch) -> torch.Tensor:
        cam = cam_at(batch, self.p.get("level", "attended"), "gain")
        scaled = cam / (cam.flatten(1).amax(1).view(-1, 1, 1, 1) + EPS)
        total = batch.logits.new_zeros(()).float()
        if self.p["mining_weight"] > 0:
            soft = torch.sigmoid(self.p["omega"] * (scaled - self.p["sigma"]))
            erased = batch.images - soft * batch.images
            with running_stats_kept(batch.model):
                left = above_chance(batch, batch.model(erased))
            total = total + self.p["mining_weight"] * left.mean()
        if self.p["mask_weight"] > 0:
            w = mask_weights(batch, "gain")
            if self.p["mask_penalty"] == "energy":
                per_image = outside_fraction(cam, batch.masks)
            else:
                per_image = ((scaled - batch.masks) ** 2).flatten(1).mean(1)
            total = total + self.p["mask_weight"] * weighted_mean(per_image, w)
        return total


class GradCamReasons(nn.Module):
    """Right for the right scientific reasons (Schramowski et al. 2020): RRR on a Grad-CAM instead of the input
    gradients. The Grad-CAM of each image's own class at a level (the attention module's output, or a backbone
    level), scaled to [0, 1] and drawn at the image's size, is penalised in the region (outside the lesion, or
    inside the confound mask): its mean square there (``l2``) or its share there (``fraction``). The map's
    gradient keeps its graph, so the term trains what makes the map's weights too."""

    needs_features = True

    def __init__(self, region: str, level: str, penalty: str) -> None:
        super().__init__()
        self.region, self.level, self.penalty = region, level, penalty

    def model_problems(self, model: nn.Module) -> list[tuple[tuple, str]]:
        """The level is the attention's output or a level of the backbone."""
        return level_problems(model, self.level)

    def forward(self, batch: LossBatch) -> torch.Tensor:
        cam = cam_at(batch, self.level, "rrr_gradcam")
        region, w = penalised_region(batch, self.region, "rrr_gradcam")
        if self.penalty == "fraction":
            per_image = outside_fraction(cam, 1 - region)
        else:  # an empty map counts as a uniform one: it points nowhere, so everywhere is as likely
            peak = cam.flatten(1).amax(1).view(-1, 1, 1, 1)
            scaled = torch.where(peak > 0, cam / peak.clamp_min(EPS), torch.ones_like(cam))
            per_image = ((scaled * region) ** 2).flatten(1).mean(1)
        return weighted_mean(per_image, w)


class MaskFraction(nn.Module):
    """Another mask term on a fixed share of the training images (chosen by image id); the other images
    contribute no mask (the classification term still trains on them): annotations are rarely complete."""

    def __init__(self, inner: nn.Module, fraction: float) -> None:
        super().__init__()
        self.inner, self.fraction = inner, fraction
        self.needs_input_gradients = getattr(inner, "needs_input_gradients", False)
        self.needs_features = getattr(inner, "needs_features", False)
        self.needs_attention_maps = getattr(inner, "needs_attention_maps", False)

    def model_problems(self, model: nn.Module) -> list[tuple[tuple, str]]:
        check = getattr(self.inner, "model_problems", None)
        return [(("params", *path), message) for path, message in check(model)] if check else []

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
    return AttentionMask(params["penalty"], list(params["maps"]), ctx.image_size)


def build_rrr(params: dict[str, Any], ctx: LossContext) -> nn.Module:
    return RightReasons(params["penalty"], params["explained"], params["region"])


def build_rrr_gradcam(params: dict[str, Any], ctx: LossContext) -> nn.Module:
    return GradCamReasons(params["region"], params["level"], params["penalty"])


def build_gain(params: dict[str, Any], ctx: LossContext) -> nn.Module:
    return AttentionMining(params)


def build_mask_fraction(params: dict[str, Any], ctx: LossContext) -> nn.Module:
    from . import SCHEMAS

    name = params["term"]
    schema = SCHEMAS[name]["properties"]
    inner = {k: p["default"] for k, p in schema.items() if "default" in p} | dict(params["params"])
    return MaskFraction(BUILDERS[name](inner, ctx), float(params["fraction"]))


BUILDERS = {"attention_mask": build_attention_mask, "rrr": build_rrr, "gain": build_gain,
            "rrr_gradcam": build_rrr_gradcam}
