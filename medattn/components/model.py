"""Model assembly: backbone -> attention -> head -> logits, from the components an experiment selects.

A component that cannot be built, or whose first forward fails, is one :class:`UserError` naming its place in
the experiment (``model.attention: ...``), whatever the library under it raised.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import UserError, failure_reason
from ..hookspecs import AttentionContext, Backbone, FeatureInfo, HeadContext, ModelContext
from ..registry import Registry

SLOTS = ("backbone", "attention", "head")


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


def build_backbone(reg: Registry, config: dict) -> nn.Module:
    """The backbone of ``model.backbone``, checked against the :class:`Backbone` protocol."""
    spec = config["model"]["backbone"]
    size = image_size(config)
    backbone = build_component(reg, "backbone", spec, ModelContext(image_size=size),
                               f"at {px(size)}")
    problem = backbone_problem(backbone)
    if problem:
        comp = reg.get("backbone", spec["name"])
        raise UserError(f"model.backbone: {spec['name']} (plugin {comp.plugin}) {problem}")
    return backbone


def build_model(reg: Registry, config: dict, class_names: list[str], backbone: nn.Module | None = None) -> MedAttnModel:
    """Assemble the model for a resolved config and the data set's classes."""
    output, n_out = num_outputs_for(config["model"]["output"], len(class_names))
    size = image_size(config)
    backbone = backbone if backbone is not None else build_backbone(reg, config)
    on = f"on {backbone.arch} at {px(size)}"
    att_spec = config["model"].get("attention") or {"name": "none"}
    attention = build_component(reg, "attention", att_spec,
                                AttentionContext(backbone=backbone, image_size=size, num_outputs=n_out), on)
    head_spec = (config["model"].get("head") or getattr(attention, "default_head", None)
                 or reg.get("attention", att_spec["name"]).defaults.get("head") or {"name": "linear"})
    in_shape = probe_shape(backbone, attention, size, (config["model"]["backbone"]["name"], att_spec["name"]))
    where = f"{on} after {att_spec['name']} (input {tuple(in_shape)})"
    head = build_component(reg, "head", head_spec, HeadContext(in_shape=in_shape, num_outputs=n_out), where)
    with torch.no_grad():
        was = head.training
        guarded(lambda: head.eval()(torch.zeros(1, *in_shape)), "head", head_spec["name"], f"cannot run {where}")
        head.train(was)
    return MedAttnModel(backbone, attention, head, output, n_out, class_names)


def build_component(reg: Registry, slot: str, spec: dict, ctx: Any, where: str) -> Any:
    """Build ``model.<slot>``; whatever its factory raises becomes one UserError with the field path."""
    return guarded(lambda: reg.build(slot, spec, ctx, field=f"model.{slot}", where=where), slot, spec["name"],
                   f"cannot be built {where}")


def guarded(call: Callable[[], Any], slot: str, name: str, failed: str) -> Any:
    """``call()``; a UserError gets the ``model.`` prefix of its field, anything else becomes
    ``model.<slot>: <name> <failed>: <reason>``."""
    try:
        return call()
    except UserError as exc:
        text = str(exc)
        if type(exc) is UserError and text.startswith(tuple(f"{s}." for s in SLOTS)):
            raise UserError(f"model.{text}") from None
        raise
    except Exception as exc:  # noqa: BLE001 - a library's AssertionError or RuntimeError is still bad input
        raise UserError(f"model.{slot}: {name} {failed}: {failure_reason(exc)}") from None


def backbone_problem(backbone: Any) -> str | None:
    """What keeps ``backbone`` from being a :class:`Backbone` (medattn.api), or None."""
    if not isinstance(backbone, nn.Module):
        return f"returned a {type(backbone).__name__}, not a torch.nn.Module"
    if not isinstance(backbone, Backbone):
        missing = [a for a in ("arch", "in_chans", "mean", "std", "feature_info", "cam_layer")
                   if not hasattr(backbone, a)]
        return f"returned a module without {', '.join(missing)} (the medattn.api.Backbone protocol)"
    if not backbone.feature_info or not all(isinstance(i, FeatureInfo) for i in backbone.feature_info):
        return "has a feature_info that is not a non-empty sequence of medattn.api.FeatureInfo"
    return None


@torch.no_grad()
def probe_shape(backbone: nn.Module, attention: nn.Module, size: tuple[int, int],
                names: tuple[str, str] = ("backbone", "attention")) -> tuple[int, ...]:
    """Shape of the attention output for one image (a dry run in eval mode); checks the backbone returns exactly
    the levels of its feature_info. ``names``: the backbone's and the attention's component names."""
    modes = [(m, m.training) for m in (backbone, attention)]
    for m, _ in modes:
        m.eval()
    try:
        feats = guarded(lambda: backbone(torch.zeros(1, int(backbone.in_chans), *size)), "backbone", names[0],
                        f"cannot run at {px(size)}")
        levels = [i.name for i in backbone.feature_info]
        if list(feats) != levels:
            raise UserError(f"model.backbone: {names[0]} returned levels {list(feats)}, but its feature_info lists "
                            f"{levels} (forward must return every level of feature_info, in order)")
        out = guarded(lambda: attention(feats), "attention", names[1],
                      f"cannot be built on {backbone.arch} at {px(size)}")
    finally:
        for m, was in modes:
            m.train(was)
    return tuple(out.shape[1:])


def image_size(config: dict) -> tuple[int, int]:
    """``dataset.image_size`` as (height, width)."""
    size = config["dataset"]["image_size"]
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def px(size: tuple[int, int]) -> str:
    """``64 px`` for a square size, ``64x48 px`` otherwise."""
    return f"{size[0]} px" if size[0] == size[1] else f"{size[0]}x{size[1]} px"
