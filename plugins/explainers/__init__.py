"""Built-in explainers: one class per method (captum_methods, attention_maps), imported only when a method is built.

``PARAMS`` holds each method's params schema; noise_tunnel checks the params of the method it wraps against it.
"""
from __future__ import annotations

from typing import Any

from medattn.api import Component, hookimpl

_CAPTUM = "medattn_plugins.explainers.captum_methods"
_ATTENTION = "medattn_plugins.explainers.attention_maps"

_BASELINE = {"anyOf": [{"type": "number"}, {"const": "blur"}], "default": 0.0,
             "description": "reference input: a number in normalised units (0 = the data set mean) or 'blur' "
                            "(a blurred copy of the image)"}
_IBS = {"type": "integer", "minimum": 1, "default": 16,
        "description": "images (or path points) per forward pass: bounds memory at 224 px"}
_LAYER = {"type": ["string", "null"], "default": None,
          "description": "module hooked, dotted from the model root (e.g. backbone.body.layer3); null = the "
                         "backbone's default CAM layer (its last level)"}


def _obj(**props: Any) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": props}


# the methods noise_tunnel can wrap (all but attention_maps and itself)
WRAPPABLE = ["saliency", "integrated_gradients", "deeplift", "gradient_shap", "input_x_gradient",
             "guided_backprop", "occlusion", "gradcam", "guided_gradcam"]

PARAMS: dict[str, dict[str, Any]] = {
    "saliency": _obj(abs={"type": "boolean", "default": False,
                          "description": "absolute gradients (captum's default); the original (goncalves2021) "
                                         "used false"},
                     internal_batch_size=_IBS),
    "integrated_gradients": _obj(
        n_steps={"type": "integer", "minimum": 2, "default": 32, "description": "path steps"},
        baseline=_BASELINE,
        method={"enum": ["gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle"],
                "default": "gausslegendre", "description": "integral approximation"},
        internal_batch_size=_IBS),
    "deeplift": _obj(baseline=_BASELINE,
                     multiply_by_inputs={"type": "boolean", "default": True,
                                         "description": "global attribution (x - baseline) * multiplier"},
                     internal_batch_size=_IBS),
    "gradient_shap": _obj(n_samples={"type": "integer", "minimum": 1, "default": 8, "description": "samples per image"},
                          stdevs={"type": "number", "minimum": 0, "default": 0.1,
                                  "description": "std of the Gaussian noise added to each sample (normalised units)"},
                          baseline=_BASELINE, internal_batch_size=_IBS),
    "input_x_gradient": _obj(internal_batch_size=_IBS),
    "guided_backprop": _obj(internal_batch_size=_IBS),
    "occlusion": _obj(window={"type": "integer", "minimum": 1, "default": 8, "description": "patch side (pixels)"},
                      stride={"type": "integer", "minimum": 1, "default": 4, "description": "patch step (pixels)"},
                      baseline={"type": "number", "default": 0.0,
                                "description": "value of occluded pixels (normalised units)"},
                      perturbations_per_eval={"type": "integer", "minimum": 1, "default": 16,
                                              "description": "occluded copies per forward (bounds memory)"},
                      internal_batch_size=_IBS),
    "gradcam": _obj(layer=_LAYER,
                    relu_attributions={"type": "boolean", "default": True,
                                       "description": "keep positive evidence only (Grad-CAM's ReLU)"},
                    upsample={"enum": ["bilinear", "nearest", "bicubic"], "default": "bilinear",
                              "description": "interpolation to the input size"},
                    internal_batch_size=_IBS),
    "guided_gradcam": _obj(layer=_LAYER,
                           interpolate_mode={"enum": ["bilinear", "nearest", "bicubic"], "default": "bilinear",
                                             "description": "interpolation of the Grad-CAM map"},
                           internal_batch_size=_IBS),
    "noise_tunnel": _obj(method={"enum": WRAPPABLE, "default": "saliency", "description": "the wrapped method"},
                         method_params={"type": "object", "default": {},
                                        "description": "params of the wrapped method (as under its own name; "
                                                       "checked against its schema when the method is built)"},
                         nt_type={"enum": ["smoothgrad", "smoothgrad_sq", "vargrad"], "default": "smoothgrad",
                                  "description": "how the noisy attributions are combined"},
                         nt_samples={"type": "integer", "minimum": 1, "default": 8,
                                     "description": "noisy copies per image"},
                         stdevs={"type": "number", "minimum": 0, "default": 0.15,
                                 "description": "noise std (normalised units)"},
                         nt_samples_batch_size={"type": "integer", "minimum": 1, "default": 8,
                                                "description": "noisy copies per forward"},
                         internal_batch_size=_IBS),
    "attention_maps": _obj(key={"type": ["string", "null"], "default": None,
                                "description": "which map (e.g. pam, cam, layer4/gate); null = the mean of all maps, "
                                               "each scaled to [0, 1]"}),
}

# component name -> (factory, description)
METHODS = {
    "saliency": (f"{_CAPTUM}:Saliency", "captum Saliency: input gradients (signed by default, as the original)"),
    "integrated_gradients": (f"{_CAPTUM}:IntegratedGradients",
                             "captum IntegratedGradients: path integral of gradients from a baseline"),
    "deeplift": (f"{_CAPTUM}:DeepLift",
                 "captum DeepLift (rescale rule) against a baseline; runs on the prepared (unshared ReLU) copy"),
    "gradient_shap": (f"{_CAPTUM}:GradientShap",
                      "captum GradientShap: expected gradients x (input - baseline) over noisy samples"),
    "input_x_gradient": (f"{_CAPTUM}:InputXGradient", "captum InputXGradient: input times its gradient"),
    "guided_backprop": (f"{_CAPTUM}:GuidedBackprop",
                        "captum GuidedBackprop: only positive gradients through every ReLU"),
    "occlusion": (f"{_CAPTUM}:Occlusion",
                  "captum Occlusion: score drop when a sliding square patch is replaced by a baseline"),
    "gradcam": (f"{_CAPTUM}:GradCam",
                "captum LayerGradCam on a layer (default: the backbone's CAM layer), upsampled to the input"),
    "guided_gradcam": (f"{_CAPTUM}:GuidedGradCam",
                       "captum GuidedGradCam: guided backprop times the upsampled Grad-CAM map"),
    "noise_tunnel": (f"{_CAPTUM}:NoiseTunnel",
                     "captum NoiseTunnel (SmoothGrad, SmoothGrad-squared, VarGrad) around another method"),
    "attention_maps": (f"{_ATTENTION}:AttentionMaps",
                       "the attention module's own maps (position / channel / spatial), rendered at input size"),
}


@hookimpl
def medattn_components() -> list[Component]:
    """The explainer components."""
    return [Component("explainer", name, factory, description, PARAMS[name])
            for name, (factory, description) in METHODS.items()]
