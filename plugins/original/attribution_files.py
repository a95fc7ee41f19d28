"""The attribution files of the original Gonçalves & Cardoso (2021) code, written from a run's explanations.

For each explained image ``img_{idx}_original_{label}.npy`` (the image) and, per method,
``img_{idx}_{method}_{variant}_label_{label}.npy`` (its map), both (H, W, 3) float32: one-channel data repeated
to three, as the original's RGB-replicated images. By default they go to
``<experiment>/attributes/<backbone>/`` (``.../<backbone>/<seed>/`` for the repeats of ``seeds:``), one folder
shared by the variants of a backbone, and the variant in the file name is the original's setting name
(baseline, baselinedaug, mldam, mldamdaug).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from medattn.api import RunView, atomic_write_bytes

from .results_text import setting


def folder(params: dict, view: RunView) -> Path:
    """Where the files go (see the module docstring)."""
    if params["dir"]:
        return (view.dir.root / params["dir"]).resolve()
    experiment = view.dir.root.parent if view.seed is None else view.dir.root.parent.parent
    parts = ["attributes", view.config["model"]["backbone"]["name"]] + ([] if view.seed is None else [str(view.seed)])
    return experiment.joinpath(*parts)


def hwc3(a: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W, 3) float32: one channel repeated."""
    a = np.transpose(a, (1, 2, 0)).astype(np.float32)
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a


def write(params: dict, view: RunView) -> list[Path]:
    """Every explained image and every method's map of the run in the original's file naming."""
    samples = view.dir.read_npz(view.dir.samples)
    if samples is None:
        return []
    out = folder(params, view)
    out.mkdir(parents=True, exist_ok=True)
    variant = params["variant"] or setting(view.config)
    written = []
    for idx, y, image in zip(samples["index"], samples["labels"], samples["images"]):
        written.append(_save(out / f"img_{int(idx)}_original_{int(y)}.npy", hwc3(image)))
    for label in view.dir.attribution_labels():
        maps = view.dir.read_npz(view.dir.attributions(label))["attributions"]
        method = params["names"].get(label, label)
        for idx, y, attr in zip(samples["index"], samples["labels"], maps):
            written.append(_save(out / f"img_{int(idx)}_{method}_{variant}_label_{int(y)}.npy", hwc3(attr)))
    return written


def _save(path: Path, array: np.ndarray) -> Path:
    """An .npy file written whole (temporary file, then rename)."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write_bytes(path, buffer.getvalue())
    return path
