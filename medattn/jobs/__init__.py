"""Built-in jobs (train, test, explain, figure), registered through the same hook as any plugin.

Each job's ``params_schema`` is the schema of the top-level config section named after it.
"""
from __future__ import annotations

from ..config.schema import slot
from ..hookspecs import Component, hookimpl

CHECKPOINT_NAMES = ["best_val_loss", "best_train_loss", "last"]

TRAIN = {
    "type": "object", "additionalProperties": False, "default": {},
    "description": "training: optimiser, epochs, batch size, augmentation, checkpoints",
    "properties": {
        "epochs": {"type": "integer", "minimum": 1, "default": 10, "description": "passes over the training split"},
        "batch_size": {"type": "integer", "minimum": 1, "default": 32, "description": "images per step"},
        "optimizer": {
            "type": "object", "additionalProperties": False, "default": {}, "description": "optimiser settings",
            "properties": {
                "name": {"enum": ["adam", "adamw", "sgd"], "default": "adam", "description": "torch.optim class"},
                "lr": {"type": "number", "exclusiveMinimum": 0, "default": 1.0e-4, "description": "learning rate"},
                "weight_decay": {"type": "number", "minimum": 0, "default": 0.0, "description": "L2 penalty"},
                "momentum": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.0,
                             "description": "SGD momentum"},
            },
        },
        "augment": slot("transform", "train-time augmentation preset (a transform component)"),
        "checkpoints": {"type": "array", "uniqueItems": True, "items": {"enum": CHECKPOINT_NAMES[:2]},
                        "default": CHECKPOINT_NAMES[:2],
                        "description": "best checkpoints kept besides last.pt (lowest val / train loss)"},
    },
}

TEST = {
    "type": "object", "additionalProperties": False, "default": {},
    "description": "evaluation on the test split",
    "properties": {
        "checkpoints": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"enum": CHECKPOINT_NAMES},
                        "default": ["best_val_loss"], "description": "checkpoints to evaluate"},
        "threshold": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5,
                      "description": "decision threshold on P(class 1) for sigmoid models"},
        "batch_size": {"type": "integer", "minimum": 1, "default": 32, "description": "images per forward"},
    },
}

EXPLAIN = {
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

FIGURE = {
    "type": "object", "additionalProperties": False, "default": {},
    "description": "figures of a run, under figures/",
    "properties": {
        "kinds": {"type": "array", "items": slot("figure", "a figure kind"), "default": [],
                  "description": "figure components to draw; empty: every registered kind that applies"},
        "format": {"enum": ["png", "svg", "pdf"], "default": "png", "description": "file format"},
        "dpi": {"type": "integer", "minimum": 30, "maximum": 600, "default": 120, "description": "resolution"},
    },
}


@hookimpl
def medattn_components() -> list[Component]:
    return [
        Component("job", "train", "medattn.jobs.train:run", "train with best/last checkpoints and a per-epoch history",
                  TRAIN),
        Component("job", "test", "medattn.jobs.test:run", "evaluate checkpoints on the test split", TEST),
        Component("job", "explain", "medattn.jobs.explain:run", "save attributions of selected images", EXPLAIN),
        Component("job", "figure", "medattn.jobs.figure:run", "draw the run's figures", FIGURE),
    ]
