"""Classification metrics on collected predictions; scikit-learn does the arithmetic wherever it has it.

Conventions: ``labels`` (N,) ints; ``scores`` (N,) P(class 1) from a sigmoid model or (N, K) class
probabilities from a softmax model. Binary tasks treat class 1 as positive (the disease, the attack);
multi-class metrics are macro averages, with per-class values in :func:`per_class`.

What each metric is (direction, range, ...) is declared once in :mod:`medattn.evidence.metric_specs`. Here: the
point values (:func:`classification_metrics`), the same metrics under many rows of image weights at once
(:func:`weighted_metric`, for the bootstrap), the one resampler (:func:`bootstrap_chunks`) and the test
job's bootstrap intervals (:func:`bootstrap_ci`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import sklearn
from scipy import sparse
from sklearn import metrics as skm

from ..errors import UserError
from .metric_specs import (
    metric_names,
    metric_spec,
    mode_of,  # noqa: F401  (re-exported: the engine's plateau scheduler imports it from here)
)

# equal-width confidence bins of the ECE inside classification_metrics (the test job's reliability diagram
# uses test.calibration_bins)
ECE_BINS = 10
NAN = float("nan")


def positive_scores(scores: np.ndarray) -> np.ndarray | None:
    """P(class 1) for a binary task: scores (N,) from a sigmoid model or (N, 2) from a softmax one."""
    if scores.ndim == 1:
        return scores
    return scores[:, 1] if scores.shape[1] == 2 else None


def predictions(scores: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Predicted classes: P(class 1) >= threshold for binary tasks, argmax otherwise."""
    pos = positive_scores(np.asarray(scores))
    return (pos >= threshold).astype(int) if pos is not None else np.asarray(scores).argmax(axis=1)


def class_probabilities(scores: np.ndarray) -> np.ndarray:
    """(N, K) class probabilities (a sigmoid score becomes [1 - p, p])."""
    return np.stack([1 - scores, scores], axis=1) if scores.ndim == 1 else scores


def n_classes_of(scores: np.ndarray) -> int:
    """How many classes the scores describe."""
    return 2 if scores.ndim == 1 else int(scores.shape[1])


def classification_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Every scalar metric: accuracy, balanced accuracy, precision, recall/sensitivity, specificity, F1,
    ROC-AUC, PR-AUC (where both classes occur), Brier, ECE; class 1 positive, macro for multi-class."""
    # our arrays are well-formed: skip sklearn's per-call parameter validation (most of its cost per epoch)
    with sklearn.config_context(skip_parameter_validation=True):
        return _classification_metrics(labels, scores, threshold)


def _classification_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=float)
    preds = predictions(scores, threshold)
    pos = positive_scores(scores)
    k = n_classes_of(scores)
    classes = list(range(k))
    binary = pos is not None
    out: dict[str, float] = {"n": int(len(labels))}
    if not len(labels):
        return out
    out["accuracy"] = float(skm.accuracy_score(labels, preds))
    average = "binary" if binary else "macro"
    kw: dict[str, Any] = {"average": average, "zero_division": 0}
    if not binary:
        kw["labels"] = classes
    out["precision"] = float(skm.precision_score(labels, preds, **kw))
    out["recall"] = float(skm.recall_score(labels, preds, **kw))
    out["sensitivity"] = out["recall"]
    out["f1"] = float(skm.f1_score(labels, preds, **kw))
    cm = skm.confusion_matrix(labels, preds, labels=classes)
    out["specificity"] = float(np.mean(_specificities(cm)[1:] if binary else _specificities(cm)))
    # balanced accuracy = mean recall over the classes present (sklearn warns on absent ones)
    present = np.unique(labels)
    recalls = skm.recall_score(labels, preds, labels=present, average=None, zero_division=0)
    out["balanced_accuracy"] = float(np.mean(recalls))
    probs = class_probabilities(scores)
    onehot = np.eye(k)[labels]
    # multi-class Brier: mean over samples of the squared distance to the one-hot label (binary: sklearn's)
    out["brier"] = float(skm.brier_score_loss(labels, pos, pos_label=1) if binary
                         else np.mean(np.sum((probs - onehot) ** 2, axis=1)))
    out["ece"] = reliability(labels, scores, ECE_BINS)["ece"]
    if len(present) > 1:
        if binary:
            out["roc_auc"] = float(skm.roc_auc_score(labels, pos))
            out["pr_auc"] = float(skm.average_precision_score(labels, pos))
        elif len(present) == k:
            out["roc_auc"] = float(skm.roc_auc_score(labels, scores, multi_class="ovr", average="macro",
                                                     labels=classes))
            out["pr_auc"] = float(skm.average_precision_score(onehot, scores, average="macro"))
    return out


def _specificities(cm: np.ndarray) -> np.ndarray:
    """Per-class specificity TN / (TN + FP) from a confusion matrix (one-vs-rest); no sklearn function gives it."""
    total = cm.sum()
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    tn = total - tp - fp - fn
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(tn + fp > 0, tn / np.maximum(tn + fp, 1), 0.0)


def per_class(labels: np.ndarray, scores: np.ndarray, class_names: Sequence[str],
              threshold: float = 0.5) -> dict[str, dict[str, float]]:
    """precision / recall / specificity / F1 / support (and one-vs-rest ROC-AUC) of every class."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=float)
    preds = predictions(scores, threshold)
    k = n_classes_of(scores)
    p, r, f, s = skm.precision_recall_fscore_support(labels, preds, labels=list(range(k)), zero_division=0)
    spec = _specificities(skm.confusion_matrix(labels, preds, labels=list(range(k))))
    probs = class_probabilities(scores)
    out = {}
    for c in range(k):
        row = {"precision": float(p[c]), "recall": float(r[c]), "specificity": float(spec[c]), "f1": float(f[c]),
               "support": int(s[c])}
        y = (labels == c).astype(int)
        if 0 < y.sum() < len(y):
            row["roc_auc"] = float(skm.roc_auc_score(y, probs[:, c]))
        out[str(class_names[c]) if c < len(class_names) else str(c)] = row
    return out


def confusion(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> list[list[int]]:
    """Confusion matrix, rows = true class, columns = predicted class."""
    scores = np.asarray(scores, dtype=float)
    k = n_classes_of(scores)
    return skm.confusion_matrix(np.asarray(labels).astype(int), predictions(scores, threshold),
                                labels=list(range(k))).tolist()


def reliability(labels: np.ndarray, scores: np.ndarray, bins: int) -> dict[str, Any]:
    """Expected calibration error and reliability-diagram data (equal-width bins on the confidence).

    Binary: confidence = P(class 1) against the positive rate (sklearn's calibration_curve, with counts).
    Multi-class: confidence = top probability against top-1 accuracy. sklearn has no ECE: written here.
    """
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=float)
    pos = positive_scores(scores)
    if pos is not None:
        conf, hit = pos, (labels == 1).astype(float)
    else:
        conf, hit = scores.max(axis=1), (scores.argmax(axis=1) == labels).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=conf, minlength=bins)
    hit_sum = np.bincount(which, weights=hit, minlength=bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_conf = np.where(count > 0, conf_sum / np.maximum(count, 1), np.nan)
        frac = np.where(count > 0, hit_sum / np.maximum(count, 1), np.nan)
    ece = float(np.nansum(count / max(len(labels), 1) * np.abs(frac - mean_conf))) if len(labels) else float("nan")
    return {"ece": ece, "bin_edges": edges.tolist(), "count": count.astype(int).tolist(),
            "confidence": [None if np.isnan(v) else float(v) for v in mean_conf],
            "observed": [None if np.isnan(v) else float(v) for v in frac]}


# ---------------------------------------------------------------------------------------------------------------
# operating points


def choose_threshold(labels: np.ndarray, scores: np.ndarray, method: str, target: float, fixed: float) -> float:
    """A decision threshold on P(class 1): ``fixed``, ``youden`` (max TPR - FPR), ``sensitivity`` (the highest
    threshold reaching ``target`` sensitivity) or ``specificity`` (the lowest reaching ``target`` specificity)."""
    if method == "fixed":
        return float(fixed)
    labels = np.asarray(labels).astype(int)
    pos = positive_scores(np.asarray(scores, dtype=float))
    if pos is None:
        raise UserError(f"test.threshold_method: {method!r} needs a binary task (the model has "
                        f"{np.asarray(scores).shape[1]} classes); use fixed")
    if len(np.unique(labels)) < 2:
        raise UserError(f"test.threshold_method: {method!r} needs both classes in the validation split")
    fpr, tpr, thr = skm.roc_curve(labels, pos, drop_intermediate=False)
    thr = np.minimum(thr, 1.0)  # sklearn's first threshold is +inf (or max + 1): predict nothing positive
    if method == "youden":
        j = tpr - fpr
        return float(thr[int(np.flatnonzero(j >= j.max() - 1e-12)[0])])  # ties: the strictest threshold
    if method == "sensitivity":
        return float(thr[int(np.argmax(tpr >= target))])  # thresholds decrease: first index that reaches it
    if method == "specificity":
        ok = np.nonzero(1 - fpr >= target)[0]
        return float(thr[ok[-1]])
    raise UserError(f"test.threshold_method: unknown method {method!r}")


def operating_point(labels: np.ndarray, scores: np.ndarray, test: Mapping[str, Any]) -> dict[str, Any]:
    """The decision threshold that the ``test`` section asks for (``threshold_method``, ``threshold``,
    ``threshold_target``), chosen on these (validation) labels and scores: ``{"value", "rule", "source"}``.

    The train job stores it in every model file and the test job applies it, so both use this one function.
    """
    method, target = test["threshold_method"], test["threshold_target"]
    value = choose_threshold(labels, scores, method, float(target), float(test["threshold"]))
    if method == "fixed":
        source = "fixed"
    else:
        source = f"validation ({method}" + (f" {target})" if method != "youden" else ")")
    return {"value": float(value), "rule": method, "source": source}


# ---------------------------------------------------------------------------------------------------------------
# resampling and metrics under image weights


def bootstrap_chunks(n: int, groups: Sequence[Any] | None = None, resamples: int = 2000, seed: int = 0,
                     max_cells: int = 4_000_000) -> Iterator[np.ndarray]:
    """The one bootstrap resampler: (rows, n) multiplicities of the images (how often each is drawn) of
    ``resamples`` resamples, in chunks of at most ``max_cells`` numbers; whole groups (patients) when given.

    Resample r draws as many units (groups, or images) as there are, with replacement, and every image of a
    drawn unit counts as often as its unit was drawn. The draws are the same however they are chunked.
    """
    rng = np.random.default_rng(seed)
    unit = np.arange(n) if groups is None else np.unique(np.asarray(groups, dtype=str), return_inverse=True)[1]
    units = int(unit.max()) + 1 if n else 0
    if units == 0:
        return
    rows = max(1, max_cells // max(units, n))
    for start in range(0, int(resamples), rows):
        draws = rng.integers(0, units, size=(min(rows, int(resamples) - start), units))
        counts = np.bincount((draws + units * np.arange(len(draws))[:, None]).ravel(),
                             minlength=len(draws) * units).reshape(len(draws), units)
        yield counts[:, unit].astype(float)


def bootstrap_weights(n: int, groups: Sequence[Any] | None = None, resamples: int = 2000,
                      seed: int = 0) -> np.ndarray:
    """(resamples, n) image multiplicities of every bootstrap resample at once (:func:`bootstrap_chunks`)."""
    chunks = list(bootstrap_chunks(n, groups, resamples, seed))
    return np.concatenate(chunks) if chunks else np.zeros((0, n))


def bootstrap_ci(labels: np.ndarray, scores: np.ndarray, threshold: float, resamples: int, seed: int,
                 groups: Sequence[str] | None, confidence: float,
                 keys: Sequence[str] = metric_names(has_ci=True, source="test")) -> dict[str, list[float]]:
    """Percentile bootstrap intervals ``{metric: [low, high]}``; resamples whole groups (patients) when given.

    Every resample is a row of image multiplicities (:func:`bootstrap_chunks`) and the metrics are computed
    for many rows at once (:func:`weighted_metric`). Resamples where a metric is undefined (a class absent)
    are left out of that metric; no interval below two units.
    """
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=float)
    n = len(labels)
    units = n if groups is None else len(set(map(str, groups)))
    if units < 2 or resamples <= 0:
        return {}
    predicted = predictions(scores, threshold)
    return percentile_intervals(n, groups, resamples, seed, confidence,
                                lambda w: {k: weighted_metric(k, labels, predicted, scores, w) for k in keys})


def percentile_intervals(n: int, groups: Sequence[Any] | None, resamples: int, seed: int, confidence: float,
                         statistics: Callable[[np.ndarray], dict[str, np.ndarray]]) -> dict[str, list[float]]:
    """Percentile bootstrap intervals of named statistics: ``statistics(weights)`` gives each statistic's values
    on a chunk of resamples (:func:`bootstrap_chunks`); values that are not finite are left out."""
    draws: dict[str, list[np.ndarray]] = {}
    for weights in bootstrap_chunks(n, groups, resamples, seed):
        for key, values in statistics(weights).items():
            draws.setdefault(key, []).append(values)
    tail = (1 - confidence) / 2
    out = {}
    for key, parts in draws.items():
        v = np.concatenate(parts)
        v = v[np.isfinite(v)]
        if len(v):
            out[key] = [float(np.quantile(v, tail)), float(np.quantile(v, 1 - tail))]
    return out


def _onehot(index: np.ndarray, width: int, values: np.ndarray | None = None) -> sparse.csr_matrix:
    n = len(index)
    data = np.ones(n) if values is None else values.astype(float)
    return sparse.csr_matrix((data, (np.arange(n), index)), shape=(n, width))


def _ratio(num: np.ndarray, den: np.ndarray, empty: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), empty)


def _weights_by_score(positive: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, ...]:
    """(R, U) weight of the positives and of the negatives at each distinct score, scores ascending."""
    _, inv = np.unique(scores, return_inverse=True)
    u = int(inv.max()) + 1
    p = np.asarray((_onehot(inv, u, positive).T @ weights.T).T)
    q = np.asarray((_onehot(inv, u, ~positive).T @ weights.T).T)
    return p, q


def _weighted_auc(positive: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted Mann-Whitney ROC-AUC (ties count one half) for each row of weights; NaN without both classes.
    Hand-written because sklearn scores one sample at a time; tests check it against sklearn's sample_weight."""
    p, q = _weights_by_score(positive, scores, weights)
    below = np.cumsum(q, axis=1) - q
    return _ratio((p * (below + 0.5 * q)).sum(axis=1), p.sum(axis=1) * q.sum(axis=1), NAN)


def _weighted_average_precision(positive: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted average precision (sklearn's step-wise sum of precision times the recall gained at each distinct
    score) for each row of weights; NaN without positives."""
    p, q = (a[:, ::-1] for a in _weights_by_score(positive, scores, weights))  # highest score first
    tp, called = np.cumsum(p, axis=1), np.cumsum(p + q, axis=1)
    return _ratio((p * _ratio(tp, called, 0.0)).sum(axis=1), p.sum(axis=1), NAN)


def weighted_metric(metric: str, labels: np.ndarray, predicted: np.ndarray, scores: np.ndarray,
                    weights: np.ndarray) -> np.ndarray:
    """A metric under each row of image weights (R, N) -> (R,), as :func:`classification_metrics` defines it.

    Binary (scores (N,) or (N, 2)): class 1 positive; precision and F1 are 0 and recall and specificity NaN when
    undefined. Multi-class: macro averages over all classes, 0 when undefined (scikit-learn's zero_division=0);
    specificity the mean one-vs-rest specificity; ROC-AUC and PR-AUC the macro one-vs-rest areas, NaN unless
    every class occurs. Balanced accuracy: the mean recall over the classes present.
    """
    labels, predicted = np.asarray(labels).astype(int), np.asarray(predicted).astype(int)
    scores = np.asarray(scores, dtype=float)
    metric = metric_spec(metric).alias_of or metric
    k = n_classes_of(scores)
    if metric in ("roc_auc", "pr_auc"):
        area = _weighted_auc if metric == "roc_auc" else _weighted_average_precision
        if k == 2:
            return area(labels == 1, positive_scores(scores), weights)
        return np.mean([area(labels == c, scores[:, c], weights) for c in range(k)], axis=0)
    cm = np.asarray((_onehot(labels * k + predicted, k * k).T @ weights.T).T).reshape(len(weights), k, k)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    support, called, total = cm.sum(axis=2), cm.sum(axis=1), cm.sum(axis=(1, 2))
    if metric == "accuracy":
        return _ratio(tp.sum(axis=1), total, NAN)
    if metric == "balanced_accuracy":
        present = support > 0
        return _ratio((_ratio(tp, support, 0.0) * present).sum(axis=1), present.sum(axis=1), NAN)
    tn = total[:, None] - support - called + tp
    binary = k == 2
    per_class = {"precision": _ratio(tp, called, 0.0), "recall": _ratio(tp, support, NAN if binary else 0.0),
                 "f1": _ratio(2 * tp, support + called, 0.0),
                 "specificity": _ratio(tn, tn + called - tp, NAN if binary else 0.0)}
    if metric not in per_class:
        raise UserError(f"{metric!r} has no resampled form (choose from "
                        f"{', '.join(metric_names(has_ci=True, source='test'))})")
    values = per_class[metric]
    return values[:, 1] if binary else values.mean(axis=1)


# ---------------------------------------------------------------------------------------------------------------
# presentation-attack detection (ISO/IEC 30107-3 names; class 1 = attack, as AG-PAD)


def pad_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float, fdr: float) -> dict[str, Any]:
    """APCER (attacks accepted as bona fide), BPCER (bona fide rejected), ACER, and TDR at the given FDR.

    Returns the scalars plus ``roc`` ({fdr, tdr, thresholds}) for the semilog plot of AG-PAD.
    TDR@FDR is the highest true-detection rate among ROC points with false-detection rate <= ``fdr``.
    """
    labels = np.asarray(labels).astype(int)
    pos = positive_scores(np.asarray(scores, dtype=float))
    if pos is None:
        raise UserError("test.pad: PAD metrics need a binary task (bona fide 0 vs attack 1)")
    preds = (pos >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(labels, preds, labels=[0, 1]).ravel()
    apcer = fn / (fn + tp) if fn + tp else float("nan")
    bpcer = fp / (fp + tn) if fp + tn else float("nan")
    out: dict[str, Any] = {"apcer": float(apcer), "bpcer": float(bpcer), "acer": float((apcer + bpcer) / 2)}
    key = f"tdr_at_{fdr * 100:g}pct_fdr".replace(".", "_")
    if len(np.unique(labels)) > 1:
        fpr, tpr, thr = skm.roc_curve(labels, pos, drop_intermediate=False)
        ok = fpr <= fdr
        out[key] = float(tpr[ok].max()) if ok.any() else 0.0
        out["roc"] = {"fdr": fpr.tolist(), "tdr": tpr.tolist(),
                      "thresholds": [min(float(t), 1e300) for t in thr]}
    out["tdr_fdr_target"] = fdr
    return out
