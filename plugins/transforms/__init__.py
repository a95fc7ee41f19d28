"""Built-in train-time augmentation presets (records only: torch is imported when one is built)."""
from __future__ import annotations

from typing import Any

from medattn.api import Component, hookimpl

_MOD = "medattn_plugins.transforms.presets"

_EMPTY: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": {}}

MISHRA = {"type": "object", "additionalProperties": False, "properties": {
    "reference_size": {"type": "integer", "minimum": 1, "default": 112,
                       "description": "Image side the 40 px width shift refers to (Mishra's input: 112)"},
    "rotation": {"type": "number", "minimum": 0, "maximum": 180, "default": 0,
                 "description": "Rotation range in degrees (train_lpo: 0; train_fold: 20)"},
}}

CUSTOM = {"type": "object", "additionalProperties": False, "properties": {
    "ops": {"type": "array", "default": [],
            "description": "torchvision.transforms.v2 ops applied in order, each {name, params}",
            "items": {"type": "object", "additionalProperties": False, "required": ["name"], "properties": {
                "name": {"type": "string", "description": "A torchvision.transforms.v2 class, e.g. RandomAffine"},
                "params": {"type": "object", "default": {},
                           "description": "Keyword arguments of that class (interpolation as a string)"},
            }}},
}}


@hookimpl
def medattn_components() -> list[Component]:
    """The built-in augmentation presets."""
    return [
        Component("transform", "none", f"{_MOD}:build_none", "No augmentation (identity)", _EMPTY),
        Component("transform", "goncalves2021", f"{_MOD}:build_goncalves2021", "Goncalves 2021: RandomAffine(10 deg, "
                  "translate (0.05, 0.1), scale (0.95, 1.05), nearest, fill 0) then hflip 0.5", _EMPTY),
        Component("transform", "mishra2019", f"{_MOD}:build_mishra2019", "Mishra 2019 (Keras "
                  "ImageDataGenerator): width shift 40 px, shear 0.2 deg, zoom 0.2, hflip", MISHRA),
        Component("transform", "agpad2021", f"{_MOD}:build_agpad2021", "AG-PAD 2021 (Keras "
                  "ImageDataGenerator): shear 0.1 deg, zoom 0.1, rotation 10, shifts 0.1, hflip", _EMPTY),
        Component("transform", "custom", f"{_MOD}:build_custom", "torchvision.transforms.v2 ops listed in "
                  "the experiment file", CUSTOM),
    ]
