"""torchvision backbones (resnet18, resnet50, densenet121, vgg16) with named levels from one forward pass."""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.models.resnet import BasicBlock, Bottleneck

from medattn.api import ModelContext, UserError

from .checkpointing import checkpointed
from .feature_backbone import IMAGENET_MEAN, IMAGENET_STD, FeatureBackbone, deepest_spatial
from .levels import TORCHVISION_ARCHS
from .weights import (
    first_conv_to_one_channel,
    load_into,
    missing_pretrained,
    read_state_dict,
    remap_densenet_keys,
    torch_hub_file,
)


def pretrained_file(arch: str) -> tuple[Any, str]:
    """(cache path, url) of the ImageNet checkpoint torchvision would download for ``arch``."""
    spec = TORCHVISION_ARCHS[arch]
    url = getattr(getattr(torchvision.models, spec["weights_enum"]), spec["weights_tag"]).url
    return torch_hub_file(url), url


def _construct(arch: str) -> nn.Module:
    """The randomly initialised torchvision model (VGG's 120M-parameter classifier is never materialised)."""
    if arch != "vgg16":
        return getattr(torchvision.models, TORCHVISION_ARCHS[arch]["builder"])(weights=None)
    from torchvision.models.vgg import VGG, cfgs, make_layers

    with torch.device("meta"):
        model = VGG(make_layers(cfgs["D"], batch_norm=False), init_weights=False)
    model.classifier = nn.Identity()
    model.to_empty(device="cpu")
    for m in model.modules():  # torchvision's VGG initialisation of the convolutions
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return model


class TorchvisionBackbone(FeatureBackbone):
    """A torchvision classifier cut into levels by ``create_feature_extractor`` (one traced graph, one pass).

    Residual blocks are leaf modules of the trace, so ``cam_layer`` names a real block that hooks see once.
    """

    def __init__(self, arch: str, params: dict[str, Any]):
        spec = TORCHVISION_ARCHS[arch]
        in_chans = params["in_chans"]
        super().__init__(arch, in_chans, IMAGENET_MEAN, IMAGENET_STD, spec["levels"],
                         params["final_level"] or spec["final"])
        model = _construct(arch)
        self._load_weights(model, spec, params)
        if in_chans == 1:
            first_conv_to_one_channel(model, spec["stem"])
        parent, _, name = spec["classifier"].rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, name, nn.Identity())  # never used
        # the whole torchvision model, sharing body's modules; unregistered, so state_dict keys stay body.*
        # (bench/attention_cost.py runs its features whole)
        self.__dict__["_source"] = model
        nodes = {lv["node"]: n for n, lv in self._level_table.items()}
        self.body = create_feature_extractor(model, return_nodes=nodes,
                                             tracer_kwargs={"leaf_modules": [BasicBlock, Bottleneck]})
        cam = spec["cam"] if spec["cam"] in self._level_table else deepest_spatial(self.feature_info)
        self.cam_layer = "body." + self._level_table[cam]["node"]
        self.freeze(params["freeze"])
        # the same modules cut into checkpointed segments, unregistered (state_dict keys stay body.*)
        self.__dict__["_segments"] = checkpointed(self.body) if params.get("checkpointing") else None

    def _load_weights(self, model: nn.Module, spec: dict[str, Any], params: dict[str, Any]) -> None:
        weights = params["weights"]
        if weights:
            source, field = f"weights file {weights!r}", "backbone.params.weights"
            state = read_state_dict(weights, field)
        elif params["pretrained"]:
            path, url = pretrained_file(self.arch)
            if not path.is_file():
                raise missing_pretrained(f"torchvision {self.arch} ({spec['weights_tag']})", [path], url)
            source, field = f"cached file {str(path)!r}", "backbone.params.pretrained"
            state = read_state_dict(path, field)
        else:
            return
        if self.arch.startswith("densenet"):
            state = remap_densenet_keys(state)
        stem_key = spec["stem"] + ".weight"
        if stem_key in state and state[stem_key].shape[1] == 1:  # a file saved from a 1-channel model
            if self.in_chans != 1:
                raise UserError(f"{field}: {source} has a 1-channel first conv; set in_chans: 1")
            first_conv_to_one_channel(model, spec["stem"])
        load_into(model, state, source, field, ignore_prefixes=[spec["classifier"]])

    def _units(self) -> list[tuple[nn.Module, str]]:
        targets = [n.target for n in self.body.graph.nodes if n.op == "call_module"]
        ends = []
        for name, lv in self._level_table.items():
            pat = re.compile(rf"^{re.escape(lv['node'])}(\.|$)")
            ends.append((max(i for i, t in enumerate(targets) if pat.match(t)), name))
        units = []
        for i, t in enumerate(targets):
            level = next(name for end, name in ends if end >= i)
            units.append((self.body.get_submodule(t), level))
        return units

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One pass; ``{level: tensor}`` for every level, shallow to deep, the final level last."""
        if self._segments is not None and self.training and torch.is_grad_enabled():
            out = self._segments(x)  # activation checkpointing: the same numbers, less memory, one more forward
        else:
            out = self.body(x)
        return OrderedDict((info.name, out[info.name]) for info in self.feature_info)


def build_resnet18(params: dict[str, Any], ctx: ModelContext) -> TorchvisionBackbone:
    """torchvision ResNet-18; levels layer1..layer4 (+ inner blocks), final layer4."""
    return TorchvisionBackbone("resnet18", params)


def build_resnet50(params: dict[str, Any], ctx: ModelContext) -> TorchvisionBackbone:
    """torchvision ResNet-50; levels layer1..layer4 (+ inner blocks) and avgpool, final avgpool (goncalves2021's)."""
    return TorchvisionBackbone("resnet50", params)


def build_densenet121(params: dict[str, Any], ctx: ModelContext) -> TorchvisionBackbone:
    """torchvision DenseNet-121; levels denseblock1..4, transition1..3, norm5 (final, no ReLU: goncalves2021's)."""
    return TorchvisionBackbone("densenet121", params)


def build_vgg16(params: dict[str, Any], ctx: ModelContext) -> TorchvisionBackbone:
    """torchvision VGG-16; levels pool3, conv4_1, conv4_3, pool4, conv5_1, conv5_3 (post-ReLU), pool5 (final)."""
    return TorchvisionBackbone("vgg16", params)
