"""The explain job's methods: built from explain.methods, their layers checked before any work, the model they
attribute (the hook-safe copy only when a method's ``needs_hook_safe_model`` flag asks for it), and the batched
call.

Explainers may be any callable ``(model, inputs, target)``; the flags are read with defaults that are safe for
one that declares none (no layer to check, the hook-safe copy).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ...errors import UserError
from ...hookspecs import ExplainContext
from .attribution import frozen, prepare_for_attribution
from .select import method_labels


def build_explainers(registry: Any, cfg: dict, ctx: ExplainContext) -> list[tuple[str, dict, Any]]:
    """(label, spec, explainer) per configured method; built once per run."""
    out = []
    for spec, label in zip(cfg["methods"], method_labels(cfg["methods"])):
        explainer = registry.build("explainer", spec, ctx)
        out.append((label, spec, explainer))
    return out


def layer_problems(explainers: list[tuple[str, dict, Any]], model: nn.Module) -> list[tuple[tuple, str]]:
    """(config path, message) for each ``needs_layer`` method whose layer is not a module of ``model``."""
    problems = []
    for i, (_, _, explainer) in enumerate(explainers):
        if getattr(explainer, "needs_layer", False):
            try:
                explainer.layer(model)
            except UserError as exc:
                problems.append((("explain", "methods", i, "params", "layer"), str(exc)))
    return problems


def check_layers(explainers: list[tuple[str, dict, Any]], model: nn.Module) -> None:
    """Every ``needs_layer`` method's layer exists in ``model``: one UserError naming each config field if not."""
    problems = layer_problems(explainers, model)
    if problems:
        raise UserError("\n".join(f"{'.'.join(map(str, path))}: {message}" for path, message in problems))


def model_to_attribute(explainers: list[tuple[str, dict, Any]], model: nn.Module, example: torch.Tensor,
                       log: Any) -> nn.Module:
    """The hook-safe copy of ``model`` when any method needs it, else the model itself with frozen weights."""
    if any(getattr(e, "needs_hook_safe_model", True) for _, _, e in explainers):
        return prepare_for_attribution(model, example, log)
    return frozen(model)


def attribute(explainer: Any, model: nn.Module, inputs: torch.Tensor, target: np.ndarray | None, batch_size: int,
              device: Any) -> np.ndarray:
    """Attributions of ``inputs`` in batches of ``batch_size`` (N, C|1, H, W), float32 on the CPU."""
    parts = []
    for start in range(0, len(inputs), batch_size):
        x = inputs[start:start + batch_size].to(device)
        t = None if target is None else torch.as_tensor(target[start:start + batch_size], device=device)
        attr = explainer(model, x, t)
        if tuple(attr.shape[-2:]) != tuple(x.shape[-2:]):
            raise UserError(f"explainer {explainer!r} returned maps of shape {tuple(attr.shape)} for inputs "
                            f"{tuple(x.shape)}")
        parts.append(attr.detach().float().cpu())
    return torch.cat(parts).numpy()
