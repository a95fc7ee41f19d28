"""Model assembly: backbone -> attention -> head -> logits, from the components an experiment selects."""
from __future__ import annotations

import torch
from torch import nn

from .config.schema import component_params
from .errors import UserError
from .hookspecs import AttentionContext, HeadContext, ModelContext
from .registry import Registry


class MedAttnModel(nn.Module):
    """The assembled classifier; ``forward`` returns logits (B, num_outputs)."""

    def __init__(self, backbone: nn.Module, attention: nn.Module, head: nn.Module, output: str, num_outputs: int,
                 class_names: list[str]):
        super().__init__()
        self.backbone = backbone
        self.attention = attention
        self.head = head
        self.output = output  # "sigmoid" | "softmax"
        self.num_outputs = num_outputs
        self.class_names = list(class_names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attention(self.backbone(x)))

    def cam_layer(self, name: str | None = None) -> nn.Module:
        """The module Grad-CAM-like methods hook: ``name`` (dotted, from the model root) or the backbone's default."""
        if name:
            try:
                return self.get_submodule(name)
            except AttributeError:
                raise UserError(f"layer {name!r} not found in the model; top-level modules: "
                                f"{', '.join(n for n, _ in self.named_children())}") from None
        return self.backbone.get_submodule(self.backbone.cam_layer)

    def attention_maps(self) -> dict[str, torch.Tensor]:
        """The maps the attention module exposes for its last forward (empty when it exposes none)."""
        fn = getattr(self.attention, "attention_maps", None)
        return fn() if callable(fn) else {}

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Class scores: P(class 1) with shape (B,) for sigmoid models, (B, K) softmax otherwise."""
        if self.output == "sigmoid":
            return torch.sigmoid(logits.reshape(-1))
        return torch.softmax(logits, dim=1)


def num_outputs_for(output: str, num_classes: int) -> tuple[str, int]:
    """Resolve ``model.output`` (auto | sigmoid | softmax) against the data set's class count."""
    if output == "auto":
        output = "sigmoid" if num_classes == 2 else "softmax"
    if output == "sigmoid" and num_classes != 2:
        raise UserError(f"model.output: sigmoid needs 2 classes, the data set has {num_classes}; use softmax")
    return output, (1 if output == "sigmoid" else num_classes)


def build_backbone(reg: Registry, config: dict, num_outputs: int) -> nn.Module:
    spec = config["model"]["backbone"]
    ctx = ModelContext(image_size=image_size(config), num_outputs=num_outputs)
    return reg.factory("backbone", spec["name"])(component_params(reg, "backbone", spec), ctx)


def build_model(reg: Registry, config: dict, class_names: list[str], backbone: nn.Module | None = None) -> MedAttnModel:
    """Assemble the model for a resolved config and the data set's classes."""
    output, n_out = num_outputs_for(config["model"].get("output", "auto"), len(class_names))
    size = image_size(config)
    backbone = backbone if backbone is not None else build_backbone(reg, config, n_out)
    att_spec = config["model"].get("attention") or {"name": "none"}
    attention = reg.factory("attention", att_spec["name"])(
        component_params(reg, "attention", att_spec), AttentionContext(backbone=backbone, image_size=size,
                                                                       num_outputs=n_out))
    head_spec = (config["model"].get("head") or getattr(attention, "default_head", None)
                 or reg.get("attention", att_spec["name"]).defaults.get("head") or {"name": "linear"})
    in_shape = probe_shape(backbone, attention, size)
    head = reg.factory("head", head_spec["name"])(component_params(reg, "head", head_spec),
                                                  HeadContext(in_shape=in_shape, num_outputs=n_out))
    return MedAttnModel(backbone, attention, head, output, n_out, class_names)


@torch.no_grad()
def probe_shape(backbone: nn.Module, attention: nn.Module, size: tuple[int, int]) -> tuple[int, ...]:
    """Shape of the attention output for one image (a dry run in eval mode)."""
    modes = [(m, m.training) for m in (backbone, attention)]
    for m, _ in modes:
        m.eval()
    try:
        out = attention(backbone(torch.zeros(1, int(getattr(backbone, "in_chans", 3)), *size)))
    finally:
        for m, was in modes:
            m.train(was)
    return tuple(out.shape[1:])


def image_size(config: dict) -> tuple[int, int]:
    size = config["dataset"].get("image_size", 224)
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
