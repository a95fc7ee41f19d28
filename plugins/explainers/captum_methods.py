"""captum attribution methods wrapped to the explainer contract: (model, inputs, target) -> attributions.

Every explainer uses the ``model`` it is called with (the prepared copy, or the randomised copy of the sanity
check), so layer methods resolve their layer on that model: ``model.cam_layer(name)``. Methods whose memory
grows with a sample count (gradient_shap, noise_tunnel) split the batch so that at most
``internal_batch_size`` images go through the network at once.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from captum.attr import (
    DeepLift,
    GradientShap,
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)

from medattn.attribution import NotApplicable
from medattn.errors import UserError

Explainer = Callable[[torch.nn.Module, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def baseline_for(inputs: torch.Tensor, spec: Any) -> torch.Tensor | float:
    """A reference input: a number (normalised units; 0 = the data mean) or 'blur' (a heavily blurred copy)."""
    if spec == "blur":
        k = max(3, (min(inputs.shape[-2:]) // 8) | 1)
        return F.avg_pool2d(F.pad(inputs, [k // 2] * 4, mode="replicate"), k, stride=1)
    return float(spec)


def in_chunks(fn: Callable[[torch.Tensor, Any], torch.Tensor], inputs: torch.Tensor, target: torch.Tensor | None,
              size: int) -> torch.Tensor:
    """fn over slices of at most ``size`` images (bounded memory), concatenated."""
    parts = []
    for s in range(0, len(inputs), max(1, size)):
        parts.append(fn(inputs[s:s + size], None if target is None else target[s:s + size]))
    return torch.cat(parts)


def cam_layer(model: torch.nn.Module, name: str | None) -> torch.nn.Module:
    """The layer Grad-CAM hooks on ``model``: ``name`` (dotted from the model root) or the backbone's default."""
    return model.cam_layer(name)


# --- the captum objects and their call arguments, shared by the plain methods and noise_tunnel -----------------
def _method(name: str, params: dict[str, Any], model: torch.nn.Module, inputs: torch.Tensor):
    """(captum attribution object, attribute kwargs) for method ``name``."""
    if name == "saliency":
        return Saliency(model), {"abs": bool(params.get("abs", False))}
    if name == "integrated_gradients":
        return IntegratedGradients(model), {
            "baselines": baseline_for(inputs, params.get("baseline", 0.0)), "n_steps": int(params.get("n_steps", 32)),
            "internal_batch_size": int(params.get("internal_batch_size", 16)),
            "method": params.get("method", "gausslegendre")}
    if name == "deeplift":
        return DeepLift(model, multiply_by_inputs=bool(params.get("multiply_by_inputs", True))), {
            "baselines": baseline_for(inputs, params.get("baseline", 0.0))}
    if name == "input_x_gradient":
        return InputXGradient(model), {}
    if name == "guided_backprop":
        return GuidedBackprop(model), {}
    if name == "gradient_shap":
        base = baseline_for(inputs, params.get("baseline", 0.0))
        base = torch.full_like(inputs[:1], base) if isinstance(base, float) else base
        return GradientShap(model), {"baselines": base, "n_samples": int(params.get("n_samples", 8)),
                                     "stdevs": float(params.get("stdevs", 0.1))}
    if name == "occlusion":
        c = inputs.shape[1]
        w, s = int(params.get("window", 8)), int(params.get("stride", 4))
        return Occlusion(model), {"sliding_window_shapes": (c, w, w), "strides": (c, s, s),
                                  "baselines": float(params.get("baseline", 0.0)),
                                  "perturbations_per_eval": int(params.get("perturbations_per_eval", 16))}
    if name == "gradcam":
        layer = cam_layer(model, params.get("layer"))
        return LayerGradCam(model, layer), {"relu_attributions": bool(params.get("relu_attributions", True))}
    if name == "guided_gradcam":
        layer = cam_layer(model, params.get("layer"))
        return GuidedGradCam(model, layer), {"interpolate_mode": params.get("interpolate_mode", "bilinear")}
    raise ValueError(f"unknown method {name!r}")


def _upsample(attr: torch.Tensor, inputs: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Layer attributions (B, 1, h, w) brought to the input's size."""
    if tuple(attr.shape[-2:]) == tuple(inputs.shape[-2:]):
        return attr
    return LayerAttribution.interpolate(attr, tuple(inputs.shape[-2:]), interpolate_mode=mode)


def _plain(name: str) -> Callable[[dict[str, Any], Any], Explainer]:
    def factory(params: dict[str, Any], ctx: Any) -> Explainer:
        def explain(model, inputs: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
            chunk = int(params.get("internal_batch_size", len(inputs)))
            if name == "gradient_shap":
                chunk = max(1, chunk // int(params.get("n_samples", 8)))

            def one(x: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
                algo, kwargs = _method(name, params, model, x)
                try:
                    attr = algo.attribute(x.clone().requires_grad_(True), target=t, **kwargs)
                except AssertionError as exc:
                    if "did not obtain any outputs" not in str(exc):
                        raise
                    raise UserError(f"explainer {name}: layer {params.get('layer')!r} is never called by the "
                                    f"model's forward (an fx-traced backbone calls its leaf blocks, e.g. "
                                    f"backbone.body.layer3.1 rather than backbone.body.layer3)") from None
                if name == "gradcam":
                    attr = _upsample(attr, x, params.get("upsample", "bilinear"))
                return attr

            if name == "gradcam" and t_none_single(model, target):
                # one sigmoid logit: Grad-CAM of the *predicted* class, i.e. of -logit where class 0 is predicted
                # (a ReLU'd map of the logit alone is empty for every image predicted negative)
                raw = in_chunks(lambda x, t: _no_relu(one, params, x, t), inputs, target, chunk)
                with torch.no_grad():
                    sign = torch.where(model(inputs).reshape(-1) >= 0, 1.0, -1.0).view(-1, 1, 1, 1)
                attr = raw * sign
                return attr.clamp(min=0) if params.get("relu_attributions", True) else attr

            if name in ("integrated_gradients",):  # captum batches the path itself
                return one(inputs, target)
            return in_chunks(one, inputs, target, chunk)

        return explain

    return factory


def t_none_single(model: torch.nn.Module, target: torch.Tensor | None) -> bool:
    """A single-output (sigmoid) model explained without a target."""
    return target is None and getattr(model, "output", None) == "sigmoid"


def _no_relu(one: Callable, params: dict[str, Any], x: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
    """``one`` with Grad-CAM's ReLU off (params restored afterwards)."""
    keep = params.get("relu_attributions", True)
    params["relu_attributions"] = False
    try:
        return one(x, t)
    finally:
        params["relu_attributions"] = keep


saliency = _plain("saliency")
integrated_gradients = _plain("integrated_gradients")
deeplift = _plain("deeplift")
gradient_shap = _plain("gradient_shap")
input_x_gradient = _plain("input_x_gradient")
guided_backprop = _plain("guided_backprop")
occlusion = _plain("occlusion")
gradcam = _plain("gradcam")
guided_gradcam = _plain("guided_gradcam")


def noise_tunnel(params: dict[str, Any], ctx: Any) -> Explainer:
    """SmoothGrad (or its squared / VarGrad forms) around any of the methods above."""
    inner, inner_params = params["method"], dict(params.get("method_params") or {})
    n = int(params["nt_samples"])

    def explain(model, inputs: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        def one(x: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
            algo, kwargs = _method(inner, inner_params, model, x)
            kwargs.pop("internal_batch_size", None)
            attr = NoiseTunnel(algo).attribute(
                x.clone().requires_grad_(True), nt_type=params["nt_type"], nt_samples=n,
                nt_samples_batch_size=int(params["nt_samples_batch_size"]), stdevs=float(params["stdevs"]),
                target=t, **kwargs)
            return _upsample(attr, x) if inner == "gradcam" else attr

        return in_chunks(one, inputs, target, max(1, int(params["internal_batch_size"]) // n))

    return explain


# --- attention maps ----------------------------------------------------------------------------------------------
def render_attention(maps: dict[str, torch.Tensor], features: dict[str, torch.Tensor],
                     size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Attention maps as (B, 1, H, W) images: spatial gates as they are, position attention (B, N, N) by how much
    each position is attended to (column mean), channel weights (B, C, 1, 1) or channel attention (B, C, C)
    (row mean) by weighting the channels of the level they act on. Maps that fit none of these are left out."""
    shapes = {n: tuple(f.shape[1:]) for n, f in features.items() if f.ndim == 4}
    out = {}
    for key, m in maps.items():
        m = m.detach().float()
        img = None
        if m.ndim == 4 and m.shape[1] == 1:
            img = m
        elif m.ndim == 4 and m.shape[2:] == (1, 1):
            img = _weighted(m[:, :, 0, 0], features, shapes)
        elif m.ndim == 3 and m.shape[1] == m.shape[2]:
            n = m.shape[1]
            hw = next(((h, w) for c, h, w in reversed(list(shapes.values())) if h * w == n), None)
            if hw is not None:
                img = m.mean(dim=1).reshape(-1, 1, *hw)
            else:
                img = _weighted(m.mean(dim=1), features, shapes)
        if img is not None:
            out[key] = F.interpolate(img, size=size, mode="bilinear", align_corners=False)
    return out


def _weighted(weights: torch.Tensor, features: dict[str, torch.Tensor], shapes: dict) -> torch.Tensor | None:
    """sum_c w_c * A_c over the deepest level with as many channels as there are weights."""
    name = next((n for n, s in reversed(list(shapes.items())) if s[0] == weights.shape[1]), None)
    if name is None:
        return None
    return (weights[:, :, None, None] * features[name].detach().float()).sum(dim=1, keepdim=True)


def attention_maps(params: dict[str, Any], ctx: Any) -> Explainer:
    """The maps the attention module exposes (model.attention_maps()), rendered at input resolution."""
    key = params.get("key")

    def explain(model, inputs: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        seen: dict[str, Any] = {}
        handle = model.attention.register_forward_pre_hook(lambda mod, args: seen.update(features=args[0]))
        try:
            with torch.no_grad():
                model(inputs)
        finally:
            handle.remove()
        rendered = render_attention(model.attention_maps(), seen.get("features") or {}, tuple(inputs.shape[-2:]))
        if not rendered:
            raise NotApplicable("the attention module exposes no map that can be drawn over the image")
        if key is not None:
            if key not in rendered:
                raise NotApplicable(f"no attention map {key!r}; this model has {', '.join(sorted(rendered))}")
            return rendered[key]
        normed = []
        for v in rendered.values():  # each map scaled to [0, 1] per image, then averaged
            lo = v.amin(dim=(1, 2, 3), keepdim=True)
            hi = v.amax(dim=(1, 2, 3), keepdim=True)
            normed.append((v - lo) / (hi - lo).clamp_min(1e-12))
        return torch.stack(normed).mean(0)

    return explain
