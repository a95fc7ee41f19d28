"""Built-in attention: none, timm_attn (SE/ECA/CBAM/GC... via timm), mldam (Mishra 2019 / Goncalves 2021),
agpad (Chen & Ross), dual (DANet position + channel attention)."""
from __future__ import annotations

from medattn.api import Component, hookimpl

from .timm_types import TIMM_ATTN_TYPES

_MOD = "medattn_plugins.attention"

_LEVEL = {"type": ["string", "null"], "default": None,
          "description": "Backbone level to attend; null = the deepest feature map (not a global pool)."}


_IMPL = {"enum": ["auto", "sdpa", "naive"], "default": "auto",
         "description": "How the position attention is computed: naive builds the N x N matrix (the published "
                        "code); sdpa goes through torch scaled_dot_product_attention without it (same formula, "
                        "scale 1, for full-resolution images); auto = naive up to 1024 positions and while "
                        "exporting, sdpa above."}

_NONE_PARAMS = {"type": "object", "additionalProperties": False, "properties": {}}

_TIMM_ATTN_PARAMS = {"type": "object", "additionalProperties": False, "properties": {
    "type": {"enum": TIMM_ATTN_TYPES, "default": "se",
             "description": "timm attention type passed to timm.layers.create_attn."},
    "levels": {"type": "array", "items": {"type": "string"}, "default": [],
               "description": "Levels to attend (each gets its own module); empty = the deepest "
                              "feature map."},
    "fuse": {"enum": ["last", "concat"], "default": "last",
             "description": "Output: the deepest attended level, or all attended levels pooled "
                            "to its size and concatenated."},
    "kwargs": {"type": "object", "default": {},
               "description": "Extra keyword arguments for the timm module (e.g. rd_ratio, "
                              "kernel_size)."}}}

_MLDAM_PARAMS = {"type": "object", "additionalProperties": False, "properties": {
    "variant": {"enum": ["mishra2019", "goncalves2021"], "default": "mishra2019",
                "description": "mishra2019: per-row softmax PAM + NormL; goncalves2021: that "
                               "paper's port (global-softmax transposed PAM, BatchNorm, tiled "
                               "taps)."},
    "taps": {"type": ["object", "null"], "default": None, "additionalProperties": False,
             "required": ["q", "k", "v", "x"],
             "properties": {r: {"type": "string", "description": d} for r, d in (
                 ("q", "Level of the PAM queries (pooled to v's size)."),
                 ("k", "Level of the PAM keys (pooled to v's size)."),
                 ("v", "Level of the PAM values (sets the output size)."),
                 ("x", "Level the CAM attends."))},
             "description": "Levels {q, k, v, x}; null = the variant's table for vgg16, "
                            "densenet121, resnet50, resnet18."},
    "pam": {"enum": [None, "mishra", "goncalves"], "default": None,
            "description": "PAM form override: mishra = per-row softmax, goncalves = global "
                           "softmax + transposed aggregation (goncalves2021's bug); null = "
                           "variant's."},
    "norm": {"enum": [None, "layernorm", "batchnorm"], "default": None,
             "description": "Branch norm override: layernorm = Mishra's NormL, batchnorm = the "
                            "port's BatchNorm; null = variant's."},
    "eps": {"type": "number", "exclusiveMinimum": 0, "default": 1e-6,
            "description": "Epsilon of NormL (added to the std) or of the BatchNorm."},
    "bn_momentum": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.1,
                    "description": "BatchNorm momentum (PyTorch convention) when norm is "
                                   "batchnorm."},
    "attention_impl": _IMPL}}

_AGPAD_PARAMS = {"type": "object", "additionalProperties": False, "properties": {
    "level": _LEVEL,
    "relu_input": {"type": "boolean", "default": True,
                   "description": "ReLU on the level first (Keras DenseNet121 ends in BN+ReLU, "
                                  "torchvision norm5 has no ReLU)."},
    "width": {"type": "integer", "minimum": 1, "default": 512,
              "description": "Channels of the branch convolutions and of the output."},
    "reduction": {"type": "integer", "minimum": 1, "default": 8,
                  "description": "PAM query/key projection to C/reduction channels."},
    "dropout": {"type": "number", "minimum": 0, "exclusiveMaximum": 1, "default": 0.5,
                "description": "Dropout inside each branch and after the sum."},
    "bn": {"enum": ["keras", "torch"], "default": "keras",
           "description": "BatchNorm preset: keras (momentum 0.01 in PyTorch terms, eps 1e-3, "
                          "as the paper's code) or torch (0.1, 1e-5)."},
    "bn_momentum": {"type": ["number", "null"], "default": None,
                    "description": "Override the preset's BatchNorm momentum (PyTorch "
                                   "convention)."},
    "bn_eps": {"type": ["number", "null"], "default": None,
               "description": "Override the preset's BatchNorm eps."},
    "attention_impl": _IMPL}}

_DUAL_PARAMS = {"type": "object", "additionalProperties": False, "properties": {
    "level": _LEVEL,
    "reduction": {"type": "integer", "minimum": 1, "default": 8,
                  "description": "PAM query/key projection to C/reduction channels."},
    "fuse": {"enum": ["sum", "mean"], "default": "sum",
             "description": "How the PAM and CAM outputs are combined (DANet sums)."},
    "attention_impl": _IMPL}}


@hookimpl
def medattn_components() -> list[Component]:
    """The attention components."""
    return [
        Component(kind="attention", name="none", factory=f"{_MOD}.identity:build_none",
                  description="No attention: the backbone's final level goes to the head unchanged.",
                  params_schema=_NONE_PARAMS,
                  defaults={"head": {"name": "linear", "params": {}}}),
        Component(kind="attention", name="timm_attn", factory=f"{_MOD}.timm_attention:build_timm_attn",
                  description="A timm.layers.create_attn module (se, eca, cbam, gc, ...) on chosen levels.",
                  params_schema=_TIMM_ATTN_PARAMS,
                  defaults={"head": {"name": "linear", "params": {}}}),
        Component(kind="attention", name="mldam", factory=f"{_MOD}.mldam:build_mldam",
                  description="Multi-level dual attention: Mishra et al. 2019 as published, or Goncalves & Cardoso "
                              "2021's port (variant); taps from one backbone pass.",
                  params_schema=_MLDAM_PARAMS,
                  defaults={"head": {"name": "mlp", "params": {"hidden": [512, 512], "dropout": 0.25}}}),
        Component(kind="attention", name="agpad", factory=f"{_MOD}.dual_attention:build_agpad",
                  description="Chen & Ross AG-PAD: ReLU, DANet PAM (C/8) and CAM with gamma 0, conv branches to "
                              "512, sum, conv1x1; head GAP + Linear.",
                  params_schema=_AGPAD_PARAMS,
                  defaults={"head": {"name": "linear", "params": {}}}),
        Component(kind="attention", name="dual", factory=f"{_MOD}.dual_attention:build_dual",
                  description="DANet position + channel attention (gamma 0) on one level of any backbone.",
                  params_schema=_DUAL_PARAMS,
                  defaults={"head": {"name": "linear", "params": {}}}),
    ]
