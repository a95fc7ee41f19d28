"""The explain job: attributions of selected images for each configured explainer, and how good they are
(see medattn.attribution and medattn.explanation_quality)."""
from __future__ import annotations

from ..config.schema import slot
from .checkpoint_names import CHECKPOINT

QUALITY_SCORES = ["deletion", "insertion", "infidelity", "sensitivity", "localisation", "randomisation"]

QUALITY = {
    "type": "object", "additionalProperties": False, "default": {},
    "description": "explanation quality scores, written to explanations/quality.json",
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
    "description": "attributions of selected images, saved under explanations/, with quality scores",
    "properties": {
        "methods": {"type": "array", "items": slot("explainer", "an attribution method"), "default": [], "minItems": 1,
                    "description": "explainers to run (each an explainer component)"},
        "samples": {"type": "integer", "minimum": 1, "default": 8, "description": "how many images to explain"},
        "split": {"enum": ["train", "val", "test"], "default": "test", "description": "split the images come from"},
        "select": {"enum": ["first", "random", "correct", "misclassified", "indices", "agreed"], "default": "first",
                   "description": "which images: the first N, N at random (seeded), N (mis)classified ones, the "
                                  "listed indices, or agreed: N that every compared variant classifies correctly "
                                  "(the seed's choice; needs their test predictions)"},
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
        "naming": {"enum": ["npz", "seed"], "default": "npz",
                   "description": "npz: one <method>.npz per run; seed: also the seed's "
                                  "img_{idx}_original_{label}.npy and img_{idx}_{method}_{variant}_label_{label}.npy"},
        "seed_dir": {"type": ["string", "null"], "default": None,
                     "description": "naming: seed: folder (relative to the run directory); null = "
                                    "<output_dir>/<experiment>/attributes/<backbone>/ shared by the variants"},
        "seed_names": {"type": "object", "additionalProperties": {"type": "string"}, "default": {},
                       "description": "naming: seed: method label -> name in the file (the seed wrote 'dl' for "
                                      "saliency)"},
        "seed_variant": {"type": ["string", "null"], "default": None,
                         "description": "naming: seed: variant name in the file (null = the run's variant)"},
        "quality": QUALITY,
    },
}


def run(run) -> None:
    from ..attribution import explain_run

    explain_run(run)
