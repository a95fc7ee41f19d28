"""The explain job: attributions of selected images for each configured explainer (see medattn.attribution)."""
from __future__ import annotations

from ..config.schema import slot
from .checkpoint_names import CHECKPOINT_NAMES

PARAMS = {
    "type": "object", "additionalProperties": False, "default": {},
    "description": "attributions of selected images, saved under explanations/",
    "properties": {
        "methods": {"type": "array", "items": slot("explainer", "an attribution method"), "default": [],
                    "description": "explainers to run (each an explainer component)"},
        "samples": {"type": "integer", "minimum": 1, "default": 8, "description": "how many images to explain"},
        "split": {"enum": ["train", "val", "test"], "default": "test", "description": "split the images come from"},
        "select": {"enum": ["first", "random", "correct", "misclassified"], "default": "first",
                   "description": "which images: the first N, N at random (seeded), or N (mis)classified ones"},
        "checkpoint": {"enum": CHECKPOINT_NAMES, "default": "best_val_loss", "description": "weights to explain"},
        "batch_size": {"type": "integer", "minimum": 1, "default": 8, "description": "images per attribution call"},
    },
}


def run(run) -> None:
    from ..attribution import explain_run

    explain_run(run)
