"""Operating points and clinical utility of a binary model (class 1 positive).

- Sensitivity at a fixed specificity, and specificity at a fixed sensitivity, as torchmetrics defines them
  (``binary_sensitivity_at_specificity`` / ``binary_specificity_at_sensitivity``: the best value among the ROC
  points that reach the target; 0 when none does), with weighted forms for the bootstrap (a test checks that unit
  weights give torchmetrics' numbers). Defaults are the screening benchmarks of sensitivity 0.869 and
  specificity 0.889 (test.operating_points).
- The decision curve (Vickers and Elkin 2006): the net benefit TP/N - FP/N * t / (1 - t) of treating the images
  whose probability reaches the threshold probability t, against treating everyone (prevalence - (1 -
  prevalence) t / (1 - t)) and no one (0). Hand-written: a line of arithmetic per threshold.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _roc_by_weight(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R, T) true- and false-positive rates at every distinct score used as the threshold (score >= t,
    highest first), for each row of image weights."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    w = np.atleast_2d(weights)[:, order]
    last = np.r_[s[1:] != s[:-1], True]  # the last image of each run of equal scores
    tp = np.cumsum(w * (y == 1), axis=1)[:, last]
    fp = np.cumsum(w * (y != 1), axis=1)[:, last]
    with np.errstate(invalid="ignore", divide="ignore"):
        return tp / tp[:, -1:], fp / fp[:, -1:]


def weighted_at(metric: str, labels: Any, scores: Any, target: float, weights: np.ndarray) -> np.ndarray:
    """sensitivity_at_specificity or specificity_at_sensitivity at ``target`` under each row of weights."""
    y = np.asarray(labels).astype(int)
    tpr, fpr = _roc_by_weight(y, np.asarray(scores, dtype=np.float64), np.asarray(weights, dtype=np.float64))
    # the ROC's first point, no image called positive, as torchmetrics' curve starts
    tpr, fpr = np.hstack([np.zeros((len(tpr), 1)), tpr]), np.hstack([np.zeros((len(fpr), 1)), fpr])
    if metric == "sensitivity_at_specificity":
        ok = (1 - fpr) >= target
        return np.where(ok, tpr, -np.inf).max(axis=1).clip(min=0.0)
    ok = tpr >= target
    return np.where(ok, 1 - fpr, -np.inf).max(axis=1).clip(min=0.0)


def operating_points(labels: Any, scores: Any, sensitivity: float | None, specificity: float | None, *,
                     resamples: int = 0, seed: int = 0, groups: Any = None, confidence: float = 0.95
                     ) -> dict[str, Any]:
    """{"sensitivity_at_specificity", "specificity_at_sensitivity" (torchmetrics), their targets, "ci"}."""
    import torch
    from torchmetrics.functional.classification import (
        binary_sensitivity_at_specificity,
        binary_specificity_at_sensitivity,
    )

    from . import metrics as M

    y = np.asarray(labels).astype(int)
    pos = np.asarray(scores, dtype=np.float64)
    out: dict[str, Any] = {}
    wanted = {"sensitivity_at_specificity": specificity, "specificity_at_sensitivity": sensitivity}
    for name, target in wanted.items():
        if target is None:
            continue
        fn = binary_sensitivity_at_specificity if name.startswith("sensitivity") else binary_specificity_at_sensitivity
        value, threshold = fn(torch.as_tensor(pos), torch.as_tensor(y), float(target))
        out[name] = float(value)
        out[f"{name}_target"] = float(target)
        out[f"{name}_threshold"] = float(threshold)
    if resamples > 0 and len(y) > 1:
        names = [k for k, t in wanted.items() if t is not None]
        out["ci"] = M.percentile_intervals(len(y), groups, resamples, seed, confidence,
                                           lambda w: {k: weighted_at(k, y, pos, wanted[k], w) for k in names})
    return out


def decision_curve(labels: Any, scores: Any, thresholds: Sequence[float] | None = None) -> dict[str, list[float]]:
    """Net benefit of the model, of treating all and of treating none at each threshold probability."""
    y = np.asarray(labels).astype(int)
    p = np.asarray(scores, dtype=np.float64)
    t = np.asarray(thresholds if thresholds is not None else np.round(np.arange(0.01, 1.0, 0.01), 2))
    n = max(len(y), 1)
    odds = t / (1 - t)
    called = p[None, :] >= t[:, None]
    tp = (called & (y[None, :] == 1)).sum(axis=1) / n
    fp = (called & (y[None, :] != 1)).sum(axis=1) / n
    prevalence = float((y == 1).mean()) if len(y) else 0.0
    return {"threshold": t.tolist(), "model": (tp - fp * odds).tolist(),
            "treat_all": (prevalence - (1 - prevalence) * odds).tolist(), "treat_none": [0.0] * len(t)}
