"""Attention components: none, timm_attn (step 1); shapes, backward, maps, errors."""
from __future__ import annotations

import pytest
import torch

from medattn.errors import UserError
from tests.conftest_models import build


def _backward_reaches_everything(model, x, num_outputs=1):
    model.train()
    out = model(x)
    assert out.shape == (x.shape[0], num_outputs)
    out.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing[:5]


@pytest.mark.parametrize("bb", ["resnet18", "densenet121"])
def test_none_is_identity_on_final_level(bb):
    model = build(bb, "none").eval()
    x = torch.randn(2, 3, 64, 64)
    feats = model.backbone(x)
    assert model.attention(feats) is feats[list(feats)[-1]]
    assert model.attention.default_head == {"name": "linear", "params": {}}
    assert model.attention.attention_maps() == {}
    _backward_reaches_everything(model, x)


@pytest.mark.parametrize("kind", ["se", "eca", "cbam", "gc"])
def test_timm_attn_types_on_last_level(kind):
    model = build("resnet18", "timm_attn", att_params={"type": kind}, num_outputs=3)
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    feats = model.backbone(x)
    out = model.attention(feats)
    assert out.shape == feats["layer4"].shape and not torch.allclose(out, feats["layer4"])
    maps = model.attention.attention_maps()
    assert maps and all(k.startswith("layer4/") for k in maps)
    if kind == "cbam":
        assert maps["layer4/spatial.gate"].shape == (2, 1, 2, 2)
        assert maps["layer4/channel.gate"].shape == (2, 512, 1, 1)
    _backward_reaches_everything(model, x, 3)


def test_timm_attn_levels_concat_and_kwargs():
    model = build("densenet121", "timm_attn",
                  att_params={"type": "se", "levels": ["norm5", "denseblock3"], "fuse": "concat",
                              "kwargs": {"rd_ratio": 0.5}})
    att = model.attention
    assert att.levels == ["denseblock3", "norm5"]
    assert att.attn["norm5"].fc1.out_channels == 512  # rd_ratio passed through
    x = torch.randn(2, 3, 64, 64)
    feats = model.backbone(x)
    assert list(feats) == ["denseblock3", "norm5"]
    assert att(feats).shape == (2, 2048, 2, 2)
    _backward_reaches_everything(model, x)


def test_timm_attn_defaults_to_the_deepest_feature_map_not_a_global_pool():
    model = build("resnet50", "timm_attn", att_params={"type": "eca"})
    assert model.attention.levels == ["layer4"]
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 1)


def test_timm_attn_errors():
    with pytest.raises(UserError, match="kwargs: timm create_attn\\('se'\\) rejected"):
        build("resnet18", "timm_attn", att_params={"type": "se", "kwargs": {"bogus": 1}})
    with pytest.raises(UserError, match="level 'layer9' is not a level of backbone resnet18"):
        build("resnet18", "timm_attn", att_params={"levels": ["layer9"]})
    with pytest.raises(UserError, match="'nope' is not one of"):
        build("resnet18", "timm_attn", att_params={"type": "nope"})
