"""Built-in figure kinds."""
from medattn.hookspecs import Component, hookimpl

_NO_PARAMS = {"type": "object", "additionalProperties": False, "properties": {}}


@hookimpl
def medattn_components() -> list[Component]:
    return [
        Component("figure", "curves", "medattn_plugins.figures.training_curves:draw",
                  "training curves: loss, accuracy, recall, precision, F1; train against validation", _NO_PARAMS),
        Component("figure", "saliency_grid", "medattn_plugins.figures.saliency_grid:draw",
                  "rows images, columns the original and each explainer; signed blended heat maps, mask outlined",
                  {"type": "object", "additionalProperties": False, "properties": {
                      "outlier_perc": {"type": "number", "minimum": 0, "maximum": 50, "default": 2,
                                       "description": "percent of extreme values clipped (captum's default, the seed's)"},
                      "sign": {"enum": ["all", "positive", "negative", "absolute_value"], "default": "all",
                               "description": "which attribution signs to show"},
                      "max_images": {"type": "integer", "minimum": 1, "default": 8, "description": "rows at most"}}}),
    ]
