"""Figures of the test job's clinical outputs, one file per tested checkpoint: the decision curve (net benefit
against treating all and none), the risk-coverage curves (selective prediction) and a forest plot of the
metrics per subgroup with their intervals."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from medattn.api import RunView, save_figure

from .common import title


def _tested(view: RunView, key: str):
    for ckpt in view.dir.tested_checkpoints():
        metrics = view.dir.read_test_metrics(ckpt) or {}
        if metrics.get(key):
            yield ckpt, metrics


def decision_curve(params: dict, view: RunView) -> list:
    """Net benefit over threshold probabilities 0.01-0.99 (binary tasks)."""
    out = []
    for ckpt, metrics in _tested(view, "decision"):
        curve = metrics["decision"]["curve"]
        t = np.asarray(curve["threshold"])
        fig, ax = plt.subplots(figsize=(5.0, 4.0))
        ax.plot(t, curve["model"], lw=2, label="model")
        ax.plot(t, curve["treat_all"], color="0.4", lw=1, label="treat all")
        ax.plot(t, curve["treat_none"], "k--", lw=0.8, label="treat none")
        top = max(max(curve["model"]), max(curve["treat_all"]), 0.05)
        ax.set(xlabel="threshold probability", ylabel="net benefit", xlim=(0, 1), ylim=(-0.05, top * 1.1),
               title=title(view, f"decision curve ({ckpt})"))
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        out.append(save_figure(fig, view, f"decision_curve_{ckpt}"))
    return out


def risk_coverage(params: dict, view: RunView) -> list:
    """Risk (error rate of the kept images) against coverage, ranked by the configured uncertainty and by the
    plain top probability, AURC in the legend."""
    out = []
    for ckpt, metrics in _tested(view, "uncertainty"):
        block = metrics["uncertainty"]
        fig, ax = plt.subplots(figsize=(5.0, 4.0))
        for key, label in (("aurc", "uncertainty: " + block["uncertainty"]), ("aurc_max_probability",
                                                                              "top probability")):
            curve = block[f"risk_coverage_{key}"]
            ax.plot(curve["coverage"], curve["risk"], lw=1.5, label=f"{label} (AURC {block[key]:.4f})")
        ax.set(xlabel="coverage (share of images the model keeps)", ylabel="risk (error rate of the kept images)",
               xlim=(0, 1), title=title(view, f"risk-coverage ({ckpt})"))
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        out.append(save_figure(fig, view, f"risk_coverage_{ckpt}"))
    return out


def subgroups(params: dict, view: RunView) -> list:
    """Forest plot: each metric per group of each test.subgroups column, with its bootstrap interval."""
    out = []
    for ckpt, _ in _tested(view, "subgroups"):
        rows = [r for r in view.dir.read_subgroups(ckpt) if r["value"] not in ("", "nan")]
        names = list(dict.fromkeys(r["metric"] for r in rows))
        if not names:
            continue
        fig, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names) + 1.2, 0.35 * len(rows) / len(names) + 1.5),
                                 sharey=True, squeeze=False)
        labels = list(dict.fromkeys(f"{r['column']}={r['group']} (n={r['n']})" for r in rows))
        for ax, metric in zip(axes[0], names):
            for r in (r for r in rows if r["metric"] == metric):
                y = labels.index(f"{r['column']}={r['group']} (n={r['n']})")
                value = float(r["value"])
                if r["ci_low"] not in ("", "nan"):
                    ax.plot([float(r["ci_low"]), float(r["ci_high"])], [y, y], color="C0", lw=1.2)
                ax.plot([value], [y], "o", color="C0")
            ax.set_title(metric, fontsize=9)
            ax.grid(axis="x", alpha=0.3)
            ax.set_xlim(-0.02, 1.02)
        axes[0, 0].set_yticks(range(len(labels)), labels, fontsize=8)
        axes[0, 0].set_ylim(len(labels) - 0.5, -0.5)
        fig.suptitle(title(view, f"subgroups ({ckpt})"), fontsize=10)
        fig.tight_layout()
        out.append(save_figure(fig, view, f"subgroups_{ckpt}"))
    return out
