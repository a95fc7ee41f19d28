"""How good an explanation is: faithfulness (deletion / insertion, captum infidelity and sensitivity_max),
localisation against ground-truth masks (pointing game, energy inside the mask, IoU of the top pixels), and the
model-parameter randomisation sanity check (Adebayo et al. 2018).

Conventions: a map is reduced to one value per pixel by summing its channels; deletion, insertion and
localisation rank pixels by the absolute value (``rank: abs``, default) so that signed and unsigned methods are
compared alike. The explained score is P(explained class): the target class of a softmax model, the predicted
class of a single-output (sigmoid) model, whose maps explain the one logit (sign flipped for predicted class 0).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import nn


# --- helpers -----------------------------------------------------------------------------------------------------
def pixel_map(attributions: np.ndarray, rank: str = "abs", sign: np.ndarray | None = None) -> np.ndarray:
    """(N, C, H, W) attributions -> (N, H, W) pixel relevance (channels summed; |.| or signed, times ``sign``)."""
    m = attributions.sum(axis=1)
    if sign is not None:
        m = m * sign[:, None, None]
    return np.abs(m) if rank == "abs" else m


def explained_probability(model: nn.Module, x: torch.Tensor, classes: np.ndarray) -> np.ndarray:
    """P(class) for each image: softmax column, or p / 1 - p of a single-output model."""
    with torch.no_grad():
        p = model.probabilities(model(x)).float().cpu().numpy()
    if p.ndim == 1:
        return np.where(classes == 1, p, 1 - p)
    return p[np.arange(len(p)), classes]


def blurred(x: torch.Tensor) -> torch.Tensor:
    """A heavily blurred copy (the insertion curve's starting image)."""
    k = max(3, (min(x.shape[-2:]) // 8) | 1)
    return F.avg_pool2d(F.pad(x, [k // 2] * 4, mode="replicate"), k, stride=1)


def auc(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Area under curves y (..., K) over x (K,) by the trapezoid rule."""
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy >= 2 renamed trapz
    return trapezoid(y, x, axis=-1)


# --- faithfulness ------------------------------------------------------------------------------------------------
def deletion_insertion(model: nn.Module, inputs: torch.Tensor, relevance: np.ndarray, classes: np.ndarray,
                       steps: int, deletion_baseline: str, insertion_start: str, device: Any,
                       batch_size: int) -> dict[str, np.ndarray]:
    """Deletion and insertion curves (Petsiuk et al. 2018), written here because captum has none.

    Deletion: the most relevant pixels are replaced by the baseline in ``steps`` equal fractions and the
    explained probability is recorded (a faithful map makes it fall fast: low AUC is good). Insertion: the most
    relevant pixels are put back into a blurred (or zero) image (a faithful map makes it rise fast: high AUC).
    """
    fractions = np.linspace(0, 1, steps + 1)
    n, _, h, w = inputs.shape
    order = np.argsort(-relevance.reshape(n, -1), axis=1, kind="stable")
    curves = {"deletion": np.zeros((n, steps + 1)), "insertion": np.zeros((n, steps + 1))}
    for i in range(n):
        x = inputs[i:i + 1]
        base_del = blurred(x) if deletion_baseline == "blur" else torch.zeros_like(x)
        base_ins = blurred(x) if insertion_start == "blur" else torch.zeros_like(x)
        masks = torch.zeros(steps + 1, 1, h * w)
        for k, f in enumerate(fractions):
            masks[k, 0, torch.as_tensor(order[i, :int(round(f * h * w))])] = 1.0
        masks = masks.view(steps + 1, 1, h, w)
        for name, start, end in (("deletion", x, base_del), ("insertion", base_ins, x)):
            batch = start * (1 - masks) + end * masks  # mask 1: pixel taken from `end`
            probs = [explained_probability(model, batch[s:s + batch_size].to(device),
                                           np.full(len(batch[s:s + batch_size]), classes[i]))
                     for s in range(0, steps + 1, batch_size)]
            curves[name][i] = np.concatenate(probs)
    curves["fractions"] = fractions
    return curves


def infidelity_score(model: nn.Module, inputs: torch.Tensor, attributions: np.ndarray, target: Any,
                     n_perturb: int, noise: float, device: Any, batch_size: int) -> float:
    """captum infidelity with Gaussian perturbations, attributions optimally rescaled (normalize=True)."""
    from captum.metrics import infidelity

    def perturb(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        eps = torch.randn_like(x) * noise
        return eps, x - eps

    x = inputs.to(device)
    a = torch.as_tensor(attributions, device=device)
    if a.shape[1] != x.shape[1]:
        a = a.expand(-1, x.shape[1], -1, -1) / x.shape[1]
    torch.manual_seed(0)
    t = None if target is None else torch.as_tensor(target, device=device)
    values = infidelity(model, perturb, x, a, target=t, n_perturb_samples=n_perturb,
                        max_examples_per_batch=batch_size, normalize=True)
    return float(values.mean())


def sensitivity_score(model: nn.Module, explainer: Any, inputs: torch.Tensor, target: Any, n_perturb: int,
                      radius: float, device: Any, batch_size: int) -> float:
    """captum sensitivity_max: the largest change of the map under small uniform input perturbations."""
    from captum.metrics import sensitivity_max

    def explain(x: Any, target: Any = None) -> Any:
        with torch.enable_grad():  # sensitivity_max runs under no_grad; explainers need gradients
            if isinstance(x, tuple):  # captum hands the perturbed inputs over as a tuple
                return (explainer(model, x[0], target),)
            return explainer(model, x, target)

    torch.manual_seed(0)
    t = None if target is None else torch.as_tensor(target, device=device)
    values = sensitivity_max(explain, inputs.to(device), perturb_radius=radius, n_perturb_samples=n_perturb,
                             target=t, max_examples_per_batch=batch_size)
    return float(values.mean())


# --- localisation ------------------------------------------------------------------------------------------------
def localisation(relevance: np.ndarray, masks: np.ndarray, top_percent: Any = "mask") -> dict[str, float]:
    """Pointing game, fraction of relevance inside the mask and IoU of the top pixels, over images with a mask.

    Pointing game (Zhang et al. 2016; hand-written, no library has it): 1 when the most relevant pixel lies in
    the mask. ``mask_area`` is the chance level of energy_in_mask (and about that of the pointing game).
    """
    per_image = localisation_per_image(relevance, masks, top_percent)
    valid = ~np.isnan(per_image["mask_area"])
    if not valid.any():
        return {}
    arr = np.stack([per_image[k] for k in LOCALISATION], axis=1)[valid]
    return dict(zip(LOCALISATION, map(float, arr.mean(axis=0))))


LOCALISATION = ("pointing_game", "energy_in_mask", "iou_top", "mask_area")


def localisation_per_image(relevance: np.ndarray, masks: np.ndarray, top_percent: Any = "mask") -> dict[str, np.ndarray]:
    """The localisation scores of each image (NaN for an image without a mask): what :func:`localisation`
    averages, and what ``compare`` pairs image by image."""
    rows = []
    for r, m in zip(relevance, masks.reshape(len(masks), *relevance.shape[1:]) > 0.5):
        if not m.any():
            rows.append((np.nan,) * len(LOCALISATION))
            continue
        r = np.abs(r)
        area = float(m.mean())
        k = int(m.sum()) if top_percent == "mask" else max(1, int(round(float(top_percent) / 100 * r.size)))
        top = np.zeros(r.size, dtype=bool)
        top[np.argsort(-r.ravel(), kind="stable")[:k]] = True
        inter = np.logical_and(top, m.ravel()).sum()
        union = np.logical_or(top, m.ravel()).sum()
        total = r.sum()
        rows.append((float(m.ravel()[np.argmax(r.ravel())]), float((r * m).sum() / total) if total > 0 else area,
                     float(inter / union), area))
    arr = np.array(rows, dtype=float).reshape(len(rows), len(LOCALISATION))
    return {k: arr[:, i] for i, k in enumerate(LOCALISATION)}


CONFOUND = ("energy_in_confound", "confound_area")


def confound_per_image(relevance: np.ndarray, confound_masks: np.ndarray) -> dict[str, np.ndarray]:
    """Each image's share of |relevance| inside its confound mask (where a known shortcut lives: lower is better)
    and the mask's area, its chance level; NaN for an image whose confound mask is empty."""
    rows = []
    for r, m in zip(np.abs(relevance), confound_masks.reshape(len(confound_masks), *relevance.shape[1:]) > 0.5):
        if not m.any():
            rows.append((np.nan, np.nan))
            continue
        total = r.sum()
        area = float(m.mean())
        rows.append((float((r * m).sum() / total) if total > 0 else area, area))
    arr = np.array(rows, dtype=float).reshape(len(rows), len(CONFOUND))
    return {k: arr[:, i] for i, k in enumerate(CONFOUND)}


# --- sanity ------------------------------------------------------------------------------------------------------
def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over images of the Spearman rank correlation of two sets of pixel maps (N, H, W)."""
    return float(np.mean(rank_correlations(a, b)))


def rank_correlations(a: np.ndarray, b: np.ndarray) -> list[float]:
    """The Spearman rank correlation of each image's two pixel maps (N, H, W)."""
    rhos = []
    for x, y in zip(a.reshape(len(a), -1), b.reshape(len(b), -1)):
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            rhos.append(1.0 if np.ptp(x) == np.ptp(y) else 0.0)
            continue
        rhos.append(float(spearmanr(x, y).statistic))
    return rhos


# --- all of them ---------------------------------------------------------------------------------------------------
def score_method(model: nn.Module, explainer: Any, inputs: torch.Tensor, target: np.ndarray | None,
                 attributions: np.ndarray, masks: np.ndarray | None, cfg: dict, device: Any, batch_size: int,
                 randomised: np.ndarray | None = None, per_image: dict[str, np.ndarray] | None = None,
                 confound_masks: np.ndarray | None = None) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The configured scores of one method's attributions, and its deletion / insertion curves.

    ``randomised``: the same method's attributions on the randomised model (the sanity check's input), when the
    randomisation score is wanted. ``per_image``: a dict that receives the scores of each image (localisation,
    randomisation), for comparisons paired image by image. ``confound_masks``: where a known shortcut lives; the
    localisation score then adds energy_in_confound.
    """
    per_image = {} if per_image is None else per_image
    wanted = set(cfg["scores"])
    classes, sign = explained_classes(model, inputs, target, device)
    scores: dict[str, float] = {}
    curves: dict[str, np.ndarray] = {}
    if wanted & {"deletion", "insertion"}:
        rel = pixel_map(attributions, cfg["rank"], sign)
        c = deletion_insertion(model, inputs, rel, classes, int(cfg["steps"]), cfg["deletion_baseline"],
                               cfg["insertion_start"], device, batch_size)
        for name in ("deletion", "insertion"):
            if name in wanted:
                curves[name] = c[name]
                scores[f"{name}_auc"] = float(auc(c[name], c["fractions"]).mean())
        curves["fractions"] = c["fractions"]
    if "infidelity" in wanted:
        scores["infidelity"] = infidelity_score(model, inputs, attributions, target, int(cfg["n_perturb"]),
                                                float(cfg["noise"]), device, batch_size)
    if "sensitivity" in wanted:
        scores["sensitivity_max"] = sensitivity_score(model, explainer, inputs, target, int(cfg["n_perturb"]),
                                                      float(cfg["noise"]), device, batch_size)
    if "localisation" in wanted and masks is not None:
        scores.update(localisation(pixel_map(attributions, "abs"), masks, cfg["top_percent"]))
        per_image.update(localisation_per_image(pixel_map(attributions, "abs"), masks, cfg["top_percent"]))
    if "localisation" in wanted and confound_masks is not None:
        each = confound_per_image(pixel_map(attributions, "abs"), confound_masks)
        per_image.update(each)
        scores.update({k: float(np.nanmean(v)) for k, v in each.items() if np.isfinite(v).any()})
    if "randomisation" in wanted and randomised is not None:
        rhos = rank_correlations(pixel_map(attributions, "abs"), pixel_map(randomised, "abs"))
        per_image["randomisation_spearman"] = np.asarray(rhos, dtype=float)
        rho = float(np.mean(rhos))
        scores["randomisation_spearman"] = rho
        scores["randomisation_insensitive"] = float(rho > float(cfg["randomisation_threshold"]))
    return scores, curves


def explained_classes(model: nn.Module, inputs: torch.Tensor, target: np.ndarray | None,
                      device: Any) -> tuple[np.ndarray, np.ndarray]:
    """(explained class, evidence sign) per image: the target class of a softmax model (sign +1); the predicted
    class of a single-output model, whose maps explain the one logit (sign -1 where class 0 is predicted)."""
    if target is not None:
        classes = np.asarray(target).astype(int)
        return classes, np.ones(len(classes))
    with torch.no_grad():
        p = model.probabilities(model(inputs.to(device))).float().cpu().numpy()
    if p.ndim == 1:
        classes = (p >= 0.5).astype(int)
        return classes, np.where(classes == 1, 1.0, -1.0)
    classes = p.argmax(axis=1)
    return classes, np.ones(len(classes))
