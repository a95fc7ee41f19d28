"""Built-in backbones: torchvision resnet18 / resnet50 / densenet121 / vgg16, and any timm model."""
from __future__ import annotations

from typing import Any

from medattn.api import Component, hookimpl

from .levels import TORCHVISION_ARCHS, level_names

_MOD = "medattn_plugins.backbones"


def _common(levels: list[str] | None) -> dict[str, Any]:
    freeze: dict[str, Any] = {"type": "string", "default": "none",
                              "description": "'none', 'all', or a level: freeze every module up to and including it "
                                             "(frozen BatchNorm stays in eval mode)."}
    if levels is not None:
        freeze["enum"] = ["none", "all", *levels]
    return {
        "pretrained": {"type": "boolean", "default": False,
                       "description": "Load ImageNet weights from the local torch/timm cache; never downloads "
                                      "(a missing file is an error naming it)."},
        "weights": {"type": ["string", "null"], "default": None,
                    "description": "Path to a local state_dict file (.pth/.pt/.safetensors) to load; wins over "
                                   "pretrained."},
        "in_chans": {"enum": [1, 3], "default": 3,
                     "description": "Input channels; 1 replaces the first conv by one whose filters are the sum "
                                    "of the RGB filters."},
        "freeze": freeze,
        "checkpointing": {"type": "boolean", "default": False,
                          "description": "Activation checkpointing of the backbone's stages for full-resolution "
                                         "training: only stage boundaries are kept for the backward and the rest "
                                         "is recomputed (less memory, about one more forward pass of time)."},
    }


def _torchvision_schema(arch: str) -> dict[str, Any]:
    levels = level_names(arch)
    spec = TORCHVISION_ARCHS[arch]
    props = _common(levels)
    props["final_level"] = {"enum": [None, *levels], "default": None,
                            "description": f"Deepest level returned (the input of the head without attention); "
                                           f"null = {spec['final']}."}
    return {"type": "object", "additionalProperties": False, "properties": props}


def _timm_schema() -> dict[str, Any]:
    props = _common(None)
    props["model_name"] = {"type": "string", "default": "resnet18",
                           "description": "Any timm model name that supports features_only (e.g. resnet18, "
                                          "convnext_tiny, efficientnet_b0)."}
    props["out_indices"] = {"type": ["array", "null"], "items": {"type": "integer"}, "default": None,
                            "description": "timm feature indices to expose as levels; null = timm's default "
                                           "(usually every stage)."}
    props["model_kwargs"] = {"type": "object", "default": {},
                             "description": "Extra keyword arguments passed to timm.create_model "
                                            "(e.g. drop_path_rate)."}
    return {"type": "object", "additionalProperties": False, "properties": props}


_DESCRIPTIONS = {
    "resnet18": "torchvision ResNet-18: levels layer1..layer4 (+ inner blocks layerN.i); final layer4.",
    "resnet50": "torchvision ResNet-50 as goncalves2021 uses it: levels layer1..layer4 (+ layerN.i), avgpool; "
                "final avgpool (2048x1x1).",
    "densenet121": "torchvision DenseNet-121 as goncalves2021 uses it: levels denseblock1..4, transition1..3, norm5; "
                   "final norm5 (no ReLU).",
    "vgg16": "torchvision VGG-16 as goncalves2021 uses it: levels pool3, conv4_1, conv4_3, pool4, conv5_1, conv5_3 "
             "(post-ReLU), pool5; final pool5.",
}


@hookimpl
def medattn_components() -> list[Component]:
    """The backbone components."""
    comps = [Component(kind="backbone", name=arch, factory=f"{_MOD}.torchvision_backbones:build_{arch}",
                       description=_DESCRIPTIONS[arch], params_schema=_torchvision_schema(arch))
             for arch in ("resnet18", "densenet121", "resnet50", "vgg16")]
    comps.append(Component(kind="backbone", name="timm", factory=f"{_MOD}.timm_backbone:build_timm",
                           description="Any timm model by model_name, levels from features_only (feature_info "
                                       "names, channels, strides); final = deepest.",
                           params_schema=_timm_schema()))
    return comps
