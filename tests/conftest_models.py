"""Helpers for the model zoo tests: build components from their records, chained the way the core does."""
from __future__ import annotations

import importlib
from typing import Any

import torch
from medattn_plugins import attention as attention_plugin
from medattn_plugins import backbones as backbone_plugin
from medattn_plugins import heads as head_plugin
from torch import nn

from medattn.components.model import MedAttnModel
from medattn.hookspecs import AttentionContext, Component, HeadContext, ModelContext

RECORDS: dict[tuple[str, str], Component] = {
    (c.kind, c.name): c
    for mod in (backbone_plugin, attention_plugin, head_plugin)
    for c in mod.medattn_components()
}


def defaults(kind: str, name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """``params`` with the top-level defaults of the component's schema filled in (as the core does)."""
    props = RECORDS[(kind, name)].params_schema.get("properties", {})
    out = {k: v["default"] for k, v in props.items() if "default" in v}
    out.update(params or {})
    return out


def factory(kind: str, name: str):
    """Import the factory a record names."""
    mod, _, fn = RECORDS[(kind, name)].factory.partition(":")
    return getattr(importlib.import_module(mod), fn)


def Chain(backbone: nn.Module, attention: nn.Module, head: nn.Module) -> nn.Module:  # noqa: N802
    """backbone -> attention -> head: the core's model (only its forward is used here)."""
    return MedAttnModel(backbone, attention, head, output="sigmoid", num_outputs=1, class_names=[])


def backbone(name: str, size: int = 64, num_outputs: int = 1, **params: Any) -> nn.Module:
    """Build a backbone by component name."""
    return factory("backbone", name)(defaults("backbone", name, params), ModelContext((size, size)))


@torch.no_grad()
def probe(bb: nn.Module, att: nn.Module, size: int) -> tuple[int, ...]:
    """The attention output shape for one image, in eval mode (what the core gives the head)."""
    modes = [(m, m.training) for m in (bb, att)]
    for m, _ in modes:
        m.eval()
    out = att(bb(torch.zeros(1, bb.in_chans, size, size)))
    for m, was in modes:
        m.train(was)
    return tuple(out.shape[1:])


def build(bb_name: str, att_name: str = "none", head: str | None = None, size: int = 64, num_outputs: int = 1,
          bb_params: dict[str, Any] | None = None, att_params: dict[str, Any] | None = None,
          head_params: dict[str, Any] | None = None) -> nn.Module:
    """The whole model; ``head`` None takes the attention's default head."""
    bb = backbone(bb_name, size, num_outputs, **(bb_params or {}))
    att = factory("attention", att_name)(defaults("attention", att_name, att_params),
                                         AttentionContext(backbone=bb, image_size=(size, size),
                                                          num_outputs=num_outputs))
    if head is None:
        spec = getattr(att, "default_head", None) or {"name": "linear", "params": {}}
        head, head_params = spec["name"], {**spec.get("params", {}), **(head_params or {})}
    hd = factory("head", head)(defaults("head", head, head_params),
                               HeadContext(in_shape=probe(bb, att, size), num_outputs=num_outputs))
    return Chain(bb, att, hd)


def n_params(module: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in module.parameters())


# --- small models and batches of the loss term tests (test_guided_terms, test_rrr_confound) ---------------------
GAIN = {"mining_weight": 1.0, "mask_weight": 1.0, "mask_penalty": "energy", "sigma": 0.5, "omega": 10.0}


def batch_data(size: int, n: int = 4, channels: int = 3) -> dict:
    g = torch.Generator().manual_seed(1)
    masks = torch.zeros(n, 1, size, size)
    masks[:, :, size // 8:size // 2, size // 4:3 * size // 4] = 1.0
    return {"image": torch.randn(n, channels, size, size, generator=g), "label": torch.tensor([0, 1] * (n // 2)),
            "mask": masks, "id": [f"img-{i}" for i in range(n)]}


def term_value(model: nn.Module, term: nn.Module, data: dict, grad_scale: float = 1.0) -> torch.Tensor:
    """The term's value on one training step's batch, as the training loop computes it."""
    from medattn.components.losses import LossTerms
    from medattn.train import engine as E

    model.train()
    scale = (grad_scale,) if grad_scale != 1.0 else ()
    _, loss, _ = E._terms_loss(model, model, LossTerms([("t", 1.0, term)]), data, data["image"], data["label"],
                               E.loss_function(model), *scale)
    return loss


class Identity(nn.Module):
    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return features["x"]


class Conv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 4, stride=4)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"x": self.conv(x)}


def pooled_model(bias: float = 0.0) -> MedAttnModel:
    """conv (1 -> 3 channels, 4 x 4 cells) -> identity -> global mean pool -> linear: one logit."""
    torch.manual_seed(0)
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 1))
    with torch.no_grad():
        head[2].weight.copy_(torch.tensor([[0.5, -1.0, 2.0]]))
        head[2].bias.fill_(bias)
    return MedAttnModel(Conv(), Identity(), head, "sigmoid", 1, ["a", "b"])


class Linear(nn.Module):
    """A one-logit linear model of 8x8 grey images: its input gradient is its weight."""

    output = "sigmoid"

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(64, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1))
