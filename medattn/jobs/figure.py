"""The figure job: every configured figure component draws what it can from the run directory (scope run),
then, across the experiment, what compares the runs (scope experiment). Figure components get a read-only view,
never the data set: ``--jobs figure`` needs no data root."""
from __future__ import annotations

from pathlib import Path

from ..params import slot
from ..registry import Registry
from ..store.views import ExperimentView
from .base import Job

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


class FigureJob(Job):
    """Draw the run's figures, and the experiment's once every run is done."""

    name = "figure"
    writes = ("figures",)

    def run(self, run) -> None:
        import matplotlib

        matplotlib.use("Agg")
        written = draw(run.registry, run.config, "run", run.view())
        run.log(f"   figure: {len(written)} file(s) in {run.dir.figures}")

    def finish(self, exp: ExperimentView) -> list[Path]:
        import matplotlib

        matplotlib.use("Agg")
        return draw(self.registry, exp.config, "experiment", exp)


def draw(registry: Registry, config: dict, scope: str, view) -> list[Path]:
    """Every selected figure kind of ``scope``, drawn from ``view``; the files written."""
    written: list[Path] = []
    for spec in selected_kinds(registry, config, scope):
        paths = registry.build("figure", spec, view)
        written.extend(paths or [])
    return written


def default_kinds(registry: Registry) -> list[str]:
    """The figure kinds an empty ``figure.kinds`` draws: every registered kind but those whose record says
    ``defaults={"opt_in": True}``."""
    return [n for n in registry.names("figure") if not registry.get("figure", n).defaults.get("opt_in")]


def selected_kinds(registry: Registry, config: dict, scope: str) -> list[dict]:
    """The figure specs of ``figure.kinds`` (when empty: :func:`default_kinds`) of one scope: run or experiment.

    Kinds run in the listed order, except that a component's ``defaults["order"]`` (default 0) sorts it later:
    the report (order 100) gathers what the others drew."""
    kinds = config["figure"]["kinds"] or [{"name": n, "params": {}} for n in default_kinds(registry)]
    kinds = [k for k in kinds if registry.get("figure", k["name"]).defaults.get("scope", "run") == scope]
    return sorted(kinds, key=lambda k: registry.get("figure", k["name"]).defaults.get("order", 0))
