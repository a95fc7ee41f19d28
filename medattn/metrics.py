"""Classification metrics on collected predictions; scikit-learn does the arithmetic wherever it has it.

Conventions: ``labels`` (N,) ints; ``scores`` (N,) P(class 1) from a sigmoid model or (N, K) class
probabilities from a softmax model. Binary tasks treat class 1 as positive (the disease, the attack);
multi-class metrics are macro averages, with per-class values in :func:`per_class`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import sklearn
from sklearn import metrics as skm

from .errors import UserError

# metrics where lower is better (everything else is higher-is-better)
LOWER_IS_BETTER = frozenset({"loss", "brier", "ece", "apcer", "bpcer", "acer"})
# metrics with a bootstrap confidence interval
CI_METRICS = ("accuracy", "balanced_accuracy", "precision", "recall", "specificity", "f1", "roc_auc", "pr_auc")
# metrics a checkpoint / early stopping / scheduler may monitor, prefixed by train_ or val_
MONITORABLE = ("loss", "accuracy", "balanced_accuracy", "precision", "recall", "specificity", "f1", "roc_auc",
               "pr_auc", "brier", "ece")
# equal-width confidence bins of the ECE inside classification_metrics (the test job's reliability diagram
# uses test.calibration_bins)
ECE_BINS = 10


def mode_of(metric: str) -> str:
    """'min' for losses and calibration errors, 'max' for everything else (``val_f1`` -> max)."""
    base = metric.split("_", 1)[1] if metric.startswith(("train_", "val_")) else metric
    return "min" if base in LOWER_IS_BETTER else "max"


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
# bootstrap


def bootstrap_ci(labels: np.ndarray, scores: np.ndarray, threshold: float, resamples: int, seed: int,
                 groups: Sequence[str] | None, confidence: float, keys: Sequence[str] = CI_METRICS
                 ) -> dict[str, list[float]]:
    """Percentile bootstrap intervals ``{metric: [low, high]}``; resamples whole groups (patients) when given.

    Each resample is a vector of multiplicities (how often each image is drawn), so image and group
    resampling share one code path. Resamples where a metric is undefined (one class absent) are left out
    of that metric. Binary tasks are computed for all resamples at once (see :func:`_weighted_binary`);
    multi-class tasks call :func:`classification_metrics` per resample.
    """
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=float)
    n = len(labels)
    rng = np.random.default_rng(seed)
    if groups is not None:
        _, unit = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    else:
        unit = np.arange(n)
    n_units = int(unit.max()) + 1 if n else 0
    if n_units < 2 or resamples <= 0:
        return {}
    draws = rng.integers(0, n_units, size=(int(resamples), n_units))
    pos = positive_scores(scores)
    values: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    chunk = max(1, 4_000_000 // max(n, 1))
    for start in range(0, int(resamples), chunk):
        d = draws[start:start + chunk]
        unit_counts = np.stack([np.bincount(row, minlength=n_units) for row in d]).astype(float)
        weights = unit_counts[:, unit]  # (R, N): every image of a drawn group, as often as the group was drawn
        if pos is not None:
            got = _weighted_binary(labels, pos, threshold, weights)
        else:
            got = {k: [] for k in keys}
            for w in weights:
                idx = np.repeat(np.arange(n), w.astype(int))
                m = classification_metrics(labels[idx], scores[idx], threshold)
                for k in keys:
                    got[k].append(m.get(k, np.nan))
            got = {k: np.asarray(v, dtype=float) for k, v in got.items()}
        for k in keys:
            if k in got:
                values[k].append(np.asarray(got[k], dtype=float))
    alpha = (1 - confidence) / 2
    out = {}
    for k, parts in values.items():
        v = np.concatenate(parts) if parts else np.zeros(0)
        v = v[np.isfinite(v)]
        if len(v):
            out[k] = [float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))]
    return out


def _weighted_binary(labels: np.ndarray, pos: np.ndarray, threshold: float, weights: np.ndarray
                     ) -> dict[str, np.ndarray]:
    """Binary metrics of many weighted resamples at once (weights (R, N)); NaN where undefined.

    Hand-written because sklearn scores one sample at a time (1000 resamples x 7 metrics is seconds);
    tests check it against sklearn with ``sample_weight``. ROC-AUC is the weighted Mann-Whitney statistic
    (ties count one half), from per-unique-score weight sums.
    """
    from scipy import sparse

    y = labels == 1
    pred = pos >= threshold
    tp, fn = weights @ (y & pred), weights @ (y & ~pred)
    fp, tn = weights @ (~y & pred), weights @ (~y & ~pred)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        spec = np.where(tn + fp > 0, tn / (tn + fp), np.nan)
        out = {
            "accuracy": (tp + tn) / weights.sum(axis=1),
            "recall": recall,
            "specificity": spec,
            "precision": np.where(tp + fp > 0, tp / (tp + fp), 0.0),  # sklearn's zero_division=0
            "f1": np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0),
            "balanced_accuracy": np.where(np.isnan(recall), spec, np.where(np.isnan(spec), recall,
                                                                          (recall + spec) / 2)),
        }
        out["recall"][np.isnan(recall)] = np.nan
        _, inv = np.unique(pos, return_inverse=True)
        u = int(inv.max()) + 1
        rows = np.arange(len(pos))
        onehot_pos = sparse.csr_matrix((y.astype(float), (rows, inv)), shape=(len(pos), u))
        onehot_neg = sparse.csr_matrix(((~y).astype(float), (rows, inv)), shape=(len(pos), u))
        p = np.asarray((onehot_pos.T @ weights.T).T)  # (R, U) weight of positives per unique score
        q = np.asarray((onehot_neg.T @ weights.T).T)
        below = np.cumsum(q, axis=1) - q
        denom = p.sum(axis=1) * q.sum(axis=1)
        out["roc_auc"] = np.where(denom > 0, (p * (below + 0.5 * q)).sum(axis=1) / np.where(denom > 0, denom, 1),
                                  np.nan)
    return out


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
