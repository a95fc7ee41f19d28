"""The figure job: every configured figure component draws what it can from the run directory."""
from __future__ import annotations

from ..model import component_params


def run(run) -> None:
    import matplotlib

    matplotlib.use("Agg")
    cfg = run.config["figure"]
    kinds = cfg["kinds"] or [{"name": n, "params": {}} for n in run.registry.names("figure")]
    written = []
    for spec in kinds:
        draw = run.registry.factory("figure", spec["name"])
        paths = draw(component_params(run.registry, "figure", spec), run) or []
        written.extend(paths)
    run.log(f"   figure: {len(written)} file(s) in {run.dir / 'figures'}")


def save(fig, run, stem: str) -> "object":
    """Save a matplotlib figure as figures/<stem>.<format> at the configured dpi; returns the path."""
    import matplotlib.pyplot as plt

    cfg = run.config.get("figure", {})
    path = run.path("figures", f"{stem}.{cfg.get('format', 'png')}")
    fig.savefig(path, dpi=cfg.get("dpi", 120), bbox_inches="tight")
    plt.close(fig)
    return path
