"""Figures of the explain job's other outputs: deletion / insertion curves and the attention maps."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from medattn.api import RunView, save_figure

from .common import display_image, samples, title


def deletion_insertion(params: dict, view: RunView) -> list:
    """Mean deletion and insertion curves per method (the explain job's quality curves), AUC in the legend."""
    curves = view.dir.read_npz(view.dir.quality_curves)
    if curves is None:
        return []
    panels = [p for p in ("deletion", "insertion") if any(k.endswith("/" + p) for k in curves)]
    if not panels:
        return []
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for key, c in curves.items():
            method, _, kind = key.rpartition("/")
            if kind != panel:
                continue
            x = curves.get(f"{method}/fractions", np.linspace(0, 1, c.shape[1]))
            mean = c.mean(axis=0)
            area = float(((mean[1:] + mean[:-1]) / 2 * np.diff(x)).sum())
            ax.plot(x * 100, mean, lw=2, label=f"{method} (AUC {area:.3f})")
            if len(c) > 1:
                ax.fill_between(x * 100, c.min(axis=0), c.max(axis=0), alpha=0.12)
        better = "lower is better" if panel == "deletion" else "higher is better"
        ax.set(xlabel=f"pixels {'removed' if panel == 'deletion' else 'inserted'} (%, most relevant first)",
               ylabel="P(explained class)", ylim=(0, 1.02), title=f"{panel} ({better})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title(view, "faithfulness curves (mean over images; band: min-max)"), fontsize=10)
    fig.tight_layout()
    return [save_figure(fig, view, "deletion_insertion")]


def _spatial(m: np.ndarray, size: tuple[int, int]) -> np.ndarray | None:
    """One image's map as (H, W): spatial gate as is, position attention (N, N) by column mean on a square grid."""
    import torch
    import torch.nn.functional as F

    if m.ndim == 3 and m.shape[0] == 1:
        img = m[0]
    elif m.ndim == 2 and m.shape[0] == m.shape[1] and int(np.sqrt(m.shape[0])) ** 2 == m.shape[0]:
        side = int(np.sqrt(m.shape[0]))
        img = m.mean(axis=0).reshape(side, side)
    else:
        return None
    return F.interpolate(torch.as_tensor(img, dtype=torch.float32)[None, None], size=size, mode="bilinear",
                         align_corners=False)[0, 0].numpy()


def attention(params: dict, view: RunView) -> list:
    """The attention module's raw maps of the explained images over each image; channel maps as profiles."""
    maps = view.dir.read_npz(view.dir.attention_raw)
    smp = samples(view)
    if not maps or smp is None:
        return []
    n = min(int(params["max_images"]), len(smp["labels"]))
    keys = sorted(maps)
    fig, axes = plt.subplots(n, 1 + len(keys), figsize=(2.8 * (1 + len(keys)) + 0.5, 2.6 * n + 0.6), squeeze=False)
    size = tuple(smp["images"].shape[-2:])
    for row in range(n):
        image = display_image(smp["images"][row])
        axes[row, 0].imshow(image)
        axes[row, 0].set_ylabel(f"#{int(smp['index'][row])}", fontsize=8)
        axes[row, 0].set_xticks([])
        axes[row, 0].set_yticks([])
        for col, key in enumerate(keys, start=1):
            ax = axes[row, col]
            m = maps[key][row]
            img = _spatial(m, size)
            if img is not None:
                ax.imshow(image.mean(axis=2), cmap="gray")
                flat = np.ptp(img) <= 1e-6 * max(1.0, float(np.abs(img).max()))
                lo, hi = (img.min() - 0.5, img.max() + 0.5) if flat else (img.min(), img.max())
                im = ax.imshow(img, cmap="jet", alpha=0.5, vmin=lo, vmax=hi)
                if flat:
                    ax.text(0.5, 0.05, f"constant {img.mean():.3g}", transform=ax.transAxes, ha="center",
                            fontsize=8, color="white")
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, format="%.3g")
                ax.set_xticks([])
                ax.set_yticks([])
            else:  # channel attention: weight per channel ((C, 1, 1) gate, or (C, C) row means)
                w = m.reshape(m.shape[0], -1).mean(axis=1)
                ax.plot(np.sort(w)[::-1], lw=1.2)
                ax.set(xlabel="channel (sorted)", ylabel="weight")
                ax.tick_params(labelsize=7)
            if row == 0:
                ax.set_title(key, fontsize=9)
    axes[0, 0].set_title("image", fontsize=9)
    fig.suptitle(title(view, "attention maps"), fontsize=10)
    fig.tight_layout()
    return [save_figure(fig, view, "attention")]
