"""captum attribution methods, one class each, with the explainer contract ``(model, inputs, target)``.

Every method builds its captum object on the ``model`` it is called with (the copy the job attributes, or the
randomised copy of the sanity check), so layer methods resolve their layer on that model. Methods whose memory
grows with a sample count (gradient_shap, noise_tunnel) split the batch so that at most
``internal_batch_size`` images go through the network at once.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import captum.attr as ca
import torch
from jsonschema import Draft202012Validator

from medattn.api import UserError

from . import PARAMS
from .base import Explainer, baseline_for, in_chunks, layer_never_called, single_output


class CaptumMethod(Explainer):
    """A captum attribution class applied to slices of at most ``internal_batch_size`` images."""

    name: ClassVar[str] = ""  # the component name, for messages

    def algorithm(self, model: torch.nn.Module) -> Any:
        """The captum attribution object on ``model``."""
        raise NotImplementedError

    def options(self, inputs: torch.Tensor) -> dict[str, Any]:
        """Keyword arguments of the captum object's ``attribute`` for this slice of inputs."""
        return {}

    def chunk_size(self, n: int) -> int:
        """Images per captum call."""
        return int(self.params["internal_batch_size"])

    def finish(self, attr: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Attributions brought to the input's size (layer methods upsample)."""
        return attr

    def attribute(self, model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        return in_chunks(lambda x, t: self.attribute_slice(model, x, t), inputs, target,
                         self.chunk_size(len(inputs)))

    def attribute_slice(self, model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor | None,
                        **override: Any) -> torch.Tensor:
        """One captum call on ``x``; ``override`` replaces options."""
        with layer_errors(self):
            attr = self.algorithm(model).attribute(x.clone().requires_grad_(True), target=t,
                                                   **{**self.options(x), **override})
        return self.finish(attr, x)


@contextmanager
def layer_errors(explainer: Explainer) -> Iterator[None]:
    """captum's assertion for a hooked layer the forward never calls, as a UserError naming the layer."""
    try:
        yield
    except AssertionError as exc:
        if not explainer.needs_layer or "did not obtain any outputs" not in str(exc):
            raise
        raise layer_never_called(getattr(explainer, "name", type(explainer).__name__),
                                 explainer.params.get("layer")) from None


def upsample(attr: torch.Tensor, inputs: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Layer attributions (B, 1, h, w) brought to the input's size."""
    if tuple(attr.shape[-2:]) == tuple(inputs.shape[-2:]):
        return attr
    return ca.LayerAttribution.interpolate(attr, tuple(inputs.shape[-2:]), interpolate_mode=mode)


# --- gradient methods ----------------------------------------------------------------------------------------
class Saliency(CaptumMethod):
    """Input gradients (signed unless ``abs``)."""

    name = "saliency"

    def algorithm(self, model: torch.nn.Module) -> Any:
        return ca.Saliency(model)

    def options(self, inputs: torch.Tensor) -> dict[str, Any]:
        return {"abs": bool(self.params["abs"])}


class IntegratedGradients(CaptumMethod):
    """Path integral of gradients from a baseline; captum batches the path points itself."""

    name = "integrated_gradients"

    def algorithm(self, model: torch.nn.Module) -> Any:
        return ca.IntegratedGradients(model)

    def options(self, inputs: torch.Tensor) -> dict[str, Any]:
        p = self.params
        return {"baselines": baseline_for(inputs, p["baseline"]), "n_steps": int(p["n_steps"]),
                "internal_batch_size": int(p["internal_batch_size"]), "method": p["method"]}

    def chunk_size(self, n: int) -> int:
        return n


class DeepLift(CaptumMethod):
    """DeepLift (rescale rule) against a baseline."""

    name = "deeplift"
    needs_hook_safe_model = True

    def algorithm(self, model: torch.nn.Module) -> Any:
        return ca.DeepLift(model, multiply_by_inputs=bool(self.params["multiply_by_inputs"]))

    def options(self, inputs: torch.Tensor) -> dict[str, Any]:
        return {"baselines": baseline_for(inputs, self.params["baseline"])}


class GradientShap(CaptumMethod):
    """Expected gradients times (input - baseline) over noisy samples."""

    name = "gradient_shap"

    def algorithm(self, model: torch.nn.Module) -> Any:
        return ca.GradientShap(model)

    def options(self, inputs: torch.Tensor) -> dict[str, Any]:
        base = baseline_for(inputs, self.params["baseline"])
        base = torch.full_like(inputs[:1], base) if isinstance(base, float) else base
        return {"baselines": base, "n_samples": int(self.params["n_samples"]), "stdevs": float(self.params["stdevs"])}

    def chunk_size(self, n: int) -> int:  # each image goes through the network n_samples times
        return max(1, int(self.params["internal_batch_size"]) // int(self.params["n_samples"]))


class InputXGradient(CaptumMethod):
    """Input times its gradient."""

    name = "input_x_gradient"

    def algorithm(self, model: torch.nn.Module) -> Any:
        return ca.InputXGradient(model)


class GuidedBackprop(CaptumMethod):
    """Only positive gradients through every ReLU (hooks every activation module)."""

    name = "guided_backprop"
    needs_hook_safe_model = True

    def algorithm(self, model: torch.nn.Module) -> Any:
        return ca.GuidedBackprop(model)


# --- perturbation ----------------------------------------------------------------------------------------------
class Occlusion(CaptumMethod):
    """Score drop when a sliding square patch is replaced by a baseline value."""

    name = "occlusion"

    def algorithm(self, model: torch.nn.Module) -> Any:
        return ca.Occlusion(model)

    def options(self, inputs: torch.Tensor) -> dict[str, Any]:
        c, w, s = inputs.shape[1], int(self.params["window"]), int(self.params["stride"])
        return {"sliding_window_shapes": (c, w, w), "strides": (c, s, s), "baselines": float(self.params["baseline"]),
                "perturbations_per_eval": int(self.params["perturbations_per_eval"])}


# --- layer methods -----------------------------------------------------------------------------------------------
class GradCam(CaptumMethod):
    """LayerGradCam on a layer (default: the backbone's CAM layer), upsampled to the input.

    A single sigmoid logit is explained for the *predicted* class, i.e. as -logit where class 0 is predicted:
    a ReLU'd map of the logit alone is empty for every image predicted negative.
    """

    name = "gradcam"
    needs_layer = True
    needs_hook_safe_model = True  # a following in-place activation would overwrite the hooked output

    def algorithm(self, model: torch.nn.Module) -> Any:
        return ca.LayerGradCam(model, self.layer(model))

    def options(self, inputs: torch.Tensor) -> dict[str, Any]:
        return {"relu_attributions": bool(self.params["relu_attributions"])}

    def finish(self, attr: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        return upsample(attr, inputs, self.params["upsample"])

    def attribute(self, model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        if not single_output(model, target):
            return super().attribute(model, inputs, target)
        raw = in_chunks(lambda x, t: self.attribute_slice(model, x, t, relu_attributions=False), inputs, target,
                        self.chunk_size(len(inputs)))
        with torch.no_grad():
            sign = torch.where(model(inputs).reshape(-1) >= 0, 1.0, -1.0).view(-1, 1, 1, 1)
        attr = raw * sign
        return attr.clamp(min=0) if self.params["relu_attributions"] else attr


class GuidedGradCam(CaptumMethod):
    """Guided backprop times the upsampled Grad-CAM map of a layer."""

    name = "guided_gradcam"
    needs_layer = True
    needs_hook_safe_model = True

    def algorithm(self, model: torch.nn.Module) -> Any:
        return ca.GuidedGradCam(model, self.layer(model))

    def options(self, inputs: torch.Tensor) -> dict[str, Any]:
        return {"interpolate_mode": self.params["interpolate_mode"]}


# the methods noise_tunnel can wrap, by component name
WRAPPABLE: dict[str, type[CaptumMethod]] = {cls.name: cls for cls in (
    Saliency, IntegratedGradients, DeepLift, GradientShap, InputXGradient, GuidedBackprop, Occlusion, GradCam,
    GuidedGradCam)}


class NoiseTunnel(Explainer):
    """SmoothGrad (or its squared / VarGrad forms) around another method; its flags are the wrapped method's."""

    name = "noise_tunnel"

    def __init__(self, params: dict[str, Any], ctx: Any = None) -> None:
        super().__init__(params, ctx)
        self.inner = wrapped(params["method"], params["method_params"], ctx)
        self.needs_layer = self.inner.needs_layer
        self.needs_hook_safe_model = self.inner.needs_hook_safe_model

    def layer(self, model: torch.nn.Module) -> torch.nn.Module:
        return self.inner.layer(model)

    def attribute(self, model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        p, inner = self.params, self.inner
        n = int(p["nt_samples"])

        def one(x: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
            kwargs = inner.options(x)
            kwargs.pop("internal_batch_size", None)
            with layer_errors(inner):
                attr = ca.NoiseTunnel(inner.algorithm(model)).attribute(
                    x.clone().requires_grad_(True), nt_type=p["nt_type"], nt_samples=n,
                    nt_samples_batch_size=int(p["nt_samples_batch_size"]), stdevs=float(p["stdevs"]), target=t,
                    **kwargs)
            return inner.finish(attr, x)

        return in_chunks(one, inputs, target, int(p["internal_batch_size"]) // n)


def wrapped(method: str, method_params: dict[str, Any], ctx: Any) -> CaptumMethod:
    """The wrapped method, its params checked against its own schema and its defaults filled in."""
    schema = PARAMS[method]
    errors = sorted(Draft202012Validator(schema).iter_errors(dict(method_params)), key=str)
    if errors:
        where = ".".join(str(p) for p in errors[0].absolute_path)
        raise UserError(f"explainer noise_tunnel: method_params{'.' + where if where else ''}: {errors[0].message} "
                        f"(the params of {method}, as under its own name)")
    defaults = {k: v["default"] for k, v in schema["properties"].items() if "default" in v}
    return WRAPPABLE[method]({**defaults, **method_params}, ctx)
