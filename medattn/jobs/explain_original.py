"""``explain.naming: original``: the attribution files of the original code (goncalves2021), beside the .npz.

For each explained image ``img_{idx}_original_{label}.npy`` (the image) and, per method,
``img_{idx}_{method}_{variant}_label_{label}.npy`` (its map), both (H, W, 3) float32: one-channel data repeated
to three, as the original's RGB-replicated images.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..rundir import RunDir
from .explain_select import placement


def original_dir(rd: RunDir, config: dict[str, Any]) -> Path:
    """explain.original_dir (relative to the run directory), else ``<experiment>/attributes/<backbone>/``, one
    folder shared by the variants of a backbone (``.../<backbone>/<seed>/`` for the repeats of ``seeds:``)."""
    folder = config["explain"]["original_dir"]
    if folder:
        return (rd.root / folder).resolve()
    experiment, _, repeat = placement(rd, config["seed"])
    parts = ("attributes", config["model"]["backbone"]["name"]) + (() if repeat is None else (str(repeat),))
    return experiment.file(*parts)


def hwc3(a: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W, 3) float32: one channel repeated."""
    a = np.transpose(a, (1, 2, 0)).astype(np.float32)
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a


def original_files(rd: RunDir, variant: str, config: dict[str, Any], label: str, chosen: dict,
                   attributions: np.ndarray) -> list[Path]:
    """Write the original's files for one method; ``explain.original_names`` renames the method (the original
    wrote 'dl' for saliency) and ``explain.original_variant`` the variant."""
    cfg = config["explain"]
    out_dir = original_dir(rd, config)
    out_dir.mkdir(parents=True, exist_ok=True)
    method = cfg["original_names"].get(label, label)
    variant = cfg["original_variant"] or variant
    written = []
    for idx, y, image, attr in zip(chosen["index"], chosen["labels"], chosen["images"], attributions):
        image_file = out_dir / f"img_{int(idx)}_original_{int(y)}.npy"
        np.save(image_file, hwc3(image))
        map_file = out_dir / f"img_{int(idx)}_{method}_{variant}_label_{int(y)}.npy"
        np.save(map_file, hwc3(attr))
        written += [image_file, map_file]
    return written
