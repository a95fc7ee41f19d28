"""The explain job: attributions of selected images for each configured explainer, and how good they are.

The steps live beside this module: explain_select (which images, which class), explain_methods (the explainers,
their layers, the model they attribute), explain_files (what is written), explain_quality (the scores). The original code's file naming is a figure kind of its own plugin
(``original_attributions``), written from these files. Preparing the model is medattn.jobs.explain.attribution; the scores
themselves are medattn.evidence.explanation_quality.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ...evidence.metric_specs import METRICS
from ...params import slot
from ...store.rundir import RunDir
from ...store.views import RunView
from ..base import Job
from ..checkpoint_names import CHECKPOINT

# each computes one or more declared quality metrics (medattn.evidence.metric_specs: source quality, score <entry>)
QUALITY_SCORES = list(dict.fromkeys(m.score for m in METRICS if m.score))

QUALITY = {
    "type": "object", "additionalProperties": False, "default": {},
    "description": "explanation quality scores of each method (the run's quality.json)",
    "properties": {
        "scores": {"type": "array", "uniqueItems": True, "items": {"enum": QUALITY_SCORES},
                   "default": ["deletion", "insertion", "infidelity", "localisation", "randomisation"],
                   "description": "scores to compute; [] for none. sensitivity re-runs the method "
                                  "n_perturb times (opt-in)"},
        "steps": {"type": "integer", "minimum": 2, "default": 16,
                  "description": "deletion/insertion: points on the curve (pixels removed in equal fractions)"},
        "rank": {"enum": ["abs", "signed"], "default": "abs",
                 "description": "deletion/insertion: order pixels by |attribution| or by signed attribution"},
        "deletion_baseline": {"enum": ["zero", "blur"], "default": "zero",
                              "description": "what deleted pixels become: 0 in normalised units (the data mean) "
                                             "or a blurred copy of the image"},
        "insertion_start": {"enum": ["zero", "blur"], "default": "blur",
                            "description": "the image insertion starts from (pixels are inserted into it)"},
        "n_perturb": {"type": "integer", "minimum": 1, "default": 4,
                      "description": "infidelity / sensitivity_max: perturbations per image"},
        "noise": {"type": "number", "exclusiveMinimum": 0, "default": 0.1,
                  "description": "infidelity: std of the Gaussian input perturbation (normalised units); "
                                 "sensitivity_max: radius of the uniform perturbation"},
        "top_percent": {"anyOf": [{"const": "mask"}, {"type": "number", "exclusiveMinimum": 0, "maximum": 100}],
                        "default": "mask",
                        "description": "localisation IoU: top-k% pixels of the map against the mask; 'mask' = k "
                                       "is the mask's own area (a map equal to the mask scores 1)"},
        "randomisation_threshold": {"type": "number", "minimum": -1, "maximum": 1, "default": 0.5,
                                    "description": "a method whose maps keep Spearman rank correlation above "
                                                   "this after model randomisation is flagged insensitive"},
    },
}

PARAMS = {
    "type": "object", "additionalProperties": False, "default": {},
    "description": "attributions of selected images, saved in the run directory, with quality scores",
    "properties": {
        "methods": {"type": "array", "items": slot("explainer", "an attribution method"), "default": [], "minItems": 1,
                    "description": "explainers to run (each an explainer component)"},
        "samples": {"type": "integer", "minimum": 1, "default": 8, "description": "how many images to explain"},
        "split": {"enum": ["train", "val", "test"], "default": "test", "description": "split the images come from"},
        "select": {"enum": ["first", "random", "correct", "misclassified", "indices", "agreed"], "default": "first",
                   "description": "which images: the first N, N at random (seeded), N (mis)classified ones, the "
                                  "listed indices, or agreed: N that every compared variant classifies correctly "
                                  "(the original's choice; needs their test predictions)"},
        "indices": {"type": "array", "items": {"type": "integer", "minimum": 0}, "default": [],
                    "description": "select: indices: positions in the split"},
        "select_seed": {"type": ["integer", "null"], "default": None,
                        "description": "select: random: seed (null = the experiment's seed)"},
        "variants": {"type": "array", "items": {"type": "string"}, "default": [],
                     "description": "select: agreed: variant names to agree over; [] = every variant directory "
                                    "of the experiment"},
        "target": {"anyOf": [{"enum": ["predicted", "true"]}, {"type": "integer", "minimum": 0}],
                   "default": "predicted",
                   "description": "class explained: predicted, true, or a class index (single-output sigmoid "
                                  "models always explain their one logit)"},
        "checkpoint": {"type": "string", "pattern": CHECKPOINT, "default": "best_val_loss",
                       "description": "weights to explain: last or a kept best_<train|val>_<metric> checkpoint"},
        "batch_size": {"type": "integer", "minimum": 1, "default": 8, "description": "images per attribution call"},
        "quality": QUALITY,
    },
}


class ExplainJob(Job):
    """Select images, attribute them with every configured method, save the maps, score them."""

    name = "explain"
    reads = ("checkpoint", "predictions")
    writes = ("explanations",)

    def check(self, config: dict[str, Any]) -> list[str]:
        if not config["explain"]["methods"]:
            return ["explain.methods: the explain job needs at least one explainer, e.g. explain: {methods: "
                    "[{name: saliency}]} (medattn plugins --kind explainer lists them)"]
        return []

    def check_model(self, config: dict[str, Any], model: Any) -> list[tuple[tuple, str]]:
        """Every layer a ``needs_layer`` method hooks is a module of ``model``."""
        from ...hookspecs import ExplainContext
        from .methods import build_explainers, layer_problems

        cfg = config["explain"]
        ctx = ExplainContext(model=model, num_outputs=model.num_outputs, batch_size=int(cfg["batch_size"]))
        return layer_problems(build_explainers(self.registry, cfg, ctx), model)

    def reads_other_runs(self, config: dict[str, Any]) -> str | None:
        """``select: agreed`` reads the other compared variants' test predictions."""
        if config["explain"]["select"] == "agreed":
            return "explain.select: agreed reads the test predictions of every compared variant"
        return None

    def needs(self, run: RunDir, config: dict[str, Any]) -> dict[str, list[Path]]:
        """The checkpoint explained and, for ``select: agreed``, the other compared variants' test predictions."""
        from .select import compared_runs

        cfg = config["explain"]
        out = {"checkpoint": [run.checkpoint(cfg["checkpoint"])]}
        if cfg["select"] == "agreed":
            out["predictions"] = [other.predictions(cfg["checkpoint"])
                                  for other in compared_runs(run, config["seed"], cfg["variants"]).values()
                                  if other.root != run.root]
        return out

    def run(self, run: Any) -> None:
        from .steps import explain

        explain(run, RunDir(run.dir))

    def rows(self, run: RunView) -> dict[str, list[dict]]:
        """``quality``: one row per method of the run's quality scores (numbers only)."""
        rows = []
        for method, scores in (run.dir.read_quality() or {}).items():
            if isinstance(scores, dict):
                rows.append({"method": method, **{k: v for k, v in scores.items()
                                                  if isinstance(v, (int, float)) and not isinstance(v, bool)}})
        return {"quality": rows}
