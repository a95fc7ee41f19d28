"""Figures of the test job's outputs (each tested checkpoint's predictions and metrics): ROC and precision-recall
curves with bootstrap bands, reliability diagram, confusion matrix, and TDR against FDR on a log axis
(presentation-attack detection, chen2021). One file per tested checkpoint: <kind>_<checkpoint>.<format>."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from sklearn import metrics as skm

from medattn.api import RunView, bootstrap_chunks, save_figure

from .common import positive_scores, predictions, title


def _each(view: RunView, kind: str, draw_one, binary_only: bool = True) -> list:
    out = []
    for ckpt in view.dir.tested_checkpoints():
        pred = predictions(view, ckpt)
        if pred is None or len(np.unique(pred["labels"])) < 2:
            continue
        pos = positive_scores(pred)
        if binary_only and pos is None:
            continue
        fig = draw_one(pred, pos, ckpt)
        if fig is not None:
            out.append(save_figure(fig, view, f"{kind}_{ckpt}"))
    return out


def _bootstrap(labels: np.ndarray, scores: np.ndarray, grid: np.ndarray, curve, n_boot: int, seed: int):
    """(low, high) 95% band of curve(labels, scores, weights) interpolated on ``grid``, over bootstrap resamples
    of the images (medattn's one resampler); resamples without both classes are skipped."""
    values = []
    for weights in bootstrap_chunks(len(labels), None, n_boot, seed):
        for w in weights:
            if w[labels == 1].sum() > 0 and w[labels != 1].sum() > 0:
                values.append(curve(labels, scores, grid, w))
    if not values:
        return None
    return np.percentile(values, 2.5, axis=0), np.percentile(values, 97.5, axis=0)


def _roc_on(labels: np.ndarray, scores: np.ndarray, grid: np.ndarray, weights: np.ndarray) -> np.ndarray:
    fpr, tpr, _ = skm.roc_curve(labels, scores, sample_weight=weights)
    return np.interp(grid, fpr, tpr)


def _pr_on(labels: np.ndarray, scores: np.ndarray, grid: np.ndarray, weights: np.ndarray) -> np.ndarray:
    precision, recall, _ = skm.precision_recall_curve(labels, scores, sample_weight=weights)
    return np.interp(grid, recall[::-1], precision[::-1])


def roc(params: dict, view: RunView) -> list:
    """ROC curve with a bootstrap 95% band."""
    def one(pred, pos, ckpt):
        y = pred["labels"]
        fpr, tpr, _ = skm.roc_curve(y, pos)
        grid = np.linspace(0, 1, 101)
        band = _bootstrap(y, pos, grid, _roc_on, int(params["n_boot"]), int(params["seed"]))
        fig, ax = plt.subplots(figsize=(4.6, 4.2))
        ax.plot(fpr, tpr, lw=2, label=f"AUC {skm.roc_auc_score(y, pos):.3f}")
        if band is not None:
            ax.fill_between(grid, *band, alpha=0.25, label="95% bootstrap band")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="chance")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01),
               title=title(view, f"ROC ({ckpt}, n={len(y)})"))
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(alpha=0.3)
        return fig
    return _each(view, "roc", one)


def pr(params: dict, view: RunView) -> list:
    """Precision-recall curve with a bootstrap 95% band and the prevalence line."""
    def one(pred, pos, ckpt):
        y = pred["labels"]
        precision, recall, _ = skm.precision_recall_curve(y, pos)
        grid = np.linspace(0, 1, 101)
        band = _bootstrap(y, pos, grid, _pr_on, int(params["n_boot"]), int(params["seed"]))
        fig, ax = plt.subplots(figsize=(4.6, 4.2))
        ax.step(recall, precision, where="post", lw=2, label=f"AP {skm.average_precision_score(y, pos):.3f}")
        if band is not None:
            ax.fill_between(grid, *band, alpha=0.25, step="post", label="95% bootstrap band")
        ax.axhline(y.mean(), color="k", ls="--", lw=0.8, label=f"prevalence {y.mean():.2f}")
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01),
               title=title(view, f"precision-recall ({ckpt})"))
        ax.legend(loc="lower left", fontsize=8)
        ax.grid(alpha=0.3)
        return fig
    return _each(view, "pr", one)


def reliability(params: dict, view: RunView) -> list:
    """Reliability diagram with the expected calibration error and a score histogram, from the ``reliability``
    data the test job recorded (its ``calibration_bins`` decide the bins)."""
    out = []
    for ckpt in view.dir.tested_checkpoints():
        metrics = view.dir.read_test_metrics(ckpt) or {}
        data = metrics.get("reliability")
        if not data or not any(data.get("count") or []):
            continue
        binary = len((metrics.get("confusion_matrix") or {}).get("labels") or []) <= 2
        out.append(save_figure(_reliability(data, binary, title(view, f"reliability ({ckpt})")), view,
                               f"reliability_{ckpt}"))
    return out


def _reliability(data: dict, binary: bool, heading: str):
    counts, edges = np.asarray(data["count"]), np.asarray(data["bin_edges"])
    seen = [(c, o) for c, o in zip(data["confidence"], data["observed"]) if c is not None]
    fig, (ax, hx) = plt.subplots(2, 1, figsize=(4.6, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfectly calibrated")
    ax.plot([c for c, _ in seen], [o for _, o in seen], "o-", label=f"model (ECE {data['ece']:.3f})")
    ax.set(ylabel="fraction of positives" if binary else "accuracy", ylim=(0, 1.02), title=heading)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    hx.bar(edges[:-1], counts, width=np.diff(edges), align="edge", edgecolor="k", alpha=0.6)
    hx.set(xlabel="predicted P(class 1)" if binary else "confidence (top class probability)", ylabel="images",
           xlim=(0, 1))
    return fig


def calibration(params: dict, view: RunView) -> list:
    """Reliability before and after test.calibration (15 equal-width bins), with ECE and NLL in the legend;
    nothing for a checkpoint tested without calibration."""
    out = []
    for ckpt in view.dir.tested_checkpoints():
        metrics = view.dir.read_test_metrics(ckpt) or {}
        block = metrics.get("calibration") or {}
        if not block.get("after"):
            continue
        binary = len((metrics.get("confusion_matrix") or {}).get("labels") or []) <= 2
        fig, ax = plt.subplots(figsize=(4.8, 4.4))
        ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfectly calibrated")
        for key, style in (("before", "o-"), ("after", "s-")):
            data = block[f"reliability_{key}"]
            seen = [(c, o) for c, o in zip(data["confidence"], data["observed"]) if c is not None]
            what = "model" if key == "before" else block["method"]
            ax.plot([c for c, _ in seen], [o for _, o in seen], style, ms=4,
                    label=f"{what} (ECE {block[key]['ece15']:.3f}, NLL {block[key]['nll']:.3f})")
        ax.set(xlabel="predicted P(class 1)" if binary else "confidence (top class probability)",
               ylabel="fraction of positives" if binary else "accuracy", xlim=(0, 1), ylim=(0, 1.02),
               title=title(view, f"calibration ({ckpt}, {block['bins']} bins)"))
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(alpha=0.3)
        out.append(save_figure(fig, view, f"calibration_{ckpt}"))
    return out


def confusion(params: dict, view: RunView) -> list:
    """Confusion matrix (counts, with row-normalised rates in brackets) at the test job's threshold."""
    def one(pred, pos, ckpt):
        names = view.class_names or pred["classes"] or ["0", "1"]
        labels = list(range(len(names)))
        cm = skm.confusion_matrix(pred["labels"], pred["predictions"], labels=labels)
        rate = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2.6, 1.1 * len(names) + 2))
        im = ax.imshow(rate, cmap="Blues", vmin=0, vmax=1)
        for i in labels:
            for j in labels:
                ax.text(j, i, f"{cm[i, j]}\n({rate[i, j]:.2f})", ha="center", va="center", fontsize=9,
                        color="white" if rate[i, j] > 0.5 else "black")
        ax.set(xticks=labels, yticks=labels, xticklabels=names, yticklabels=names, xlabel="predicted",
               ylabel="true", title=title(view, f"confusion ({ckpt})"))
        fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
        return fig
    return _each(view, "confusion", one, binary_only=False)


def tdr_at(fdr: np.ndarray, tdr: np.ndarray, at: float) -> float:
    """TDR at a given FDR (both fractions), the ROC read at that false-detection rate (step interpolation)."""
    ok = fdr <= at
    return float(tdr[ok].max()) if ok.any() else 0.0


def tdr_fdr(params: dict, view: RunView) -> list:
    """TDR (%) against FDR (%) on a log axis with the operating line at FDR = 0.2% (AG-PAD's headline)."""
    at = float(params["fdr_percent"]) / 100

    def one(pred, pos, ckpt):
        y = pred["labels"]
        fdr, tdr, _ = skm.roc_curve(y, pos)
        value = tdr_at(fdr, tdr, at)
        floor = min(at / 10, 1 / max(1, (y == 0).sum())) * 100
        fig, ax = plt.subplots(figsize=(4.8, 4.2))
        ax.step(np.maximum(fdr * 100, floor), tdr * 100, where="post", lw=2,
                label=f"TDR @ {at * 100:g}% FDR = {value * 100:.1f}%")
        ax.axvline(at * 100, color="k", ls="--", lw=1, label=f"FDR = {at * 100:g}%")
        ax.set_xscale("log")
        ax.set(xlabel="false detection rate (%), log scale", ylabel="true detection rate (%)",
               xlim=(floor, 100), ylim=(0, 101), title=title(view, f"TDR vs FDR ({ckpt})"))
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(alpha=0.3, which="both")
        return fig
    return _each(view, "tdr_fdr", one)
