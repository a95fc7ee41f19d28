"""What every explainer shares: one class per method, built once per run from its validated params.

An explainer is called as ``explainer(model, inputs, target)`` (the explainer contract) and does the work in
``attribute(model, inputs, target)``. It uses the ``model`` it is called with (the copy the explain job
attributes, or the randomised copy of the sanity check), never one kept from construction.

Capability flags, read by the explain job instead of method names:

- ``needs_layer``: the method hooks one layer of the model (``params["layer"]``; null = the backbone's default
  CAM layer). The job resolves that layer before any work, so a misspelled layer is one clear error.
- ``needs_hook_safe_model``: the method hooks activation modules (guided backprop, DeepLift) or a layer's
  output, so it must run on the hook-safe copy (every activation its own, non-in-place module). The job
  makes that copy only when a configured method asks for it.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from medattn.api import UserError


class Explainer:
    """Base class of the built-in explainers: ``Explainer(params, ctx)`` is the component factory."""

    needs_layer: ClassVar[bool] = False
    needs_hook_safe_model: ClassVar[bool] = False

    def __init__(self, params: dict[str, Any], ctx: Any = None) -> None:
        self.params = dict(params)
        self.ctx = ctx

    def __call__(self, model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        return self.attribute(model, inputs, target)

    def attribute(self, model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Attributions (B, C|1, H, W) of ``inputs`` (B, C, H, W) for class ``target`` (B,), or None for a
        single-output model."""
        raise NotImplementedError

    def layer(self, model: torch.nn.Module) -> torch.nn.Module:
        """The layer a ``needs_layer`` method hooks on ``model`` (UserError naming a layer that is not there)."""
        return model.cam_layer(self.params.get("layer"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params})"


def baseline_for(inputs: torch.Tensor, spec: Any) -> torch.Tensor | float:
    """A reference input: a number (normalised units; 0 = the data mean) or 'blur' (a heavily blurred copy)."""
    if spec == "blur":
        k = max(3, (min(inputs.shape[-2:]) // 8) | 1)
        return F.avg_pool2d(F.pad(inputs, [k // 2] * 4, mode="replicate"), k, stride=1)
    return float(spec)


def in_chunks(fn: Callable[[torch.Tensor, Any], torch.Tensor], inputs: torch.Tensor, target: torch.Tensor | None,
              size: int) -> torch.Tensor:
    """fn over slices of at most ``size`` images (bounded memory), concatenated."""
    size = max(1, int(size))
    parts = [fn(inputs[s:s + size], None if target is None else target[s:s + size])
             for s in range(0, len(inputs), size)]
    return torch.cat(parts)


def single_output(model: torch.nn.Module, target: torch.Tensor | None) -> bool:
    """A single-output (sigmoid) model explained without a target."""
    return target is None and getattr(model, "output", None) == "sigmoid"


def layer_never_called(name: str, layer: Any) -> UserError:
    """The error for a hooked layer that the model's forward never calls."""
    return UserError(f"explainer {name}: layer {layer!r} is never called by the model's forward (an fx-traced "
                     f"backbone calls its leaf blocks, e.g. backbone.body.layer3.1 rather than backbone.body.layer3)")
