"""What the figure kinds share: a run's explanations and predictions read through its view, images for display.

Figure factories get ``(params, view)``: a RunView (scope run) or an ExperimentView (scope experiment). They
read files only through ``view.dir`` and never build the data set (class names come from the manifest).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from medattn.api import RunView


def method_labels(methods: list[dict]) -> list[str]:
    """The explain job's file labels of explain.methods: their names, numbered where a name repeats."""
    names = [m["name"] for m in methods]
    return [n if names.count(n) == 1 else f"{n}-{names[:i].count(n) + 1}" for i, n in enumerate(names)]


def samples(view: RunView) -> dict[str, np.ndarray] | None:
    """The explained images (index, ids, labels, preds, images, masks, ...), or None."""
    return view.dir.read_npz(view.dir.samples)


def method_maps(view: RunView) -> dict[str, np.ndarray]:
    """{method label: attributions (N, C, H, W)} in the order of explain.methods (files present only)."""
    present = view.dir.attribution_labels()
    order = method_labels((view.config.get("explain") or {}).get("methods") or [])
    out = {}
    for label in [n for n in order if n in present] + [n for n in present if n not in order]:
        data = view.dir.read_npz(view.dir.attributions(label)) or {}
        if "attributions" in data:
            out[label] = data["attributions"]
    return out


def display_image(image_chw: np.ndarray) -> np.ndarray:
    """(C, H, W) un-normalised image -> (H, W, 3) in [0, 1] for imshow / captum."""
    img = np.transpose(image_chw, (1, 2, 0)).astype(float)
    img = (img - img.min()) / max(float(img.max() - img.min()), 1e-8)
    return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img


def hwc_map(attr_chw: np.ndarray, channels: int = 3) -> np.ndarray:
    """(C|1, H, W) attributions -> (H, W, channels) with the channels summed when they differ."""
    a = np.transpose(attr_chw, (1, 2, 0))
    if a.shape[2] != channels:
        a = np.repeat(a.sum(axis=2, keepdims=True), channels, axis=2)
    return a


def predictions(view: RunView, checkpoint: str) -> dict[str, Any] | None:
    """labels (N,), predictions (N,), scores (N,) for sigmoid or (N, K), class names from the score columns."""
    rows = view.dir.read_predictions(checkpoint)
    if not rows:
        return None
    score_cols = [c for c in rows[0] if c == "score" or c.startswith("score_")]
    scores = np.array([[float(r[c]) for c in score_cols] for r in rows])
    return {"labels": np.array([int(r["label"]) for r in rows]),
            "predictions": np.array([int(r["prediction"]) for r in rows]),
            "scores": scores[:, 0] if score_cols == ["score"] else scores,
            "classes": [c[len("score_"):] for c in score_cols] if score_cols != ["score"] else None}


def positive_scores(pred: dict[str, Any]) -> np.ndarray | None:
    """P(class 1) of a binary task (sigmoid column or the second softmax column), else None."""
    s = pred["scores"]
    if s.ndim == 1:
        return s
    return s[:, 1] if s.shape[1] == 2 else None


def title(view: RunView, what: str) -> str:
    """'<what> | <experiment> / <variant>' (with the seed when the experiment repeats seeds)."""
    return f"{what} | {view.experiment} / {view.label}"
