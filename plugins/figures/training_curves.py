"""Training curves from metrics/history.csv: the seed's five panels, train against validation."""
from __future__ import annotations

import csv

import matplotlib.pyplot as plt

from medattn.jobs.figure import save

PANELS = (("loss", "Loss"), ("accuracy", "Accuracy"), ("recall", "Recall"), ("precision", "Precision"),
          ("f1", "F1-score"))


def draw(params: dict, run) -> list:
    file = run.dir / "metrics" / "history.csv"
    if not file.is_file():
        return []
    with open(file) as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return []
    epochs = [int(r["epoch"]) for r in rows]
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.4))
    for ax, (key, title) in zip(axes, PANELS):
        for split, style in (("train", "-o"), ("val", "--s")):
            column = f"{split}_{key}"
            if column in rows[0]:
                ax.plot(epochs, [float(r[column]) for r in rows], style, ms=3, label=split)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"{run.experiment} | {run.variant}")
    fig.tight_layout()
    return [save(fig, run, "curves")]
