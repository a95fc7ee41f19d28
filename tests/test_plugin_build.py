"""Building the model from components: a component that cannot be built is one UserError with its field path."""
from __future__ import annotations

import sys
import textwrap

import pytest
import torch

from medattn.api import UserError
from medattn.components.model import build_backbone, build_model
from medattn.registry import default_registry

BROKEN = """
from medattn.api import Component, hookimpl

@hookimpl
def medattn_components():
    schema = {"type": "object", "additionalProperties": False, "properties": {}}
    return [Component("attention", "explodes", "{mod}:explodes", "raises in its factory", schema),
            Component("attention", "fails_forward", "{mod}:fails_forward", "raises in its first forward", schema),
            Component("backbone", "not_a_backbone", "{mod}:not_a_backbone", "lacks the protocol", schema),
            Component("backbone", "wrong_levels", "{mod}:wrong_levels", "returns other levels", schema),
            Component("head", "wrong_width", "{mod}:wrong_width", "a Linear of the wrong width", schema)]


def wrong_width(params, ctx):
    import torch

    return torch.nn.Linear(3, ctx.num_outputs)


def explodes(params, ctx):
    raise RuntimeError("CUDA kernel image not available\\nsecond line")


def fails_forward(params, ctx):
    import torch

    class Bad(torch.nn.Module):
        def forward(self, features):
            assert False

    return Bad()


def not_a_backbone(params, ctx):
    import torch

    return torch.nn.Identity()


def wrong_levels(params, ctx):
    import torch
    from medattn.api import FeatureInfo

    class Wrong(torch.nn.Module):
        arch, in_chans, mean, std, cam_layer = "wrong", 3, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "conv"

        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
            self.feature_info = (FeatureInfo("deep", 4, 2),)

        def forward(self, x):
            y = self.conv(x)
            return {"shallow": y, "deep": y}

    return Wrong()
"""


@pytest.fixture
def reg(tmp_path):
    (tmp_path / "broken_components.py").write_text(textwrap.dedent(BROKEN).replace("{mod}", "broken_components"))
    sys.path.insert(0, str(tmp_path))
    registry = default_registry(["broken_components"])
    yield registry
    sys.path.remove(str(tmp_path))
    sys.modules.pop("broken_components", None)


def config(backbone="resnet18", attention=None, size=64, bb_params=None):
    model = {"backbone": {"name": backbone, "params": bb_params or {}}, "output": "auto"}
    if attention:
        model["attention"] = attention
    return {"model": model, "dataset": {"image_size": size}}


def test_halo_on_resnet18_at_64_px_names_the_field(reg):
    with pytest.raises(UserError) as err:
        build_model(reg, config(attention={"name": "timm_attn", "params": {"type": "halo"}}), ["a", "b"])
    msg = str(err.value)
    assert msg.startswith("model.attention.params.type: halo cannot be built on resnet18 at 64 px: level layer4 "
                          "is 2x2 (AssertionError in halo_attn.py:")
    assert "\n" not in msg


def test_a_library_error_in_a_factory_is_one_line_with_the_slot(reg):
    with pytest.raises(UserError, match=r"^model\.attention: explodes cannot be built on resnet18 at 64x48 px: "
                                        r"RuntimeError: CUDA kernel image not available$"):
        build_model(reg, config(attention={"name": "explodes"}, size=[64, 48]), ["a", "b"])


def test_a_bare_assertion_in_the_first_forward_names_the_line(reg):
    with pytest.raises(UserError, match=r"^model\.attention: fails_forward cannot be built on resnet18 at 64 px: "
                                        r"AssertionError in broken_components\.py:\d+: assert False$"):
        build_model(reg, config(attention={"name": "fails_forward"}), ["a", "b"])


def test_a_head_that_cannot_take_the_attention_output(reg):
    cfg = config()
    cfg["model"]["head"] = {"name": "wrong_width"}
    with pytest.raises(UserError, match=r"^model\.head: wrong_width cannot run on resnet18 at 64 px after none "
                                        r"\(input \(512, 2, 2\)\): RuntimeError: "):
        build_model(reg, cfg, ["a", "b"])


def test_a_plugin_field_path_gets_the_model_prefix(reg, tmp_path):
    with pytest.raises(UserError, match=r"^model\.backbone\.params\.weights: weights file .*nope\.pth"):
        build_backbone(reg, config(bb_params={"weights": str(tmp_path / "nope.pth")}))
    with pytest.raises(UserError, match=r"^model\.attention\.params\.level: 'layer9' is not a level of backbone "
                                        r"resnet18"):
        build_model(reg, config(attention={"name": "dual", "params": {"level": "layer9"}}), ["a", "b"])


def test_a_backbone_must_follow_the_protocol(reg):
    with pytest.raises(UserError, match=r"^model\.backbone: not_a_backbone \(plugin broken_components\) returned a "
                                        r"module without arch, in_chans, mean, std, feature_info, cam_layer"):
        build_backbone(reg, config("not_a_backbone"))
    with pytest.raises(UserError, match=r"^model\.backbone: wrong_levels returned levels \['shallow', 'deep'\], but "
                                        r"its feature_info lists \['deep'\]"):
        build_model(reg, config("wrong_levels"), ["a", "b"])


def test_a_model_builds_and_keeps_its_training_mode(reg):
    model = build_model(reg, config(attention={"name": "timm_attn", "params": {"type": "se"}}), ["a", "b", "c"])
    assert model.training and model(torch.randn(2, 3, 64, 64)).shape == (2, 3)
    assert model.output == "softmax" and model.class_names == ["a", "b", "c"]
