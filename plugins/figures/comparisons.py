"""The ``comparisons`` figure (experiment scope): a forest plot of each variant's paired difference from its
reference, one panel per metric, from the comparison table (``view.tables["comparisons"]``)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from medattn import api

PARAMS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "metrics": {"type": "array", "items": {"type": "string"}, "minItems": 1, "uniqueItems": True,
                    "description": "metrics drawn, in this order (default: every metric of the table)"},
        "alpha": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "default": 0.05,
                  "description": "adjusted p below which a difference is drawn as a filled marker"},
    },
}


def _float(value: Any) -> float:
    """A number from the table (floats, or strings when read back from comparisons.csv); NaN when empty."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _label(row: dict[str, Any], several_checkpoints: bool) -> str:
    text = f"{row['variant']} vs {row['reference']}"
    return f"{text} ({row['checkpoint']})" if several_checkpoints else text


def draw(params: dict[str, Any], view: api.ExperimentView) -> list[Path]:
    """One panel per metric: delta (marker) and its CI (bar) per variant, a line at 0, adjusted p at the right."""
    import matplotlib.pyplot as plt

    rows = [dict(r) for r in view.tables.get("comparisons") or []]
    wanted = params.get("metrics") or list(dict.fromkeys(r["metric"] for r in rows))
    rows = [r for r in rows if r["metric"] in wanted and math.isfinite(_float(r.get("delta")))]
    if not rows:
        if view.tables.get("comparisons"):  # compared, but nothing finite to draw; without compare: say nothing
            view.log("comparisons figure: no comparison rows to draw")
        return []
    alpha = float(params["alpha"])
    several = len({r.get("checkpoint") for r in rows}) > 1
    metrics = [m for m in wanted if any(r["metric"] == m for r in rows)]
    height = max(len([r for r in rows if r["metric"] == m]) for m in metrics)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 1.2 + 0.45 * height), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        shown = [r for r in rows if r["metric"] == metric]
        for y, r in enumerate(reversed(shown)):
            delta, low, high = _float(r["delta"]), _float(r.get("ci_low")), _float(r.get("ci_high"))
            p = _float(r.get("p_adjusted"))
            significant = p < alpha
            if math.isfinite(low) and math.isfinite(high):
                ax.plot([low, high], [y, y], color="tab:blue", linewidth=1.6)
            ax.plot([delta], [y], "o", color="tab:blue", markerfacecolor="tab:blue" if significant else "white",
                    markersize=6)
            note = f"adj. p={p:.2g}" if math.isfinite(p) else "adj. p n/a"
            ax.annotate(note, (1.02, y), xycoords=("axes fraction", "data"), va="center", fontsize=7)
        ax.axvline(0, color="0.3", linestyle="--", linewidth=0.8)
        ax.set_yticks(range(len(shown)), [_label(r, several) for r in reversed(shown)], fontsize=8)
        ax.set_ylim(-0.7, len(shown) - 0.3)
        ax.set_xlabel(f"delta {metric} (variant - reference)", fontsize=8)
        ax.set_title(metric, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{view.name}: paired differences, 95% CI (filled: adjusted p < {alpha:g})", fontsize=10)
    fig.tight_layout()
    return [api.save_figure(fig, view, "comparisons")]
