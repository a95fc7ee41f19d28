"""Attention components: none, timm_attn (step 1); shapes, backward, maps, errors."""
from __future__ import annotations

import pytest
import torch

from medattn.api import UserError
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
    assert att(feats).shape == (2, 2048, 2, 2)
    _backward_reaches_everything(model, x)


def test_timm_attn_defaults_to_the_deepest_feature_map_not_a_global_pool():
    model = build("resnet50", "timm_attn", att_params={"type": "eca"})
    assert model.attention.levels == ["layer4"]
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 1)


def test_timm_attn_errors():
    with pytest.raises(UserError, match="kwargs: timm create_attn\\('se'\\) rejected"):
        build("resnet18", "timm_attn", att_params={"type": "se", "kwargs": {"bogus": 1}})
    with pytest.raises(UserError, match=r"^attention\.params\.levels: 'layer9' is not a level of backbone resnet18; "
                                        r"levels: layer1\.0, layer1, "):
        build("resnet18", "timm_attn", att_params={"levels": ["layer9"]})
    with pytest.raises(UserError, match=r"^attention\.params\.type: halo cannot be built on resnet18 at 64 px: "
                                        r"level layer4 is 2x2 \(AssertionError in halo_attn\.py:\d+: .*block_size"):
        build("resnet18", "timm_attn", att_params={"type": "halo"})
    assert build("resnet18", "timm_attn", att_params={"type": "halo"}, size=256)(torch.randn(1, 3, 256, 256)).shape \
        == (1, 1)  # layer4 is 8x8 at 256 px: one 8x8 block


# -- PAM / CAM / NormL numerics against einsum restatements of the published formulas -------------------------
from medattn_plugins.attention.dual_attention import ChannelAttention, PositionAttention  # noqa: E402
from medattn_plugins.attention.mldam import NormL, cam_gram, pam_goncalves, pam_mishra  # noqa: E402


def _nhwc(t):  # (B, C, H, W) -> (B, N, C), the Keras layout the papers' code uses
    return t.flatten(2).transpose(1, 2)


def test_pam_mishra_matches_keras_formula():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 5, 3, 4) for _ in range(3))
    y, attn = pam_mishra(v, q, k)
    Q, K, V = _nhwc(q), _nhwc(k), _nhwc(v)
    A = torch.softmax(torch.einsum("bic,bjc->bij", Q, K), dim=-1)  # softmax over the last axis, per query row
    out = torch.einsum("bij,bjc->bic", A, V) + V
    torch.testing.assert_close(_nhwc(y), out)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 12))


def test_pam_goncalves_matches_goncalves2021_formula():
    torch.manual_seed(1)
    q, k, v = (torch.randn(2, 5, 3, 4) for _ in range(3))
    y, attn = pam_goncalves(v, q, k)
    qf, kf, vf = q.flatten(2), k.flatten(2), v.flatten(2)
    E = torch.einsum("bci,bcj->bij", qf, kf)
    E = torch.softmax(E.reshape(2, -1), dim=1).reshape(2, 12, 12)  # over the whole N*N matrix
    out = torch.einsum("bci,bij->bcj", vf, E) + vf  # v . E (transposed aggregation)
    torch.testing.assert_close(y.flatten(2), out)
    torch.testing.assert_close(attn.sum((1, 2)), torch.ones(2))
    assert not torch.allclose(y, pam_mishra(v, q, k)[0])


def test_cam_gram_matches_keras_formula():
    torch.manual_seed(2)
    x = torch.randn(2, 6, 3, 3)
    y, gram = cam_gram(x)
    X = _nhwc(x)
    G = torch.einsum("bnc,bnd->bcd", X, X)  # x^T x, no softmax
    torch.testing.assert_close(_nhwc(y), torch.einsum("bnc,bcd->bnd", X, G) + X)
    torch.testing.assert_close(gram, G)


def test_norml_adds_eps_to_the_population_std():
    torch.manual_seed(3)
    x = torch.randn(2, 6, 3, 3)
    norm = NormL(6, eps=0.5)
    with torch.no_grad():
        norm.a.copy_(torch.linspace(0.5, 2, 6).view(1, 6, 1, 1))
        norm.b.fill_(0.25)
    X = _nhwc(x)
    mean = X.mean(-1, keepdim=True)
    std = ((X - mean) ** 2).mean(-1, keepdim=True).sqrt()
    expect = (X - mean) / (std + 0.5) * torch.linspace(0.5, 2, 6) + 0.25
    torch.testing.assert_close(_nhwc(norm(x)), expect)


def test_danet_pam_matches_formula():
    torch.manual_seed(4)
    x = torch.randn(2, 16, 3, 3)
    pam = PositionAttention(16, reduction=8, bias=True)
    with torch.no_grad():
        pam.gamma.fill_(0.7)
    y = pam(x)
    a = x.flatten(2)

    def proj(conv):
        return torch.einsum("oc,bcn->bon", conv.weight[:, :, 0, 0], a) + conv.bias[None, :, None]

    S = torch.softmax(torch.einsum("bci,bcj->bij", proj(pam.query), proj(pam.key)), dim=-1)
    out = torch.einsum("bij,bcj->bci", S, proj(pam.value))
    torch.testing.assert_close(y.flatten(2), 0.7 * out + a)
    assert pam.query.out_channels == 2 and pam.value.out_channels == 16


@pytest.mark.parametrize("order,max_trick", [("danet", True), ("keras", False)])
def test_channel_attention_matches_formula(order, max_trick):
    torch.manual_seed(5)
    x = torch.randn(2, 6, 3, 3) * 0.3
    cam = ChannelAttention(max_trick=max_trick, order=order)
    with torch.no_grad():
        cam.gamma.fill_(0.5)
    y = cam(x)
    if order == "danet":  # Fu et al.: softmax(max - energy), out = S x
        a = x.flatten(2)
        E = torch.einsum("bcn,bdn->bcd", a, a)
        S = torch.softmax(E.max(-1, keepdim=True).values - E, dim=-1)
        torch.testing.assert_close(y.flatten(2), 0.5 * torch.einsum("bcd,bdn->bcn", S, a) + a)
    else:  # AG-PAD Keras: A = (N, C), S = softmax(A^T A), out = A S
        A = _nhwc(x)
        S = torch.softmax(torch.einsum("bnc,bnd->bcd", A, A), dim=-1)
        torch.testing.assert_close(_nhwc(y), 0.5 * torch.einsum("bnd,bdc->bnc", A, S) + A)


def test_agpad_attention_is_identity_at_init():
    model = build("densenet121", "agpad").eval()
    att = model.attention
    x = torch.relu(torch.randn(2, 1024, 2, 2))
    torch.testing.assert_close(att.pam(x), x)
    torch.testing.assert_close(att.cam(x), x)
    assert att.pam.gamma.item() == 0 and att.cam.gamma.item() == 0
    with torch.no_grad():
        att.pam.gamma.fill_(1.0)
    assert not torch.allclose(att.pam(x), x)


def test_agpad_structure_and_bn_presets():
    att = build("densenet121", "agpad").attention
    assert att.pam.query.out_channels == 128 and att.pam.query.bias is None and att.pam.value.out_channels == 1024
    kinds = [type(m).__name__ for m in att.pam_conv]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "Dropout", "Conv2d"]
    assert att.pam_conv[0].kernel_size == (3, 3) and att.pam_conv[0].out_channels == 512
    assert att.pam_conv[3].p == 0.5 and att.dropout.p == 0.5
    assert att.fuse[0].kernel_size == (1, 1) and att.fuse[0].bias is not None
    assert (att.pam_conv[1].momentum, att.pam_conv[1].eps) == (0.01, 1e-3)  # keras preset
    torch_bn = build("densenet121", "agpad", att_params={"bn": "torch", "bn_eps": 1e-4}).attention.fuse[1]
    assert (torch_bn.momentum, torch_bn.eps) == (0.1, 1e-4)
    assert att.default_head == {"name": "linear", "params": {}}


def test_dual_is_identity_at_init_then_attends():
    model = build("resnet18", "dual", att_params={"fuse": "mean"}).eval()
    x = torch.randn(2, 3, 64, 64)
    feats = model.backbone(x)
    torch.testing.assert_close(model.attention(feats), feats["layer4"])
    maps = model.attention.attention_maps()
    assert maps["pam"].shape == (2, 4, 4) and maps["cam"].shape == (2, 512, 512)


# -- MLDAM wiring: taps, pooling, tiling, heads --------------------------------------------------------------
def test_mldam_goncalves_densenet_taps_pool_and_tile():
    model = build("densenet121", "mldam", att_params={"variant": "goncalves2021"}).eval()
    att = model.attention
    assert att.taps == {"q": "denseblock2", "k": "denseblock3", "v": "norm5", "x": "norm5"}
    feats = model.backbone(torch.randn(2, 3, 64, 64))
    q = torch.nn.functional.avg_pool2d(feats["denseblock2"], 4)
    k = torch.nn.functional.avg_pool2d(feats["denseblock3"], 2)
    v = feats["norm5"]
    p, _ = pam_goncalves(v, torch.cat([q, q], 1), k)
    c, _ = cam_gram(v)
    expect = (att.pam_norm(torch.relu(p)) + att.cam_norm(torch.relu(c))) / 2
    torch.testing.assert_close(att(feats), expect)
    assert isinstance(att.pam_norm, torch.nn.BatchNorm2d) and att.pam_norm.eps == 1e-6
    assert att.default_head == {"name": "mlp", "params": {"hidden": ["C", "C/2"], "dropout": 0.25}}


def test_mldam_mishra_vgg16_at_112_taps_and_head():
    model = build("vgg16", "mldam", size=112, num_outputs=3).eval()
    att = model.attention
    assert att.taps == {"q": "conv4_1", "k": "conv4_3", "v": "conv5_1", "x": "conv5_3"}
    feats = model.backbone(torch.randn(1, 3, 112, 112))
    assert feats["conv4_1"].shape == (1, 512, 14, 14) and feats["conv5_3"].shape == (1, 512, 7, 7)
    q, k = (torch.nn.functional.avg_pool2d(feats[n], 2) for n in ("conv4_1", "conv4_3"))
    p, attn = pam_mishra(feats["conv5_1"], q, k)
    c, _ = cam_gram(feats["conv5_3"])
    torch.testing.assert_close(att(feats), (att.pam_norm(torch.relu(p)) + att.cam_norm(torch.relu(c))) / 2)
    assert isinstance(att.pam_norm, NormL) and att.attention_maps()["pam"].shape == (1, 49, 49)
    linears = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(25088, 512), (512, 512), (512, 3)]


def test_mldam_overrides_and_errors():
    att = build("vgg16", "mldam", att_params={"variant": "mishra2019", "pam": "goncalves", "norm": "batchnorm"})
    assert att.attention.pam_kind == "goncalves" and isinstance(att.attention.pam_norm, torch.nn.BatchNorm2d)
    with pytest.raises(UserError, match="no default taps for backbone 'test_resnet'"):
        build("timm", "mldam", bb_params={"model_name": "test_resnet"})
    custom = build("timm", "mldam", bb_params={"model_name": "test_resnet"},
                   att_params={"taps": {"q": "layer2", "k": "layer2", "v": "layer4", "x": "layer4"},
                               "variant": "goncalves2021"})
    assert custom(torch.randn(2, 3, 64, 64)).shape == (2, 1)
    with pytest.raises(UserError, match="q=.layer9. not levels"):
        build("resnet18", "mldam", att_params={"taps": {"q": "layer9", "k": "layer3", "v": "layer4", "x": "layer4"}})
    with pytest.raises(UserError, match="q .*layer2, 128 ch.* and k .*layer3, 256 ch.* need the same channels"):
        build("resnet18", "mldam", att_params={"taps": {"q": "layer2", "k": "layer3", "v": "layer4", "x": "layer4"}})


# -- every pair the papers define: shape + backward, one pass, one optimisation step, state_dict ---------------
PAIRS = [
    ("densenet121", "none", {}, "flatten_linear"), ("resnet50", "none", {}, "flatten_linear"),
    ("vgg16", "none", {}, "flatten_linear"),
    ("densenet121", "mldam", {"variant": "goncalves2021"}, None), ("resnet50", "mldam", {"variant": "goncalves2021"}, None),
    ("vgg16", "mldam", {"variant": "goncalves2021"}, None),
    ("vgg16", "mldam", {}, None), ("densenet121", "mldam", {}, None), ("resnet50", "mldam", {}, None),
    ("densenet121", "agpad", {}, None), ("resnet18", "dual", {}, None),
]


@pytest.mark.parametrize("bb,att,params,head", PAIRS, ids=[f"{b}-{a}-{p.get('variant', '')}" for b, a, p, _ in PAIRS])
def test_paper_pairs_shape_backward_one_pass(bb, att, params, head):
    model = build(bb, att, head=head, att_params=params, num_outputs=2)
    stem = [m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d)][0]
    calls = []
    stem.register_forward_hook(lambda *a: calls.append(1))
    _backward_reaches_everything(model, torch.randn(2, 3, 64, 64), 2)
    assert len(calls) == 1


@pytest.mark.parametrize("bb,att,params", [("densenet121", "mldam", {"variant": "goncalves2021"}),
                                           ("vgg16", "mldam", {}), ("densenet121", "agpad", {}),
                                           ("resnet18", "dual", {})])
def test_one_optimisation_step_reduces_the_loss(bb, att, params):
    torch.manual_seed(0)
    model = build(bb, att, att_params=params).train()
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0.0, 1.0, 1.0, 0.0])
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def loss():
        torch.manual_seed(1)  # the same dropout masks before and after the step
        return torch.nn.functional.binary_cross_entropy_with_logits(model(x).reshape(-1), y)

    before = loss()
    before.backward()
    opt.step()
    with torch.no_grad():
        after = loss()
    assert after < before


@pytest.mark.parametrize("bb,att,params", [("densenet121", "mldam", {"variant": "goncalves2021"}),
                                           ("densenet121", "agpad", {})])
def test_state_dict_round_trip(bb, att, params, tmp_path):
    a = build(bb, att, att_params=params)
    a(torch.randn(4, 3, 64, 64))  # move running stats away from their init
    torch.save(a.state_dict(), tmp_path / "m.pt")
    b = build(bb, att, att_params=params)
    b.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(a.eval()(x), b.eval()(x))


# -- the papers' input sizes ----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("bb,params,size,fcs", [
    ("densenet121", {"variant": "goncalves2021"}, 224, [(50176, 1024), (1024, 512), (512, 1)]),
    ("vgg16", {"variant": "goncalves2021"}, 224, [(25088, 512), (512, 256), (256, 1)]),
    ("vgg16", {}, 224, [(100352, 512), (512, 512), (512, 1)]),
])
def test_paper_configs(bb, params, size, fcs):
    model = build(bb, "mldam", att_params=params, size=size)
    assert [(m.in_features, m.out_features) for m in model.head if isinstance(m, torch.nn.Linear)] == fcs
    assert model(torch.randn(1, 3, size, size)).shape == (1, 1)


@pytest.mark.slow
def test_paper_configs_resnet50_goncalves_and_agpad_224():
    from medattn.api import AttentionContext
    from tests.conftest_models import backbone, defaults, factory, probe

    bb = backbone("resnet50", size=224)
    att = factory("attention", "mldam")(defaults("attention", "mldam", {"variant": "goncalves2021"}),
                                        AttentionContext(bb, (224, 224), 1))
    assert probe(bb, att, 224) == (2048, 7, 7)  # FC 100352 -> 2048 -> 1024 -> 1 (205M parameters, not built)
    model = build("densenet121", "agpad", size=224, num_outputs=2)
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 2)
    assert model.attention.attention_maps()["pam"].shape == (1, 49, 49)


def test_a_square_map_is_drawn_by_its_kind_never_guessed_from_its_shape():
    """With the kinds known, a square (B, N, N) map is read as positions only when it is position attention: a
    map of kind ``other`` with as many rows as a level has positions is left out, not drawn as positions."""
    from medattn_plugins.explainers.attention_maps import render_attention

    feats = {"l": torch.rand(2, 4, 3, 3)}
    m = torch.rand(2, 9, 9)
    out = render_attention({"pam": m, "odd": m}, feats, (12, 12), {"pam": "position", "odd": "other"})
    assert set(out) == {"pam"} and out["pam"].shape == (2, 1, 12, 12)
