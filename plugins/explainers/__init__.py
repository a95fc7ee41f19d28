"""Built-in explainers, on captum."""
from medattn.hookspecs import Component, hookimpl

_MOD = "medattn_plugins.explainers.captum_methods"


@hookimpl
def medattn_components() -> list[Component]:
    return [
        Component("explainer", "saliency", f"{_MOD}:saliency",
                  "captum Saliency: input gradients (signed by default, as the seed)",
                  {"type": "object", "additionalProperties": False, "properties": {
                      "abs": {"type": "boolean", "default": False,
                              "description": "absolute gradients (captum's default); the seed used false"}}}),
        Component("explainer", "integrated_gradients", f"{_MOD}:integrated_gradients",
                  "captum IntegratedGradients from a constant baseline",
                  {"type": "object", "additionalProperties": False, "properties": {
                      "n_steps": {"type": "integer", "minimum": 2, "default": 32, "description": "path steps"},
                      "baseline": {"type": "number", "default": 0.0,
                                   "description": "constant baseline value (in normalised input units)"},
                      "internal_batch_size": {"type": "integer", "minimum": 1, "default": 16,
                                              "description": "path points per forward (bounds memory)"}}}),
    ]
