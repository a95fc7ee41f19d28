"""Built-in loss terms (records only: the factories are imported when a run trains)."""
from __future__ import annotations

from typing import Any

from medattn.api import Component, hookimpl

_MOD = "medattn_plugins.losses.terms"
MASKS = {"needs": ["masks"]}


def _obj(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": props}


REGION = {"enum": ["outside_mask", "confound"], "default": "outside_mask",
          "description": "where relevance is penalised: outside_mask (outside the lesion mask) or confound (inside "
                         "the confound mask, where a known shortcut lives: Ross's use)"}
CONFOUND = ["region", "confound", ["confound_masks"]]  # needs_if: region: confound needs confound masks instead

SCHEMAS: dict[str, dict[str, Any]] = {
    "attention_mask": _obj({
        "penalty": {"enum": ["energy", "bce"], "default": "energy",
                    "description": "energy: the share of each map's mass outside the mask; bce: binary "
                                   "cross-entropy of the map (values in [0, 1]) against the mask at its size"},
        "maps": {"type": "array", "items": {"type": "string"}, "default": [],
                 "description": "keys of attention_maps() to supervise ([]: every spatial map)"},
    }),
    "rrr": _obj({
        "penalty": {"enum": ["l2", "fraction"], "default": "l2",
                    "description": "l2: squared input gradients in the region, summed per image (Ross et al. "
                                   "2017; weight by Ross's rule: weight x penalty about the classification loss "
                                   "at the start); fraction: the share of |gradient| (channels summed) in the "
                                   "region"},
        "explained": {"enum": ["log_probabilities", "class_logit"], "default": "log_probabilities",
                      "description": "what is differentiated: the sum of the log-probabilities of every class "
                                     "(the paper) or the logit of the image's own class"},
        "region": REGION,
    }),
    "rrr_gradcam": _obj({
        "region": REGION,
        "level": {"type": "string", "default": "attended",
                  "description": "where the Grad-CAM is taken: attended (the attention module's output, what the "
                                 "head reads) or a backbone level (layer3)"},
        "penalty": {"enum": ["l2", "fraction"], "default": "l2",
                    "description": "l2: mean square of the [0, 1]-scaled Grad-CAM in the region (Schramowski et "
                                   "al. 2020); fraction: the share of the Grad-CAM in the region"},
    }),
    "gain": _obj({
        "mining_weight": {"type": "number", "minimum": 0, "default": 1.0,
                          "description": "weight of attention mining: the label's probability on the image with "
                                         "the Grad-CAM region erased"},
        "mask_weight": {"type": "number", "minimum": 0, "default": 1.0,
                        "description": "weight of the mask term on the Grad-CAM"},
        "mask_penalty": {"enum": ["energy", "mse"], "default": "energy",
                         "description": "energy: the share of the Grad-CAM outside the mask; mse: squared "
                                        "difference of the [0, 1]-scaled Grad-CAM and the mask (GAIN's)"},
        "sigma": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5,
                  "description": "threshold of the soft erasing mask on the [0, 1]-scaled Grad-CAM"},
        "omega": {"type": "number", "exclusiveMinimum": 0, "default": 10.0,
                  "description": "steepness of the soft erasing mask"},
        "level": {"type": "string", "default": "attended",
                  "description": "where the Grad-CAM is taken: attended (the attention module's output, what the "
                                 "head reads) or a backbone level (layer2: 8 x 8 at 64 px on a ResNet)"},
    }),
}
SCHEMAS["mask_fraction"] = {
    **_obj({
        "fraction": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5,
                     "description": "share of the training images whose mask is used (chosen by image id)"},
        "term": {"enum": ["attention_mask", "rrr", "rrr_gradcam", "gain"], "default": "attention_mask",
                 "description": "the mask term applied to that share"},
        "params": {"type": "object", "default": {}, "description": "params of that term"},
    }),
    "allOf": [{"if": {"properties": {"term": {"const": name}}, "required": ["term"]},
               "then": {"properties": {"params": schema}}} for name, schema in SCHEMAS.items()]
    + [{"if": {"not": {"required": ["term"]}}, "then": {"properties": {"params": SCHEMAS["attention_mask"]}}}],
}


@hookimpl
def medattn_components() -> list[Component]:
    """The loss terms."""
    def by_region(path: str = "region") -> dict[str, Any]:
        return {**MASKS, "needs_if": [[path, *CONFOUND[1:]]]}

    def c(name: str, description: str, defaults: dict[str, Any] | None = None) -> Component:
        return Component(kind="loss", name=name, factory=f"{_MOD}:build_{name}", description=description,
                         params_schema=SCHEMAS.get(name, _obj({})), defaults=defaults or {})

    return [
        c("classification", "The model's loss: BCE-with-logits (one output) or cross-entropy, with "
          "train.class_weights (the default train.loss)."),
        c("attention_mask", "Supervises the attention module's spatial maps (attention_maps()) with the lesion "
          "mask: energy outside the mask, or BCE.", MASKS),
        c("rrr", "Right for the Right Reasons: penalises input gradients outside the lesion mask or inside the "
          "confound mask (double backprop).", by_region()),
        c("rrr_gradcam", "Right for the right scientific reasons: RRR on the Grad-CAM of a level, outside the "
          "lesion mask or inside the confound mask.", by_region()),
        c("gain", "GAIN: attention mining (erase the Grad-CAM region, penalise the class score left) plus a "
          "mask term on the Grad-CAM.", MASKS),
        c("mask_fraction", "Another mask term (attention_mask, rrr, rrr_gradcam, gain) on a fixed share of the "
          "training images only, as when annotations are incomplete.", by_region("params.region")),
    ]
