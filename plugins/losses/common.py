"""What the mask-guided loss terms share: which images carry an informative mask, masks at a map's size,
means over those images, and a forward that leaves BatchNorm's running statistics alone."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from medattn.api import LossBatch, UserError

EPS = 1e-8


def mask_weights(batch: LossBatch, term: str) -> torch.Tensor:
    """(B,) 1 for each image whose mask tells something (it covers part of the image, neither nothing nor all of
    it) and that may use it (``batch.mask_weight``), else 0."""
    if batch.masks is None:
        raise UserError(f"loss {term}: the batch has no lesion masks (the data set gives none)")
    return informative(batch.masks, batch.mask_weight)


def penalised_region(batch: LossBatch, region: str, term: str) -> tuple[torch.Tensor, torch.Tensor]:
    """((B, 1, H, W) where relevance is penalised, (B,) which images take part): outside the lesion mask
    (``outside_mask``), or inside the confound mask (``confound``, where a known shortcut lives). An image whose
    mask covers nothing or all of it tells nothing: it is skipped (weight 0)."""
    if region == "outside_mask":
        w = mask_weights(batch, term)  # first: a batch without masks is its UserError
        return 1 - batch.masks, w
    if batch.confound_masks is None:
        raise UserError(f"loss {term}: region: confound needs confound masks, and the batch has none (the data "
                        f"set gives none: see confound_masks / confound_mask_column)")
    return batch.confound_masks, informative(batch.confound_masks, batch.mask_weight)


def informative(masks: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    """(B,) 1 where a mask covers part of the image (neither nothing nor all of it) and the image may use it."""
    area = (masks > 0.5).float().flatten(1).mean(1)
    w = ((area > 0) & (area < 1)).float()
    return w * allowed.to(w) if allowed is not None else w


def weighted_mean(per_image: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean of per-image values over the images of weight 1 (0 with the graph kept when there are none)."""
    return (per_image * weights).sum() / weights.sum().clamp_min(1.0)


def mask_at(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 1, h, w): the share of each cell of an h x w grid that lies in the lesion."""
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    return F.adaptive_avg_pool2d(masks, size)


def outside_fraction(relevance: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(B,) the share of each map's (non-negative) mass that lies outside the mask: 0 when all of it is inside,
    1 when all of it is outside, and 1 for an empty map (all zero), which points nowhere: the evaluation scores
    it at chance, so it must not earn the term for free."""
    inside = mask_at(masks, tuple(relevance.shape[-2:]))
    total = relevance.flatten(1).sum(1)
    some = total > 0
    share = (relevance * (1 - inside)).flatten(1).sum(1) / torch.where(some, total, torch.ones_like(total))
    return torch.where(some, share, torch.ones_like(share))


def label_probability(batch: LossBatch, logits: torch.Tensor) -> torch.Tensor:
    """(B,) the probability the model gives each image's own label."""
    if batch.model.output == "sigmoid":
        return torch.sigmoid(batch.class_logit(logits))
    return torch.softmax(logits.float(), dim=1).gather(1, batch.labels.long().view(-1, 1)).reshape(-1)


@contextlib.contextmanager
def running_stats_kept(model: nn.Module) -> Iterator[None]:
    """An extra forward (of erased images, say) that does not move BatchNorm's running mean and variance: it
    updates copies, and the originals (which the first forward's graph may hold) are put back untouched."""
    names = ("running_mean", "running_var", "num_batches_tracked")
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [{n: getattr(m, n) for n in names} for m in norms]
    for m, kept in zip(norms, saved):
        for n, t in kept.items():
            setattr(m, n, t.clone())
    try:
        yield
    finally:
        for m, kept in zip(norms, saved):
            for n, t in kept.items():
                setattr(m, n, t)
