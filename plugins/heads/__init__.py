"""Built-in heads: linear (GAP + Linear), flatten_linear (goncalves2021's baseline), mlp (the MLDAM heads)."""
from __future__ import annotations

from medattn.api import Component, hookimpl

_MOD = "medattn_plugins.heads"


@hookimpl
def medattn_components() -> list[Component]:
    """The head components."""
    return [
        Component(kind="head", name="linear", factory=f"{_MOD}.linear:build_linear",
                  description="Global average pool (for a feature map), optional dropout, one Linear: the default.",
                  params_schema={"type": "object", "additionalProperties": False, "properties": {
                      "dropout": {"type": "number", "minimum": 0, "exclusiveMaximum": 1, "default": 0.0,
                                  "description": "Dropout probability before the Linear (0 = none)."}}}),
        Component(kind="head", name="flatten_linear", factory=f"{_MOD}.linear:build_flatten_linear",
                  description="goncalves2021's baseline: flatten with no pooling, one Linear (densenet121 at 224 px: "
                              "Linear(50176, 1)).",
                  params_schema={"type": "object", "additionalProperties": False, "properties": {}}),
        Component(kind="head", name="mlp", factory=f"{_MOD}.mlp:build_mlp",
                  description="Flatten, hidden Linear-ReLU-Dropout layers, final Linear (the MLDAM heads).",
                  params_schema={"type": "object", "additionalProperties": False, "properties": {
                      "hidden": {"type": "array", "default": ["C", "C/2"],
                                 "items": {"anyOf": [{"type": "integer", "minimum": 1},
                                                     {"type": "string", "pattern": "^C(/[1-9][0-9]*)?$"}]},
                                 "description": "Hidden widths: ints, or 'C' / 'C/k' = input channels (divided "
                                                "by k)."},
                      "dropout": {"type": "number", "minimum": 0, "exclusiveMaximum": 1, "default": 0.25,
                                  "description": "Dropout probability after each hidden ReLU."},
                      "pool": {"enum": ["none", "avg"], "default": "none",
                               "description": "'none' flattens C*H*W (the papers); 'avg' global-average-pools "
                                              "to C first."}}}),
    ]
