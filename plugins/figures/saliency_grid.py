"""Saliency grids drawn with captum's visualiser, as the original code (goncalves2021) drew its maps.

Each map is captum's blended heat map: channels summed, scaled by the (100 - outlier_perc) percentile of |values|
to [-1, 1], red-white-green colour map (red negative, green positive) at alpha 0.5 over the grey image; the
ground-truth mask is outlined in cyan. ``style: original`` writes instead one figure per image and map, named and
titled as the original's (attributes/img_{idx}_original_{label}.png, img_{idx}_{method}_{variant}_label_{label}.png
under the run's figures).
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from captum.attr import visualization as viz
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LinearSegmentedColormap, Normalize

from medattn.api import ExperimentView, RunView, save_figure

from .common import display_image, hwc_map, method_maps, samples

CMAP = LinearSegmentedColormap.from_list("RdWhGn", ["red", "white", "green"])  # captum's map for sign "all"


def _cell(fig, ax, attr_chw: np.ndarray, image: np.ndarray, params: dict, mask: np.ndarray | None) -> None:
    if not scalable(attr_chw, params):  # captum cannot scale an all-zero map
        ax.imshow(image.mean(axis=2), cmap="gray")
        ax.text(0.5, 0.5, "all zero", transform=ax.transAxes, ha="center", color="red", fontsize=9)
        _finish(ax, mask)
        return
    viz.visualize_image_attr(hwc_map(attr_chw, image.shape[2]), image, method="blended_heat_map",
                             sign=params["sign"], outlier_perc=params["outlier_perc"], show_colorbar=False,
                             plt_fig_axis=(fig, ax), use_pyplot=False)
    _finish(ax, mask)


def scalable(attr_chw: np.ndarray, params: dict) -> bool:
    """Whether captum can scale the map: its (100 - outlier_perc) percentile of |summed channels| is not 0."""
    a = attr_chw.sum(axis=0)
    a = {"positive": np.clip(a, 0, None), "negative": np.clip(-a, 0, None)}.get(params["sign"], np.abs(a))
    return bool(np.percentile(a, 100 - float(params["outlier_perc"])) > 0)


def _finish(ax, mask: np.ndarray | None) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if mask is not None and mask.any():
        ax.contour(mask, levels=[0.5], colors="cyan", linewidths=0.8)


def _colorbar(fig, axes, sign: str) -> None:
    lo = -1 if sign == "all" else 0
    sm = ScalarMappable(norm=Normalize(lo, 1), cmap=CMAP if sign == "all" else "Greens")
    cb = fig.colorbar(sm, ax=axes, fraction=0.025, pad=0.02)
    cb.set_label("attribution / its (100 - outlier_perc) percentile", fontsize=8)


def grid(columns: list[tuple[str, np.ndarray]], smp: dict, class_names: list[str], params: dict, heading: str):
    """The figure: rows images, columns the original and each (label, attributions) column."""
    n = min(int(params["max_images"]), len(smp["labels"]))
    ncol = 1 + len(columns)
    fig, axes = plt.subplots(n, ncol, figsize=(2.3 * ncol + 0.8, 2.3 * n + 0.6), squeeze=False)
    for row in range(n):
        image = display_image(smp["images"][row])
        mask = smp["masks"][row, 0] if "masks" in smp else None
        ax = axes[row, 0]
        ax.imshow(image, cmap="gray")
        _finish(ax, mask)
        y, p = int(smp["labels"][row]), int(smp["preds"][row])
        ax.set_ylabel(f"#{int(smp['index'][row])}\ntrue {class_names[y]}\npred {class_names[p]}", fontsize=8)
        for col, (_, attr) in enumerate(columns, start=1):
            _cell(fig, axes[row, col], attr[row], image, params, mask)
    for col, (label, _) in enumerate([("image", None), *columns]):
        axes[0, col].set_title(label, fontsize=9)
    _colorbar(fig, axes, params["sign"])
    fig.suptitle(heading + ("  (cyan: ground-truth mask)" if "masks" in smp else ""), fontsize=10)
    return fig


def draw(params: dict, view: RunView) -> list:
    """Run scope: the grid (or the original's one figure per image and map)."""
    smp = samples(view)
    maps = method_maps(view)
    if smp is None or not maps:
        return []
    if params["style"] == "original":
        return original_style(params, view, smp, maps)
    fig = grid(list(maps.items()), smp, view.class_names, params,
               f"{view.experiment} / {view.label}: attributions (red negative, green positive)")
    return [save_figure(fig, view, "saliency_grid")]


def original_style(params: dict, view: RunView, smp: dict, maps: dict) -> list:
    """One 6x6-inch figure per image and map, captum's visualiser with its colour bar, named as the original's
    files."""
    out = []
    n = min(int(params["max_images"]), len(smp["labels"]))
    for row in range(n):
        idx, y = int(smp["index"][row]), int(smp["labels"][row])
        image = display_image(smp["images"][row])
        fig, _ = viz.visualize_image_attr(np.ones_like(image), image, method="original_image", title="Image",
                                          use_pyplot=False)
        out.append(save_figure(fig, view, f"attributes/img_{idx}_original_{y}"))
        for label, attr in maps.items():
            heading, stem = f"{view.variant} ({label})", f"attributes/img_{idx}_{label}_{view.variant}_label_{y}"
            if not scalable(attr[row], params):  # captum cannot scale an all-zero map: say so on the grey image
                fig, ax = plt.subplots(figsize=(6, 6))
                _cell(fig, ax, attr[row], image, params, None)
                ax.set_title(heading)
            else:
                fig, _ = viz.visualize_image_attr(hwc_map(attr[row], 3), image, method="blended_heat_map",
                                                  sign="all", outlier_perc=params["outlier_perc"],
                                                  show_colorbar=True, title=heading, use_pyplot=False)
            out.append(save_figure(fig, view, stem))
    return out


def draw_variants(params: dict, view: ExperimentView) -> list:
    """Experiment scope: columns each method x variant, rows the images every variant explained (matched by id)."""
    per_run = []
    for run in view.runs:
        smp, maps = samples(run), method_maps(run)
        if smp is not None and maps:
            per_run.append((run, smp, maps))
    if len(per_run) < 2:
        return []
    common = [i for i in per_run[0][1]["ids"] if all(i in s["ids"] for _, s, _ in per_run[1:])]
    if not common:
        return []
    base = per_run[0][1]
    rows = [list(base["ids"]).index(i) for i in common]
    smp = {k: v[rows] for k, v in base.items() if isinstance(v, np.ndarray) and len(v) == len(base["ids"])}
    methods = list(dict.fromkeys(m for _, _, maps in per_run for m in maps))
    columns = []
    for method in methods:
        for run, s, maps in per_run:
            if method in maps:
                pos = [list(s["ids"]).index(i) for i in common]
                columns.append((f"{method}\n{run.label}", maps[method][pos]))
    fig = grid(columns, smp, per_run[0][0].class_names, params, f"{view.name}: attributions by method and variant "
                                                                f"(red negative, green positive; pred = first variant's)")
    return [save_figure(fig, view, "saliency_grid_variants")]
