"""Classification metrics on collected predictions (scikit-learn does the arithmetic)."""
from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def positive_scores(scores: np.ndarray) -> np.ndarray | None:
    """P(class 1) for a binary task: scores (N,) from a sigmoid model or (N, 2) from a softmax one."""
    if scores.ndim == 1:
        return scores
    return scores[:, 1] if scores.shape[1] == 2 else None


def predictions(scores: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    pos = positive_scores(scores)
    return (pos >= threshold).astype(int) if pos is not None else scores.argmax(axis=1)


def classification_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """accuracy, precision, recall, f1 (class 1 positive; macro for multi-class) and ROC-AUC where defined."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=float)
    preds = predictions(scores, threshold)
    pos = positive_scores(scores)
    average = "binary" if pos is not None else "macro"
    out = {
        "n": int(len(labels)),
        "accuracy": float(skm.accuracy_score(labels, preds)),
        "precision": float(skm.precision_score(labels, preds, average=average, zero_division=0)),
        "recall": float(skm.recall_score(labels, preds, average=average, zero_division=0)),
        "f1": float(skm.f1_score(labels, preds, average=average, zero_division=0)),
    }
    if len(np.unique(labels)) > 1:
        if pos is not None:
            out["roc_auc"] = float(skm.roc_auc_score(labels, pos))
        elif len(np.unique(labels)) == scores.shape[1]:
            out["roc_auc"] = float(skm.roc_auc_score(labels, scores, multi_class="ovr"))
    return out
