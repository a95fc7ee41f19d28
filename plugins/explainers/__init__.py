"""Built-in explainers, on captum (implementations in captum_methods, imported only when a method is built)."""
from __future__ import annotations

from typing import Any

from medattn.hookspecs import Component, hookimpl

_MOD = "medattn_plugins.explainers.captum_methods"

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


@hookimpl
def medattn_components() -> list[Component]:
    """The explainer components."""
    return [
        Component("explainer", "saliency", f"{_MOD}:saliency",
                  "captum Saliency: input gradients (signed by default, as the seed)",
                  _obj(abs={"type": "boolean", "default": False,
                            "description": "absolute gradients (captum's default); the seed used false"},
                       internal_batch_size=_IBS)),
        Component("explainer", "integrated_gradients", f"{_MOD}:integrated_gradients",
                  "captum IntegratedGradients: path integral of gradients from a baseline",
                  _obj(n_steps={"type": "integer", "minimum": 2, "default": 32, "description": "path steps"},
                       baseline=_BASELINE,
                       method={"enum": ["gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right",
                                        "riemann_middle"], "default": "gausslegendre",
                               "description": "integral approximation"},
                       internal_batch_size=_IBS)),
        Component("explainer", "deeplift", f"{_MOD}:deeplift",
                  "captum DeepLift (rescale rule) against a baseline; runs on the prepared (unshared ReLU) copy",
                  _obj(baseline=_BASELINE,
                       multiply_by_inputs={"type": "boolean", "default": True,
                                           "description": "global attribution (x - baseline) * multiplier"},
                       internal_batch_size=_IBS)),
        Component("explainer", "gradient_shap", f"{_MOD}:gradient_shap",
                  "captum GradientShap: expected gradients x (input - baseline) over noisy samples",
                  _obj(n_samples={"type": "integer", "minimum": 1, "default": 8, "description": "samples per image"},
                       stdevs={"type": "number", "minimum": 0, "default": 0.1,
                               "description": "std of the Gaussian noise added to each sample (normalised units)"},
                       baseline=_BASELINE, internal_batch_size=_IBS)),
        Component("explainer", "input_x_gradient", f"{_MOD}:input_x_gradient",
                  "captum InputXGradient: input times its gradient", _obj(internal_batch_size=_IBS)),
        Component("explainer", "guided_backprop", f"{_MOD}:guided_backprop",
                  "captum GuidedBackprop: only positive gradients through every ReLU",
                  _obj(internal_batch_size=_IBS)),
        Component("explainer", "occlusion", f"{_MOD}:occlusion",
                  "captum Occlusion: score drop when a sliding square patch is replaced by a baseline",
                  _obj(window={"type": "integer", "minimum": 1, "default": 8, "description": "patch side (pixels)"},
                       stride={"type": "integer", "minimum": 1, "default": 4, "description": "patch step (pixels)"},
                       baseline={"type": "number", "default": 0.0,
                                 "description": "value of occluded pixels (normalised units)"},
                       perturbations_per_eval={"type": "integer", "minimum": 1, "default": 16,
                                               "description": "occluded copies per forward (bounds memory)"},
                       internal_batch_size=_IBS)),
        Component("explainer", "gradcam", f"{_MOD}:gradcam",
                  "captum LayerGradCam on a layer (default: the backbone's CAM layer), upsampled to the input",
                  _obj(layer=_LAYER,
                       relu_attributions={"type": "boolean", "default": True,
                                          "description": "keep positive evidence only (Grad-CAM's ReLU)"},
                       upsample={"enum": ["bilinear", "nearest", "bicubic"], "default": "bilinear",
                                 "description": "interpolation to the input size"},
                       internal_batch_size=_IBS)),
        Component("explainer", "guided_gradcam", f"{_MOD}:guided_gradcam",
                  "captum GuidedGradCam: guided backprop times the upsampled Grad-CAM map",
                  _obj(layer=_LAYER,
                       interpolate_mode={"enum": ["bilinear", "nearest", "bicubic"], "default": "bilinear",
                                         "description": "interpolation of the Grad-CAM map"},
                       internal_batch_size=_IBS)),
        Component("explainer", "noise_tunnel", f"{_MOD}:noise_tunnel",
                  "captum NoiseTunnel (SmoothGrad, SmoothGrad-squared, VarGrad) around another method",
                  _obj(method={"enum": WRAPPABLE, "default": "saliency", "description": "the wrapped method"},
                       method_params={"type": "object", "default": {},
                                      "description": "params of the wrapped method (as under its own name)"},
                       nt_type={"enum": ["smoothgrad", "smoothgrad_sq", "vargrad"], "default": "smoothgrad",
                                "description": "how the noisy attributions are combined"},
                       nt_samples={"type": "integer", "minimum": 1, "default": 8,
                                   "description": "noisy copies per image"},
                       stdevs={"type": "number", "minimum": 0, "default": 0.15,
                               "description": "noise std (normalised units)"},
                       nt_samples_batch_size={"type": "integer", "minimum": 1, "default": 8,
                                              "description": "noisy copies per forward"},
                       internal_batch_size=_IBS)),
        Component("explainer", "attention_maps", f"{_MOD}:attention_maps",
                  "the attention module's own maps (position / channel / spatial), rendered at input size",
                  _obj(key={"type": ["string", "null"], "default": None,
                            "description": "which map (e.g. pam, cam, layer4/gate); null = the mean of all maps, "
                                           "each scaled to [0, 1]"})),
    ]
