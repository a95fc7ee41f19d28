"""What the figure kinds share: reading a run's explanations and predictions, images for display."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np


def samples(run_dir: Path) -> dict[str, np.ndarray] | None:
    """explanations/samples.npz as a dict, or None."""
    f = run_dir / "explanations" / "samples.npz"
    if not f.is_file():
        return None
    with np.load(f) as z:
        return {k: z[k] for k in z.files}


def method_maps(run_dir: Path, config: dict | None = None) -> dict[str, np.ndarray]:
    """{method label: attributions (N, C, H, W)} in the order of explain.methods (files present only)."""
    folder = run_dir / "explanations"
    files = {p.stem: p for p in folder.glob("*.npz")} if folder.is_dir() else {}
    order = []
    if config is not None:
        from medattn.attribution import method_labels

        order = method_labels((config.get("explain") or {}).get("methods") or [])
    names = [n for n in order if n in files] + sorted(n for n in files if n not in order)
    out = {}
    for name in names:
        with np.load(files[name]) as z:
            if "attributions" in z.files:
                out[name] = z["attributions"]
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


def tested_checkpoints(run_dir: Path) -> list[str]:
    """Checkpoints the test job wrote predictions for."""
    return sorted(p.stem[len("predictions_"):] for p in (run_dir / "metrics").glob("predictions_*.csv"))


def predictions(run_dir: Path, checkpoint: str) -> dict[str, Any] | None:
    """labels (N,), predictions (N,), scores (N,) for sigmoid or (N, K), class names from the score columns."""
    f = run_dir / "metrics" / f"predictions_{checkpoint}.csv"
    if not f.is_file():
        return None
    with open(f) as fh:
        rows = list(csv.DictReader(fh))
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


def title(run: Any, what: str) -> str:
    """'<what> | <experiment> / <variant>'."""
    return f"{what} | {run.experiment} / {run.variant}"
