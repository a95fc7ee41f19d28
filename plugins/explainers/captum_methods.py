"""captum attribution methods wrapped to the explainer contract: (model, inputs, target) -> attributions."""
from __future__ import annotations

from typing import Any, Callable

import torch
from captum.attr import IntegratedGradients, Saliency


def saliency(params: dict[str, Any], ctx: Any) -> Callable:
    def explain(model, inputs: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        return Saliency(model).attribute(inputs.requires_grad_(True), target=target, abs=bool(params["abs"]))

    return explain


def integrated_gradients(params: dict[str, Any], ctx: Any) -> Callable:
    def explain(model, inputs: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        return IntegratedGradients(model).attribute(
            inputs, baselines=float(params["baseline"]), target=target, n_steps=int(params["n_steps"]),
            internal_batch_size=int(params["internal_batch_size"]))

    return explain
