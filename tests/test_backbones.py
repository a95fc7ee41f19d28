"""Backbones: every named level from one pass (fixed at build), weights (local only), in_chans, freeze, Grad-CAM layer."""
from __future__ import annotations

import sys

import pytest
import torch
import torchvision
from jsonschema import Draft202012Validator
from medattn_plugins.backbones.levels import level_names

from medattn.api import AttentionContext, Backbone, FeatureInfo, UserError
from tests.conftest_models import RECORDS, backbone, build, defaults, factory

FAST = ["resnet18", "densenet121", "vgg16", "resnet50"]


def test_listing_does_not_import_torch_and_schemas_are_valid():
    code = ("import sys, medattn_plugins.backbones as b, medattn_plugins.attention as a, medattn_plugins.heads as h\n"
            "[m.medattn_components() for m in (a, b, h)]\n"
            "assert 'torch' not in sys.modules and 'timm' not in sys.modules, 'heavy import'\n")
    import subprocess

    subprocess.run([sys.executable, "-c", code], check=True)
    for comp in RECORDS.values():
        Draft202012Validator.check_schema(comp.params_schema)
        assert comp.params_schema["additionalProperties"] is False
        for prop in comp.params_schema["properties"].values():
            assert prop["description"] and "\n" not in prop["description"]
            assert "default" in prop


@pytest.mark.parametrize("name", FAST)
def test_every_level_of_feature_info_from_one_forward(name):
    bb = backbone(name)
    assert isinstance(bb, Backbone) and bb.arch == name and bb.in_chans == 3 and len(bb.mean) == 3
    assert all(isinstance(i, FeatureInfo) for i in bb.feature_info)
    assert [i.name for i in bb.feature_info] == level_names(name)[: len(bb.feature_info)]
    out = bb(torch.randn(2, 3, 64, 64))
    assert list(out) == [i.name for i in bb.feature_info]
    for info, (level, t) in zip(bb.feature_info, out.items()):
        assert t.shape[1] == info.channels and info.spatial == (info.reduction is not None)
        expect = 1 if info.reduction is None else 64 // info.reduction
        assert t.shape[-2:] == (expect, expect), (level, t.shape)


def test_final_levels_of_goncalves2021():
    x = torch.randn(2, 3, 64, 64)
    dense = backbone("densenet121")(x)
    # norm5 without the ReLU, as goncalves2021 flattens it
    assert list(dense)[-1] == "norm5" and (dense["norm5"] < 0).any()
    assert list(backbone("resnet50")(x).items())[-1][1].shape == (2, 2048, 1, 1)  # avgpool
    assert list(backbone("vgg16")(x))[-1] == "pool5"
    cut = backbone("resnet50", final_level="layer3")
    assert list(cut(x))[-1] == "layer3" and cut.feature_info[-1].name == "layer3"
    assert "layer4" not in {i.name for i in cut.feature_info}


def test_vgg_conv_levels_are_post_relu_and_pool_levels_match_maxpool():
    out = backbone("vgg16")(torch.randn(1, 3, 64, 64))
    assert list(out) == ["pool3", "conv4_1", "conv4_3", "pool4", "conv5_1", "conv5_3", "pool5"]
    assert out["conv5_3"].min() >= 0 and (out["conv5_3"] == 0).any()
    torch.testing.assert_close(out["pool4"], torch.nn.functional.max_pool2d(out["conv4_3"], 2))
    torch.testing.assert_close(out["pool5"], torch.nn.functional.max_pool2d(out["conv5_3"], 2))


def test_levels_do_not_depend_on_what_was_built_after_the_backbone():
    """Building attention modules on a backbone leaves its levels, outputs and graph as they were."""
    torch.manual_seed(0)
    bb = backbone("densenet121").eval()
    graph, info = str(bb.body.graph), bb.feature_info
    x = torch.randn(1, 3, 64, 64)
    before = bb(x)
    for att, params in (("timm_attn", {"levels": ["denseblock2"]}), ("mldam", {}), ("agpad", {})):
        factory("attention", att)(defaults("attention", att, params), AttentionContext(bb, (64, 64), 1))
    assert str(bb.body.graph) == graph and bb.feature_info == info
    after = bb(x)
    assert list(after) == list(before)
    for k in before:
        torch.testing.assert_close(after[k], before[k])


@pytest.mark.parametrize("name", ["resnet18", "densenet121"])
def test_one_pass_per_forward(name):
    bb = backbone(name)
    stem = [m for m in bb.modules() if isinstance(m, torch.nn.Conv2d)][0]
    calls = []
    stem.register_forward_hook(lambda *a: calls.append(1))
    bb(torch.randn(1, 3, 64, 64))
    assert len(calls) == 1


@pytest.mark.parametrize("name", FAST)
def test_cam_layer_is_a_module_seen_once_with_the_last_feature_map(name):
    bb = backbone(name)
    layer = bb.get_submodule(bb.cam_layer)
    seen = []
    layer.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    bb(torch.randn(1, 3, 64, 64))
    spatial = {"resnet18": (1, 512, 2, 2), "resnet50": (1, 2048, 2, 2), "densenet121": (1, 1024, 2, 2),
               "vgg16": (1, 512, 4, 4)}[name]
    assert seen == [spatial]


@pytest.mark.parametrize("name,bb_params,side", [("resnet18", {}, 2), ("vgg16", {}, 4), ("densenet121", {}, 2),
                                                 ("timm", {"model_name": "test_resnet"}, 2)])
def test_grad_cam_through_cam_layer(name, bb_params, side):
    from captum.attr import LayerGradCam

    model = build(name, "none", size=64, bb_params=bb_params).eval()
    layer = model.backbone.get_submodule(model.backbone.cam_layer)
    attr = LayerGradCam(model, layer).attribute(torch.randn(2, 3, 64, 64), target=0)
    assert attr.shape == (2, 1, side, side) and attr.abs().sum() > 0


def test_state_dict_round_trip_and_stable_keys():
    a, b = backbone("densenet121"), backbone("densenet121")
    keys = list(a.state_dict())
    assert all(k.startswith("body.") for k in keys) and not any("classifier" in k for k in keys)
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 64, 64)
    a.eval(), b.eval()
    for (ka, va), (kb, vb) in zip(a(x).items(), b(x).items()):
        assert ka == kb
        torch.testing.assert_close(va, vb)


# -- weights ----------------------------------------------------------------------------------------------------
def _saved_resnet18(path):
    torch.manual_seed(0)
    ref = torchvision.models.resnet18(weights=None)
    torch.save(ref.state_dict(), path)
    return ref


def test_weights_file_loads(tmp_path):
    ref = _saved_resnet18(tmp_path / "r18.pth")
    bb = backbone("resnet18", weights=str(tmp_path / "r18.pth"))
    torch.testing.assert_close(bb.body.get_submodule("layer3.1.conv2").weight, ref.layer3[1].conv2.weight)
    torch.testing.assert_close(bb.body.bn1.running_var, ref.bn1.running_var)


def test_weights_in_chans_1_sums_rgb_filters(tmp_path):
    ref = _saved_resnet18(tmp_path / "r18.pth")
    bb = backbone("resnet18", weights=str(tmp_path / "r18.pth"), in_chans=1)
    assert bb.in_chans == 1 and len(bb.mean) == 1 and bb.body.conv1.weight.shape[1] == 1
    torch.testing.assert_close(bb.body.conv1.weight, ref.conv1.weight.sum(1, keepdim=True))
    gray = torch.rand(1, 1, 64, 64)
    ref.eval().fc = torch.nn.Identity()
    ref.avgpool = torch.nn.Identity()  # ref(x) is then layer4 flattened
    expected = ref(gray.repeat(1, 3, 1, 1)).reshape(1, 512, 2, 2)  # a grey image as RGB through the 3-channel net
    torch.testing.assert_close(bb.eval()(gray)["layer4"], expected, atol=1e-4, rtol=1e-4)


def test_densenet_old_checkpoint_keys_are_remapped(tmp_path):
    ref = torchvision.models.densenet121(weights=None)
    old = {k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2."): v for k, v in ref.state_dict().items()
           if not k.endswith("num_batches_tracked")}  # the format of torchvision's densenet121-a639ec97.pth
    assert any("norm.1." in k for k in old)
    torch.save(old, tmp_path / "dn.pth")
    bb = backbone("densenet121", weights=str(tmp_path / "dn.pth"))
    torch.testing.assert_close(bb.body.get_submodule("features.denseblock3.denselayer5.conv2").weight,
                               ref.features.denseblock3.denselayer5.conv2.weight)


def test_bad_weights_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="weights file .*nope.pth.* does not exist"):
        backbone("resnet18", weights=str(tmp_path / "nope.pth"))
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(UserError, match="cannot read .*junk.pth"):
        backbone("resnet18", weights=str(tmp_path / "junk.pth"))
    _saved_resnet18(tmp_path / "r18.pth")
    with pytest.raises(UserError, match="does not fit DenseNet: .*missing"):
        backbone("densenet121", weights=str(tmp_path / "r18.pth"))


def test_pretrained_offline_names_the_missing_cache_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    expected = tmp_path / "hub" / "checkpoints" / "densenet121-a639ec97.pth"
    with pytest.raises(UserError) as err:
        backbone("densenet121", pretrained=True)
    msg = str(err.value)
    assert str(expected) in msg and "weights: /path/to/file.pth" in msg
    # the same file, once in the cache, is what pretrained: true loads
    expected.parent.mkdir(parents=True)
    ref = torchvision.models.densenet121(weights=None)
    torch.save(ref.state_dict(), expected)
    bb = backbone("densenet121", pretrained=True)
    torch.testing.assert_close(bb.body.get_submodule("features.conv0").weight, ref.features.conv0.weight)


# -- freeze -----------------------------------------------------------------------------------------------------
def test_freeze_up_to_a_level_keeps_its_batchnorm_in_eval():
    bb = backbone("resnet18", freeze="layer2")
    frozen = {n for n, p in bb.named_parameters() if not p.requires_grad}
    assert "body.conv1.weight" in frozen and "body.layer2.1.conv2.weight" in frozen
    assert "body.layer3.0.conv1.weight" not in frozen and "body.layer4.1.bn2.weight" not in frozen
    bb.train()
    assert not bb.body.get_submodule("layer2.1.bn2").training and bb.body.get_submodule("layer3.0.bn1").training
    before = bb.body.bn1.running_mean.clone()
    bb(torch.randn(2, 3, 64, 64))
    torch.testing.assert_close(bb.body.bn1.running_mean, before)
    assert all(not p.requires_grad for p in backbone("densenet121", freeze="all").parameters())
    with pytest.raises(UserError, match=r"^backbone\.params\.freeze: 'layer9' is not"):
        backbone("resnet18", freeze="layer9")


def test_freeze_densenet_level():
    bb = backbone("densenet121", freeze="transition1")
    assert not bb.body.get_submodule("features.transition1.conv").weight.requires_grad
    assert bb.body.get_submodule("features.denseblock2.denselayer1.conv1").weight.requires_grad


# -- timm -------------------------------------------------------------------------------------------------------
def test_timm_levels_from_feature_info():
    import timm

    bb = backbone("timm", model_name="test_resnet")
    ref = timm.create_model("test_resnet", features_only=True)
    assert [i.name for i in bb.feature_info] == ref.feature_info.module_name()
    out = bb(torch.randn(2, 3, 64, 64))
    assert list(out) == ref.feature_info.module_name()
    for info, t, c, r in zip(bb.feature_info, out.values(), ref.feature_info.channels(),
                             ref.feature_info.reduction()):
        assert info.channels == c == t.shape[1] and info.reduction == r and t.shape[-1] == 64 // r
    assert bb.mean == (0.5, 0.5, 0.5)
    assert isinstance(bb.get_submodule(bb.cam_layer), torch.nn.Module)


def test_timm_freeze_weights_and_errors(tmp_path, monkeypatch):
    import timm

    bb = backbone("timm", model_name="test_resnet", freeze="layer2")
    assert not bb.body.layer2[0].conv1.weight.requires_grad and bb.body.layer3[0].conv1.weight.requires_grad
    ref = timm.create_model("test_resnet")
    torch.save(ref.state_dict(), tmp_path / "t.pth")
    loaded = backbone("timm", model_name="test_resnet", weights=str(tmp_path / "t.pth"), in_chans=1)
    w = ref.state_dict()["conv1.0.weight"]
    torch.testing.assert_close(loaded.body.conv1[0].weight, w.sum(1, keepdim=True))
    with pytest.raises(UserError, match="not a timm model"):
        backbone("timm", model_name="resnet_nope")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(UserError, match="not in the local cache: missing .*resnet18_a1_0-d63eafa0.pth.*weights:"):
        backbone("timm", model_name="resnet18", pretrained=True)


def test_in_chans_1_forward_and_bad_value():
    bb = backbone("densenet121", in_chans=1)
    assert bb(torch.randn(1, 1, 64, 64))["norm5"].shape == (1, 1024, 2, 2)
    schema = Draft202012Validator(RECORDS[("backbone", "vgg16")].params_schema)
    assert [e.path[0] for e in schema.iter_errors({"in_chans": 4})] == ["in_chans"]  # refused before any factory


@pytest.mark.slow
@pytest.mark.parametrize("name,shape", [("densenet121", (1024, 7, 7)), ("resnet50", (2048, 1, 1)),
                                        ("vgg16", (512, 7, 7))])
def test_goncalves2021_final_shapes_at_224(name, shape):
    bb = backbone(name, size=224)
    assert bb(torch.randn(1, 3, 224, 224))[bb.feature_info[-1].name].shape[1:] == shape


def test_train_eval_modes_keep_frozen_batchnorm_in_eval():
    bb = backbone("resnet18", freeze="layer1").eval()
    assert not any(m.training for m in bb.modules())
    bb.train()
    assert bb.body.get_submodule("layer3.0.bn1").training and not bb.body.get_submodule("layer1.0.bn1").training
