"""The figure job: every configured figure component draws what it can from the run directory."""
from __future__ import annotations

from ..config.schema import component_params, slot

PARAMS = {
    "type": "object", "additionalProperties": False, "default": {},
    "description": "figures of a run, under figures/",
    "properties": {
        "kinds": {"type": "array", "items": slot("figure", "a figure kind"), "default": [],
                  "description": "figure components to draw; empty: every registered kind that applies"},
        "format": {"enum": ["png", "svg", "pdf"], "default": "png", "description": "file format"},
        "dpi": {"type": "integer", "minimum": 30, "maximum": 600, "default": 120, "description": "resolution"},
    },
}


def run(run) -> None:
    import matplotlib

    matplotlib.use("Agg")
    written = []
    for spec in selected_kinds(run, scope="run"):
        draw = run.registry.factory("figure", spec["name"])
        paths = draw(component_params(run.registry, "figure", spec), run) or []
        written.extend(paths)
    run.log(f"   figure: {len(written)} file(s) in {run.dir / 'figures'}")


def selected_kinds(run, scope: str) -> list[dict]:
    """The figure specs of ``figure.kinds`` (all registered kinds when empty) of one scope: run or experiment.

    Kinds run in the listed order, except that a component's ``defaults["order"]`` (default 0) sorts it later:
    the report (order 100) gathers what the others drew."""
    reg = run.registry
    kinds = run.config["figure"]["kinds"] or [{"name": n, "params": {}} for n in reg.names("figure")]
    kinds = [k for k in kinds if reg.get("figure", k["name"]).defaults.get("scope", "run") == scope]
    return sorted(kinds, key=lambda k: reg.get("figure", k["name"]).defaults.get("order", 0))


def save(fig, run, stem: str) -> object:
    """Save a matplotlib figure as figures/<stem>.<format> at the configured dpi; returns the path."""
    import matplotlib.pyplot as plt

    cfg = run.config.get("figure", {})
    path = run.path("figures", f"{stem}.{cfg.get('format', 'png')}")
    fig.savefig(path, dpi=cfg.get("dpi", 120), bbox_inches="tight")
    plt.close(fig)
    return path
