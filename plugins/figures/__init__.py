"""Built-in figure kinds; drawing modules load lazily.

A figure factory is ``factory(params, view) -> list[Path]``: ``view`` is a RunView for the run-scope kinds and an
ExperimentView for those declared with ``defaults={"scope": "experiment"}`` (``order`` sorts a kind later).
"""
from __future__ import annotations

from typing import Any

from medattn.api import Component, hookimpl

from . import comparisons  # its params schema (the module imports nothing heavy at the top)

_P = "medattn_plugins.figures"


def _obj(**props: Any) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": props}


_MAX = {"type": "integer", "minimum": 1, "default": 8, "description": "rows (images) at most"}
_BOOT = {"n_boot": {"type": "integer", "minimum": 0, "default": 200, "description": "bootstrap resamples (0: no band)"},
         "seed": {"type": "integer", "default": 0, "description": "bootstrap seed"}}
_GRID = {"outlier_perc": {"type": "number", "minimum": 0, "maximum": 50, "default": 2,
                          "description": "percent of extreme |values| clipped (captum's default, the original's)"},
         "sign": {"enum": ["all", "positive", "negative", "absolute_value"], "default": "all",
                  "description": "which attribution signs to show"},
         "max_images": _MAX}
_EXP = {"scope": "experiment"}


@hookimpl
def medattn_components() -> list[Component]:
    """The figure components."""
    return [
        Component("figure", "curves", f"{_P}.training_curves:draw",
                  "training curves: loss, accuracy, recall, precision, F1; train against validation", _obj()),
        Component("figure", "saliency_grid", f"{_P}.saliency_grid:draw",
                  "rows images, columns the original and each explainer; signed blended heat maps, mask outlined",
                  _obj(style={"enum": ["grid", "original"], "default": "grid",
                              "description": "grid: one figure; original: one figure per image and map, named as "
                                             "the original code's (goncalves2021; figures/attributes/img_...)"},
                       **_GRID)),
        Component("figure", "roc", f"{_P}.classification:roc",
                  "ROC curve per tested checkpoint, AUC and a bootstrap 95% band", _obj(**_BOOT)),
        Component("figure", "pr", f"{_P}.classification:pr",
                  "precision-recall curve per tested checkpoint, AP and a bootstrap 95% band", _obj(**_BOOT)),
        Component("figure", "reliability", f"{_P}.classification:reliability",
                  "reliability diagram with the expected calibration error and a score histogram (bins: "
                  "test.calibration_bins)", _obj()),
        Component("figure", "calibration", f"{_P}.classification:calibration",
                  "reliability before and after test.calibration (15 bins), ECE and NLL of each", _obj()),
        Component("figure", "decision_curve", f"{_P}.clinical:decision_curve",
                  "decision curve: net benefit against treating all and none (binary tasks)", _obj()),
        Component("figure", "risk_coverage", f"{_P}.clinical:risk_coverage",
                  "risk-coverage curves of selective prediction (test.tta / test.mc_dropout uncertainty against "
                  "the top probability), AURC in the legend", _obj()),
        Component("figure", "subgroups", f"{_P}.clinical:subgroups",
                  "forest plot of the metrics per group of test.subgroups, with bootstrap intervals", _obj()),
        Component("figure", "confusion", f"{_P}.classification:confusion",
                  "confusion matrix (counts and row rates) per tested checkpoint", _obj()),
        Component("figure", "tdr_fdr", f"{_P}.classification:tdr_fdr",
                  "presentation-attack ROC: TDR (%) against FDR (%) on a log axis with the 0.2% FDR line",
                  _obj(fdr_percent={"type": "number", "exclusiveMinimum": 0, "maximum": 100, "default": 0.2,
                                    "description": "operating point marked (FDR, %)"})),
        Component("figure", "deletion_insertion", f"{_P}.explanations:deletion_insertion",
                  "mean deletion and insertion curves per explainer, AUC in the legend", _obj()),
        Component("figure", "attention", f"{_P}.explanations:attention",
                  "the attention module's maps over each explained image (channel attention as profiles)",
                  _obj(max_images=_MAX)),
        Component("figure", "saliency_grid_variants", f"{_P}.saliency_grid:draw_variants",
                  "experiment: rows images every variant explained, columns each method x variant",
                  _obj(**_GRID), defaults=_EXP),
        Component("figure", "results_table", f"{_P}.experiment:results_table",
                  "experiment: test metrics and explanation quality per variant as LaTeX (booktabs) tables",
                  _obj(), defaults=_EXP),
        Component("figure", "variants", f"{_P}.experiment:variants",
                  "experiment: dot plots comparing the variants, one panel per test metric and per quality score",
                  _obj(), defaults=_EXP),
        Component("figure", "comparisons", f"{_P}.comparisons:draw",
                  "experiment: forest plot of each variant's paired difference from its reference, one panel per "
                  "metric (the comparisons table)", comparisons.PARAMS, defaults=_EXP),
        Component("figure", "sweep", f"{_P}.sweep:draw",
                  "experiment: each medattn sweep study's optimisation history and parameter importances "
                  "(Optuna's matplotlib plots); nothing without a sweep",
                  _obj(storage={"type": ["string", "null"], "default": None,
                                "description": "the RDB URL the sweep used with --storage (null: the journals in "
                                               "OUTPUT_DIR/NAME/sweep/)"}), defaults=_EXP),
        Component("figure", "report", f"{_P}.experiment:report",
                  "experiment: report.md and report.html gathering the tables and every figure (drawn last)",
                  _obj(), defaults={"scope": "experiment", "order": 100}),
    ]
