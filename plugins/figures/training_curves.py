"""Training curves from the run's per-epoch history: the original's five panels, train against validation."""
from __future__ import annotations

import matplotlib.pyplot as plt

from medattn.api import RunView, save_figure

from .common import title

PANELS = (("loss", "Loss"), ("accuracy", "Accuracy"), ("recall", "Recall"), ("precision", "Precision"),
          ("f1", "F1-score"))


def draw(params: dict, view: RunView) -> list:
    rows = view.dir.read_history()
    if not rows:
        return []
    epochs = [int(r["epoch"]) for r in rows]
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.4))
    for ax, (key, heading) in zip(axes, PANELS):
        for split, style in (("train", "-o"), ("val", "--s")):
            column = f"{split}_{key}"
            if column in rows[0]:
                ax.plot(epochs, [float(r[column]) for r in rows], style, ms=3, label=split)
        ax.set_title(heading)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title(view, "training curves"))
    fig.tight_layout()
    return [save_figure(fig, view, "curves")]
