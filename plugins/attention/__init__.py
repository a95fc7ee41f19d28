"""Built-in attention: none, timm_attn (SE/ECA/CBAM/GC... via timm), mldam (Mishra 2019 / Goncalves 2021),
agpad (Chen & Ross), dual (DANet position + channel attention)."""
from __future__ import annotations

from medattn.hookspecs import Component, hookimpl

from .timm_types import TIMM_ATTN_TYPES

_MOD = "medattn_plugins.attention"

_LEVEL = {"type": ["string", "null"], "default": None,
          "description": "Backbone level to attend; null = the deepest feature map (not a global pool)."}


@hookimpl
def medattn_components() -> list[Component]:
    """The attention components."""
    return [
        Component(kind="attention", name="none", factory=f"{_MOD}.identity:build_none",
                  description="No attention: the backbone's final level goes to the head unchanged.",
                  params_schema={"type": "object", "additionalProperties": False, "properties": {}},
                  defaults={"head": {"name": "linear", "params": {}}}),
        Component(kind="attention", name="timm_attn", factory=f"{_MOD}.timm_attention:build_timm_attn",
                  description="A timm.layers.create_attn module (se, eca, cbam, gc, ...) on chosen levels.",
                  params_schema={"type": "object", "additionalProperties": False, "properties": {
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
                                                "kernel_size)."}}},
                  defaults={"head": {"name": "linear", "params": {}}}),
    ]
