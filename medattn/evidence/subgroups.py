"""Performance per subgroup (site, device, age band, density, view ...): fairlearn's ``MetricFrame`` computes the
metrics of every group of a metadata column, the worst group and the largest gap between groups; their percentile
bootstrap intervals come from medattn's own resampler (:func:`medattn.evidence.metrics.bootstrap_ci`), which draws
whole patients when the images carry them, as the whole split's intervals do. MetricFrame's own bootstrap
(``n_boot``) draws images one by one: with several images of one patient in a group, its intervals would be too
narrow.

A group whose images are all of one class has no ROC AUC, sensitivity or specificity: those cells are left empty
and the row's ``note`` says why (the other metrics are still given). Binary tasks: class 1 positive; multi-class:
accuracy, balanced accuracy and the macro one-vs-rest ROC AUC.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import UserError

BINARY = ("accuracy", "sensitivity", "specificity", "roc_auc")
MULTI = ("accuracy", "balanced_accuracy", "roc_auc")
COLUMNS = ("column", "group", "n", "n_positive", "metric", "value", "ci_low", "ci_high", "note")


def _metric_functions(binary: bool, threshold: float, k: int) -> dict[str, Any]:
    """{name: f(y_true, scores)} as fairlearn calls them (NaN where a group cannot define it)."""
    from sklearn import metrics as skm

    from . import metrics as M

    def predicted(s: np.ndarray) -> np.ndarray:
        return M.predictions(s if not binary else s.reshape(-1), threshold)

    def auc(y: np.ndarray, s: np.ndarray) -> float:
        if len(np.unique(y)) < 2:
            return math.nan
        if binary:
            return float(skm.roc_auc_score(y, s.reshape(-1)))
        if len(np.unique(y)) < k:
            return math.nan
        return float(skm.roc_auc_score(y, s, multi_class="ovr", labels=list(range(k))))

    def rate(positive: int):
        def fn(y: np.ndarray, s: np.ndarray) -> float:
            mine = y == positive
            return float((predicted(s)[mine] == positive).mean()) if mine.any() else math.nan
        return fn

    out = {"n": lambda y, s: float(len(y)), "n_positive": lambda y, s: float((y == 1).sum()),
           "accuracy": lambda y, s: float((predicted(s) == y).mean())}
    if binary:
        out.update(sensitivity=rate(1), specificity=rate(0), roc_auc=auc)
    else:
        out.update(balanced_accuracy=lambda y, s: float(skm.balanced_accuracy_score(y, predicted(s))), roc_auc=auc)
    return out


def subgroup_table(labels: Any, scores: Any, metadata: Sequence[dict[str, str]], columns: Sequence[str], *,
                   threshold: float = 0.5, resamples: int = 2000, seed: int = 0, confidence: float = 0.95,
                   patients: Sequence[Any] | None = None) -> dict[str, Any]:
    """``{"rows": [...COLUMNS], "worst": [...], "gaps": [...]}`` for every metadata column of ``columns``.

    ``patients`` (one per image, or None): the intervals resample whole patients within each group."""
    from fairlearn.metrics import MetricFrame

    from . import metrics as M

    y = np.asarray(labels).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    binary = M.positive_scores(s) is not None
    pos = M.positive_scores(s) if binary else s
    k = M.n_classes_of(s)
    functions = _metric_functions(binary, threshold, k)
    names = BINARY if binary else MULTI
    have = sorted({c for row in metadata for c in row})
    rows: list[dict[str, Any]] = []
    worst: list[dict[str, Any]] = []
    gaps: list[dict[str, Any]] = []
    units = None if patients is None else np.asarray([str(p) for p in patients])
    for column in columns:
        if column not in have:
            raise UserError(f"test.subgroups: the test images carry no column {column!r} (they carry: "
                            f"{', '.join(have) or 'no metadata'})")
        groups = np.array([str(row.get(column, "")) for row in metadata])
        with warnings.catch_warnings():  # a metric a group cannot define: NaN, as below
            warnings.simplefilter("ignore")
            frame = MetricFrame(metrics=functions, y_true=y, y_pred=pos.reshape(len(y), -1) if not binary else pos,
                                sensitive_features=pd_series(groups, column))
        table = frame.by_group
        for group in table.index:
            n, n_pos = int(table.loc[group, "n"]), int(table.loc[group, "n_positive"])
            mine = groups == group
            one_class = len(np.unique(y[mine])) < 2
            ci = M.bootstrap_ci(y[mine], s[mine], threshold, resamples, seed,
                                None if units is None else units[mine], confidence, keys=names) \
                if resamples > 0 else {}
            for metric in names:
                value = float(table.loc[group, metric])
                low, high = ci.get(metric, (math.nan, math.nan))
                note = "one class in this group: no ROC AUC" if one_class and metric == "roc_auc" else (
                    "no image of the class it needs" if not math.isfinite(value) else "")
                rows.append({"column": column, "group": str(group), "n": n, "n_positive": n_pos, "metric": metric,
                             "value": value, "ci_low": low, "ci_high": high, "note": note})
        for metric in names:
            values = table[metric].astype(float)
            finite = values[np.isfinite(values)]
            if len(finite) == 0:
                continue
            worst.append({"column": column, "metric": metric, "group": str(finite.idxmin()),
                          "value": float(finite.min())})
            gaps.append({"column": column, "metric": metric, "gap": float(finite.max() - finite.min()),
                         "best": str(finite.idxmax()), "worst": str(finite.idxmin())})
    return {"rows": rows, "worst": worst, "gaps": gaps}


def pd_series(values: np.ndarray, name: str) -> Any:
    """The groups as a named pandas Series (fairlearn names its index after it)."""
    import pandas as pd

    return pd.Series(values, name=name)
