"""Calibration: temperature or vector scaling of the logits, fitted in torch by minimising the negative
log-likelihood on held-out images, and the calibration metrics before and after it.

A fitted calibration is plain data (what a model file's ``meta["calibration"]`` holds)::

    {"method": "temperature" | "vector", "output": "sigmoid" | "softmax",
     "weight": [...], "bias": [...],        # calibrated logits = logits * weight + bias (one value, or one per class)
     "temperature": float,                  # temperature scaling only: weight = 1 / temperature, bias = 0
     "split": "val", "n": int, "nll_before": float, "nll_after": float}

Temperature scaling (Guo et al. 2017) divides every logit by one T > 0, so the ranking of the images, the
predicted class of a softmax model and a binary model's ROC AUC do not change. Vector scaling gives each class
its own weight and bias (for a one-logit sigmoid model it is Platt scaling: a * z + b).

Metrics (:data:`METRICS`), all on class 1 for a binary task and on the top-class confidence otherwise, as
torchmetrics defines them (``BinaryCalibrationError`` / ``MulticlassCalibrationError``, 15 equal-width bins,
a confidence of exactly 1 in a bin of its own): ``ece15`` (L1 norm), ``mce`` (max norm), ``adaptive_ece``
(15 equal-mass bins; no well-kept library has it, so it is written here), ``brier`` and ``nll``. Each has a
weighted form (:func:`weighted`) so that the bootstrap computes many resamples at once; a test checks that
unit weights give torchmetrics' numbers.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import UserError

METHODS = ("none", "temperature", "vector")
BINS = 15
METRICS = ("ece15", "adaptive_ece", "mce", "brier", "nll")  # what :func:`metrics` returns
_EPS = 1e-15  # probabilities are clipped to [eps, 1] in the NLL (float64 sigmoid saturates near |z| = 37)


# ---------------------------------------------------------------------------------------------------------------
# fitting and applying


def _flat(logits: Any, output: str) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    if output == "sigmoid":
        return z.reshape(-1)
    if z.ndim != 2:
        raise ValueError(f"softmax logits must be (N, K), got shape {z.shape}")
    return z


def fit(logits: Any, labels: Any, method: str, output: str, split: str = "val") -> dict[str, Any] | None:
    """The calibration ``method`` (temperature or vector) of ``logits`` (N,) / (N, 1) for a sigmoid model or
    (N, K) for a softmax one, fitted by L-BFGS on the mean NLL of ``labels``; None for ``none``. A UserError
    when there is nothing to fit on."""
    import torch

    if method not in METHODS:
        raise UserError(f"test.calibration: {method!r} is not one of {', '.join(METHODS)}")
    if method == "none":
        return None
    z = torch.as_tensor(_flat(logits, output))
    y = torch.as_tensor(np.asarray(labels).astype(np.int64))
    if len(y) < 2 or len(torch.unique(y)) < 2:
        raise UserError(f"test.calibration: {method} scaling needs images of at least two classes in the "
                        f"{split!r} split (it has {len(y)} image(s) of {len(torch.unique(y))} class(es))")
    width = 1 if output == "sigmoid" else z.shape[1]
    shape = (1,) if method == "temperature" else (width,)
    log_t = torch.zeros(shape, dtype=torch.float64, requires_grad=True)  # weight = exp(-log_t) stays positive
    bias = torch.zeros((width,), dtype=torch.float64, requires_grad=method == "vector")
    params = [log_t] + ([bias] if method == "vector" else [])

    def loss_of(w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        scaled = z * w + b if output == "softmax" else z * w[0] + b[0]
        if output == "sigmoid":
            return torch.nn.functional.binary_cross_entropy_with_logits(scaled, y.double())
        return torch.nn.functional.cross_entropy(scaled, y)

    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=500, tolerance_grad=1e-10, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_of(torch.exp(-log_t), bias)
        loss.backward()
        return loss

    with torch.no_grad():
        before = float(loss_of(torch.ones(1, dtype=torch.float64), torch.zeros(width, dtype=torch.float64)))
    opt.step(closure)
    with torch.no_grad():
        weight = torch.exp(-log_t)
        after = float(loss_of(weight, bias))
        if not np.isfinite(after) or after > before:  # never worse than the model itself on its own split
            weight, bias, after = torch.ones_like(weight), torch.zeros_like(bias), before
    out: dict[str, Any] = {"method": method, "output": output, "weight": [float(v) for v in weight],
                           "bias": [float(v) for v in bias.detach()]}
    if method == "temperature":
        out["temperature"] = 1.0 / out["weight"][0]
        out["bias"] = [0.0]
    return {**out, "split": split, "n": int(len(y)), "nll_before": before, "nll_after": after}


def check(calibration: Any, where: str = "calibration") -> dict[str, Any] | None:
    """A model file's calibration checked to be usable: None (no calibration: a file made before medattn
    calibrated, or ``test.calibration: none``) or the dict; a UserError naming ``where`` otherwise."""
    if calibration is None or (isinstance(calibration, Mapping) and calibration.get("method") == "none"):
        return None
    ok = (isinstance(calibration, Mapping) and calibration.get("method") in METHODS[1:]
          and calibration.get("output") in ("sigmoid", "softmax")
          and all(isinstance(calibration.get(k), list) and calibration[k] for k in ("weight", "bias")))
    if not ok:
        raise UserError(f"{where}: not a calibration medattn wrote (method, output, weight, bias); found "
                        f"{calibration!r:.200}")
    return dict(calibration)


def apply(calibration: Mapping[str, Any] | None, logits: Any) -> np.ndarray:
    """Calibrated logits (float64, the shape of ``logits``): ``logits * weight + bias``; unchanged for None."""
    z = np.asarray(logits, dtype=np.float64)
    if calibration is None:
        return z
    w, b = np.asarray(calibration["weight"], dtype=np.float64), np.asarray(calibration["bias"], dtype=np.float64)
    return z * (w[0] if w.size == 1 else w) + (b[0] if b.size == 1 else b)


def probabilities(logits: Any, output: str) -> np.ndarray:
    """Class scores in float64 as the test job records them: (N,) P(class 1) for a sigmoid model (whose
    logits are (N,) or (N, 1)), else (N, K) softmax probabilities."""
    from scipy.special import expit, softmax

    z = _flat(logits, output)
    return expit(z) if output == "sigmoid" else softmax(z, axis=1)


def module(calibration: Mapping[str, Any] | None) -> Any:
    """A torch module computing the calibrated logits from a model's logits (the identity for None): what
    :class:`medattn.predict.Predictor` and the exported models append to the model."""
    import torch
    from torch import nn

    class Calibration(nn.Module):
        """logits * weight + bias, the model file's calibration (buffers: they travel with .to() and export)."""

        def __init__(self, weight: list[float], bias: list[float]) -> None:
            super().__init__()
            self.register_buffer("weight", torch.tensor(weight, dtype=torch.float32))
            self.register_buffer("bias", torch.tensor(bias, dtype=torch.float32))

        def forward(self, logits: torch.Tensor) -> torch.Tensor:
            return logits * self.weight + self.bias

    if calibration is None:
        return nn.Identity()
    return Calibration(list(calibration["weight"]), list(calibration["bias"]))


def describe(calibration: Mapping[str, Any] | None) -> str:
    """One line for logs and contracts: ``temperature 2.31 (fitted on val, 80 images)`` or ``none``."""
    if calibration is None:
        return "none"
    what = (f"temperature {calibration['temperature']:.4g}" if calibration["method"] == "temperature"
            else f"vector scaling (weight {_short(calibration['weight'])}, bias {_short(calibration['bias'])})")
    return f"{what} (fitted on {calibration.get('split', '?')}, {calibration.get('n', '?')} images)"


def _short(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.3g}" for v in values) + "]"


# ---------------------------------------------------------------------------------------------------------------
# metrics


def _confidence(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, hit) per image: P(class 1) and label == 1 for a binary task, else the top-class
    probability and whether the top class is right (torchmetrics' binary and multi-class definitions)."""
    from . import metrics as M

    pos = M.positive_scores(scores)
    if pos is not None:
        return pos, (labels == 1).astype(np.float64)
    return scores.max(axis=1), (scores.argmax(axis=1) == labels).astype(np.float64)


def _per_image(labels: np.ndarray, scores: np.ndarray) -> dict[str, np.ndarray]:
    from . import metrics as M

    probs = M.class_probabilities(scores)
    onehot = np.eye(probs.shape[1])[labels]
    p_true = np.clip(probs[np.arange(len(labels)), labels], _EPS, 1.0)
    # sklearn's binary Brier is (p1 - y)^2 = half the two-class sum; multi-class: the sum over the classes
    sq = np.sum((probs - onehot) ** 2, axis=1)
    return {"brier": sq / 2 if M.positive_scores(scores) is not None else sq, "nll": -np.log(p_true)}


def _bins(conf: np.ndarray, adaptive: bool) -> tuple[np.ndarray, int]:
    """(bin of each image, number of bins): equal-width as torchmetrics (``bucketize(right=True) - 1``, so a
    confidence of exactly 1 has a bin of its own), or equal-mass (:data:`BINS` groups of the sorted images)."""
    if adaptive:
        which = np.empty(len(conf), dtype=np.int64)
        for k, part in enumerate(np.array_split(np.argsort(conf, kind="stable"), BINS)):
            which[part] = k
        return which, BINS
    edges = np.linspace(0.0, 1.0, BINS + 1)
    return np.searchsorted(edges, conf, side="right") - 1, BINS + 1


def weighted(metric: str, labels: Any, scores: Any, weights: np.ndarray) -> np.ndarray:
    """``metric`` (one of :data:`METRICS`) under each row of image weights (R, N) -> (R,); NaN without images."""
    from scipy import sparse

    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    total = weights.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric in ("brier", "nll"):
            return np.where(total > 0, weights @ _per_image(labels, scores)[metric] / np.where(total > 0, total, 1),
                            np.nan)
        if metric not in ("ece15", "adaptive_ece", "mce"):
            raise UserError(f"unknown calibration metric {metric!r} (choose from {', '.join(METRICS)})")
        conf, hit = _confidence(labels, scores)
        which, k = _bins(conf, metric == "adaptive_ece")
        onehot = sparse.csr_matrix((np.ones(len(which)), (np.arange(len(which)), which)), shape=(len(which), k))
        count = np.asarray((onehot.T @ weights.T).T)
        conf_sum = np.asarray((onehot.T @ (weights * conf).T).T)
        hit_sum = np.asarray((onehot.T @ (weights * hit).T).T)
        gap = np.abs(hit_sum - conf_sum)
        if metric == "mce":
            out = np.max(np.where(count > 0, gap / np.where(count > 0, count, 1), 0.0), axis=1)
        else:
            out = gap.sum(axis=1) / np.where(total > 0, total, 1)
        return np.where(total > 0, out, np.nan)


def metrics(labels: Any, scores: Any) -> dict[str, float]:
    """ece15, adaptive_ece, mce (torchmetrics for the equal-width ones), brier and nll of the scores."""
    import torch
    from torchmetrics.functional.classification import binary_calibration_error, multiclass_calibration_error

    from . import metrics as M

    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    if not len(labels):
        return {}
    ones = np.ones((1, len(labels)))
    out = {m: float(weighted(m, labels, scores, ones)[0]) for m in METRICS}
    pos = M.positive_scores(scores)
    target = torch.as_tensor(labels)
    for name, norm in (("ece15", "l1"), ("mce", "max")):
        if pos is not None:
            value = binary_calibration_error(torch.as_tensor(pos), target, n_bins=BINS, norm=norm)
        else:
            value = multiclass_calibration_error(torch.as_tensor(scores), target, scores.shape[1], n_bins=BINS,
                                                 norm=norm)
        out[name] = float(value)
    return out


def report(labels: Any, raw: Any, calibrated: Any | None, *, resamples: int, seed: int, groups: Any = None,
           confidence: float = 0.95, log_odds: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """The test job's calibration block: the metrics ``before`` (raw scores) and ``after`` (calibrated; absent
    without calibration) with bootstrap intervals on the same resamples, the ROC AUCs and ``auc_change``
    (after - before; for a binary task on ``log_odds`` (raw, calibrated) when given: a monotone map of the
    logits leaves their ranking, and the AUC, exactly as it was), and 15-bin reliability data of both."""
    from sklearn.metrics import roc_auc_score

    from . import metrics as M

    labels = np.asarray(labels).astype(int)
    out: dict[str, Any] = {"bins": BINS}
    for key, scores in (("before", raw), ("after", calibrated)):
        if scores is None:
            continue
        scores = np.asarray(scores, dtype=np.float64)
        out[key] = metrics(labels, scores)
        out[f"ci_{key}"] = intervals(labels, scores, resamples, seed, groups, confidence)
        out[f"reliability_{key}"] = M.reliability(labels, scores, BINS)
    if calibrated is not None and len(np.unique(labels)) > 1:
        pos = M.positive_scores(np.asarray(raw))
        if pos is not None:
            before, after = log_odds if log_odds is not None else (pos, M.positive_scores(np.asarray(calibrated)))
            aucs = [float(roc_auc_score(labels, np.asarray(s, dtype=np.float64).reshape(-1))) for s in (before, after)]
        elif len(np.unique(labels)) == np.asarray(raw).shape[1]:
            aucs = [float(roc_auc_score(labels, np.asarray(s, dtype=np.float64), multi_class="ovr", average="macro"))
                    for s in (raw, calibrated)]
        else:
            aucs = []
        if aucs:
            out.update(auc_before=aucs[0], auc_after=aucs[1], auc_change=aucs[1] - aucs[0])
    return out


def intervals(labels: np.ndarray, scores: np.ndarray, resamples: int, seed: int, groups: Any = None,
              confidence: float = 0.95) -> dict[str, list[float]]:
    """Percentile bootstrap intervals of :data:`METRICS` on the test job's resamples (medattn's one resampler,
    by patient group when given); no interval below two units."""
    from . import metrics as M

    units = len(labels) if groups is None else len(set(map(str, groups)))
    if units < 2 or resamples <= 0:
        return {}
    return M.percentile_intervals(len(labels), groups, resamples, seed, confidence,
                                  lambda w: {m: weighted(m, labels, scores, w) for m in METRICS})


def log_odds(logits: Any, output: str) -> np.ndarray | None:
    """The log-odds of class 1 of a binary model, straight from its logits (sigmoid: the logit; two-class
    softmax: the difference of the two), None for more classes."""
    z = np.asarray(logits, dtype=np.float64)
    if output == "sigmoid":
        return z.reshape(-1)
    return z[:, 1] - z[:, 0] if z.ndim == 2 and z.shape[1] == 2 else None
