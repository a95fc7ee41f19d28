"""Split conformal prediction sets: a threshold on a nonconformity score, fitted on a calibration split, that
gives each image a set of classes holding its true class with probability at least 1 - alpha.

A fitted predictor is plain data (a model file's ``meta["conformal"]``)::

    {"alpha": 0.1, "score": "lac" | "aps", "class_conditional": bool,
     "thresholds": [q_0, ..., q_{K-1}],    # class k is in the set of an image when its score for k <= q_k
     "split": "val", "n": int, "n_per_class": [...]}

Scores, from the (calibrated) class probabilities p:
- ``lac`` (least ambiguous set-valued classifier, Sadinle et al. 2019): s(x, k) = 1 - p_k;
- ``aps`` (adaptive prediction sets, Romano et al. 2020, without the random tie-break so that a set is the same
  every time an image is predicted): s(x, k) = the sum of the probabilities of the classes at least as probable
  as k.

The threshold is the ceil((n + 1)(1 - alpha))-th smallest calibration score, so that the coverage on exchangeable
images is at least 1 - alpha (and below 1 - alpha + 1 / (n + 1) without ties). ``class_conditional`` (Mondrian)
takes that quantile within each class's own calibration images: every class, the rare one too, is covered at
1 - alpha, at the price of larger sets. A calibration split needs ceil((n + 1)(1 - alpha)) <= n, i.e. at least
1 / alpha - 1 images (per class in class-conditional mode). Hand-written: the arithmetic is a few lines; the
tests check it against crepes on the same scores.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import UserError

SCORES = ("lac", "aps")


def class_scores(probabilities: Any, score: str) -> np.ndarray:
    """(N, K) nonconformity score of every class of every image (see the module docstring)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if score == "lac":
        return 1.0 - p
    if score == "aps":
        order = np.argsort(-p, axis=1, kind="stable")
        ranked = np.take_along_axis(p, order, axis=1)
        cumulative = np.cumsum(ranked, axis=1)
        out = np.empty_like(p)
        np.put_along_axis(out, order, cumulative, axis=1)
        # classes tied with a more probable one get the same (larger) sum: the set never splits a tie
        return np.maximum(out, np.where(p[:, :, None] == p[:, None, :], out[:, None, :], 0).max(axis=2))
    raise UserError(f"test.conformal.score: {score!r} is not one of {', '.join(SCORES)}")


def needed(alpha: float) -> int:
    """The fewest calibration images that give a finite threshold at ``alpha``: ceil(1 / alpha - 1)."""
    return max(1, math.ceil(1.0 / alpha - 1 - 1e-12))


def check_alpha(alpha: Any, where: str = "test.conformal.alpha") -> float:
    """alpha as a float in (0, 1); a UserError naming ``where`` otherwise."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < float(alpha) < 1.0:
        raise UserError(f"{where}: {alpha!r} must be a number between 0 and 1 (exclusive), e.g. 0.1 for sets "
                        "that hold the true class of 90% of the images")
    return float(alpha)


def _quantile(values: np.ndarray, alpha: float) -> float:
    """The ceil((n + 1)(1 - alpha))-th smallest of ``values`` (the split-conformal threshold); inf when n is
    too small."""
    n = len(values)
    rank = math.ceil((n + 1) * (1 - alpha) - 1e-12)
    return float(np.sort(values)[rank - 1]) if rank <= n else math.inf


def fit(probabilities: Any, labels: Any, alpha: float, score: str = "lac", class_conditional: bool = True,
        split: str = "val", class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """The conformal predictor fitted on calibration images; a UserError when alpha is outside (0, 1) or the
    split is too small for it (overall, or for a class in class-conditional mode)."""
    alpha = check_alpha(alpha)
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels).astype(int)
    k = p.shape[1]
    counts = check_counts(y, k, alpha, class_conditional, split, class_names)
    true = class_scores(p, score)[np.arange(len(y)), y]
    if class_conditional:
        thresholds = [_quantile(true[y == c], alpha) for c in range(k)]
    else:
        thresholds = [_quantile(true, alpha)] * k
    return {"alpha": alpha, "score": score, "class_conditional": bool(class_conditional),
            "thresholds": [float(t) for t in thresholds], "split": split, "n": int(len(y)),
            "n_per_class": counts.astype(int).tolist()}


def check_counts(labels: Any, classes: int, alpha: float, class_conditional: bool = True, split: str = "val",
                 class_names: Sequence[str] | None = None) -> np.ndarray:
    """The images per class of a calibration split, or a UserError when it is too small for ``alpha`` (overall,
    or for a class in class-conditional mode)."""
    alpha = check_alpha(alpha)
    y = np.asarray(labels).astype(int)
    names = list(class_names) if class_names else [str(c) for c in range(classes)]
    counts = np.bincount(y, minlength=classes)
    least = needed(alpha)
    if class_conditional:
        short = [f"{names[c]} ({counts[c]})" for c in range(classes) if counts[c] < least]
        if short:
            raise UserError(f"test.conformal: the calibration split {split!r} is too small for class-conditional "
                            f"sets at alpha {alpha:g}: each class needs at least {least} images (1/alpha - 1); "
                            f"too few: {', '.join(short)}. Raise alpha, set class_conditional: false, or "
                            "calibrate on a larger split")
    elif len(y) < least:
        raise UserError(f"test.conformal: the calibration split {split!r} has {len(y)} images; alpha {alpha:g} "
                        f"needs at least {least} (1/alpha - 1). Raise alpha or calibrate on a larger split")
    return counts


def check(conformal: Any, classes: int, where: str = "conformal") -> dict[str, Any] | None:
    """A model file's conformal predictor checked to be usable (None when it has none)."""
    if conformal is None:
        return None
    ok = (isinstance(conformal, Mapping) and conformal.get("score") in SCORES
          and isinstance(conformal.get("thresholds"), list) and len(conformal["thresholds"]) == classes)
    if not ok:
        raise UserError(f"{where}: not a conformal predictor medattn wrote for {classes} classes (score, "
                        f"thresholds); found {conformal!r:.200}")
    return dict(conformal)


def predict_sets(probabilities: Any, conformal: Mapping[str, Any]) -> np.ndarray:
    """(N, K) bool: class k is in image i's set."""
    s = class_scores(probabilities, conformal["score"])
    return s <= np.asarray(conformal["thresholds"], dtype=np.float64)[None, :]


def set_names(sets: np.ndarray, class_names: Sequence[str]) -> list[str]:
    """Each set as text, its class names joined by ``|`` (``round|spiculated``; empty for an empty set)."""
    return ["|".join(str(class_names[k]) for k in np.flatnonzero(row)) for row in np.asarray(sets, dtype=bool)]


def coverage_report(labels: Any, sets: Any, class_names: Sequence[str], *, resamples: int, seed: int,
                    groups: Any = None, confidence: float = 0.95) -> dict[str, Any]:
    """coverage, class_coverage_min and set_size with bootstrap intervals (the test job's resampler), coverage
    and size per class, and the share of empty, single and multi-class sets."""
    from . import metrics as M

    y = np.asarray(labels).astype(int)
    sets = np.asarray(sets, dtype=bool)
    n, k = sets.shape
    hit = sets[np.arange(n), y].astype(np.float64)
    size = sets.sum(axis=1).astype(np.float64)
    member = np.eye(k)[y]  # (N, K)

    def values(w: np.ndarray) -> dict[str, np.ndarray]:
        total = w.sum(axis=1)
        per = (w @ (member * hit[:, None])) / np.where(w @ member > 0, w @ member, np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            return {"coverage": w @ hit / total, "set_size": w @ size / total,
                    "class_coverage_min": np.nanmin(np.where(np.isnan(per), np.inf, per), axis=1)}

    point = {key: float(v[0]) for key, v in values(np.ones((1, n))).items()}
    out: dict[str, Any] = {**point, "n": int(n)}
    per_class = {}
    for c in range(k):
        mine = y == c
        if mine.any():
            per_class[str(class_names[c])] = {"coverage": float(hit[mine].mean()), "set_size": float(size[mine].mean()),
                                              "n": int(mine.sum())}
    out["per_class"] = per_class
    out["set_sizes"] = {"empty": float(np.mean(size == 0)), "single": float(np.mean(size == 1)),
                        "multiple": float(np.mean(size > 1))}
    if resamples > 0 and n > 1:
        out["ci"] = M.percentile_intervals(n, groups, resamples, seed, confidence, values)
    return out


def random_split_coverage(probabilities: Any, labels: Any, alpha: float, score: str = "lac",
                          class_conditional: bool = False, splits: int = 1000, calibration_fraction: float = 0.5,
                          seed: int = 0) -> dict[str, Any]:
    """Coverage over ``splits`` random calibration / test splits of fixed scores: the mean coverage, its
    distance from 1 - alpha, and each class's mean coverage (what the tests and bench/calibration.py check)."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels).astype(int)
    n, k = p.shape
    rng = np.random.default_rng(seed)
    scores = class_scores(p, score)
    true = scores[np.arange(n), y]
    n_cal = int(round(n * calibration_fraction))
    marginal = np.empty(splits)
    per_class = np.full((splits, k), np.nan)
    for r in range(splits):
        order = rng.permutation(n)
        cal, test = order[:n_cal], order[n_cal:]
        if class_conditional:
            q = np.array([_quantile(true[cal][y[cal] == c], alpha) for c in range(k)])
        else:
            q = np.full(k, _quantile(true[cal], alpha))
        covered = true[test] <= q[y[test]]
        marginal[r] = covered.mean()
        for c in range(k):
            mine = y[test] == c
            if mine.any():
                per_class[r, c] = covered[mine].mean()
    mean = float(marginal.mean())
    return {"coverage": mean, "coverage_error": abs(mean - (1 - alpha)),
            "class_coverage": np.nanmean(per_class, axis=0).tolist(),
            "class_coverage_min": float(np.nanmin(np.nanmean(per_class, axis=0))), "splits": int(splits)}
