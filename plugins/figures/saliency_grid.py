"""Saliency grid: rows images, columns the original and each explainer, drawn with captum's visualiser.

Each map is captum's blended heat map (channels summed, scaled by the (100 - outlier_perc) percentile of
|values|, diverging colour map) over the grey image, as the seed drew them; the ground-truth mask is outlined.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from captum.attr import visualization as viz

from medattn.jobs.figure import save


def draw(params: dict, run) -> list:
    exp_dir = run.dir / "explanations"
    if not (exp_dir / "samples.npz").is_file():
        return []
    samples = np.load(exp_dir / "samples.npz")
    methods = sorted(p for p in exp_dir.glob("*.npz") if "attributions" in np.load(p).files)
    if not methods:
        return []
    n = min(int(params["max_images"]), len(samples["labels"]))
    maps = {p.stem: np.load(p)["attributions"] for p in methods}
    class_names = run.class_names()
    fig, axes = plt.subplots(n, 1 + len(maps), figsize=(2.6 * (1 + len(maps)), 2.6 * n), squeeze=False)
    for row in range(n):
        image = np.transpose(samples["images"][row], (1, 2, 0))
        image = (image - image.min()) / max(float(image.max() - image.min()), 1e-8)
        if image.shape[2] == 1:
            image = np.repeat(image, 3, axis=2)
        label = class_names[int(samples["labels"][row])]
        pred = class_names[int(samples["preds"][row])]
        ax = axes[row, 0]
        ax.imshow(image, cmap="gray")
        ax.set_title(f"true {label} / pred {pred}", fontsize=8)
        for col, (name, attr) in enumerate(maps.items(), start=1):
            a = np.transpose(attr[row], (1, 2, 0))
            if a.shape[2] != image.shape[2]:
                a = np.repeat(a.sum(axis=2, keepdims=True), image.shape[2], axis=2)
            viz.visualize_image_attr(a, image, method="blended_heat_map", sign=params["sign"],
                                     outlier_perc=params["outlier_perc"], show_colorbar=False,
                                     plt_fig_axis=(fig, axes[row, col]), use_pyplot=False)
            if row == 0:
                axes[row, col].set_title(name, fontsize=9)
        for col in range(1 + len(maps)):
            axes[row, col].axis("off")
            if "masks" in samples.files:
                axes[row, col].contour(samples["masks"][row, 0], levels=[0.5], colors="cyan", linewidths=0.8)
    fig.suptitle(f"{run.experiment} | {run.variant} (red: negative, green: positive)", fontsize=10)
    fig.tight_layout()
    return [save(fig, run, "saliency_grid")]
