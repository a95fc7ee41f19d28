"""Explainers on tiny models: shapes for sigmoid and softmax heads, IG completeness, the prepared copy, seed names."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from medattn_plugins.explainers import captum_methods as M
from medattn_plugins.explainers import medattn_components
from torch import fx, nn

from medattn.attribution import NotApplicable, _reused, agreed_ids, prepare_for_attribution, seed_files
from medattn.errors import UserError
from medattn.hookspecs import AttentionContext, HeadContext
from medattn.model import MedAttnModel

from .conftest_models import backbone, defaults, factory, probe

SIZE = 32


def tiny_model(output: str, attention: str = "none", att_params: dict | None = None) -> MedAttnModel:
    """resnet18 at 32 px with a linear head: 1 output (sigmoid) or 3 (softmax)."""
    torch.manual_seed(0)
    n = 1 if output == "sigmoid" else 3
    bb = backbone("resnet18", size=SIZE, num_outputs=n)
    att = factory("attention", attention)(defaults("attention", attention, att_params),
                                          AttentionContext(bb, (SIZE, SIZE), n))
    head = factory("head", "linear")(defaults("head", "linear"), HeadContext(probe(bb, att, SIZE), n))
    names = ["a", "b"] if n == 1 else ["a", "b", "c"]
    return MedAttnModel(bb, att, head, output, n, names).eval()


def method_params(name: str, **over) -> dict:
    comp = next(c for c in medattn_components() if c.name == name)
    return {**{k: v["default"] for k, v in comp.params_schema["properties"].items()}, **over}


CHEAP = {"integrated_gradients": {"n_steps": 4}, "gradient_shap": {"n_samples": 2},
         "occlusion": {"window": 8, "stride": 8}, "noise_tunnel": {"nt_samples": 2}}


@pytest.mark.parametrize("output,attention", [("sigmoid", "none"), ("softmax", "timm_attn")])
def test_every_method_returns_input_shaped_maps(output, attention):
    model = tiny_model(output, attention, {"type": "cbam"} if attention == "timm_attn" else None)
    x = torch.randn(2, 3, SIZE, SIZE)
    target = None if output == "sigmoid" else torch.tensor([0, 2])
    prepared = prepare_for_attribution(model, x)
    for comp in medattn_components():
        fn = getattr(M, comp.factory.split(":")[1])(method_params(comp.name, **CHEAP.get(comp.name, {})), None)
        if comp.name == "attention_maps" and attention == "none":
            with pytest.raises(NotApplicable):
                fn(prepared, x, target)
            continue
        attr = fn(prepared, x, target)
        assert attr.shape[0] == 2 and attr.shape[1] in (1, 3) and attr.shape[-2:] == x.shape[-2:], comp.name
        assert torch.isfinite(attr).all(), comp.name


def test_softmax_target_selects_the_class():
    model = prepare_for_attribution(tiny_model("softmax"))
    x = torch.randn(1, 3, SIZE, SIZE)
    fn = M.saliency(method_params("saliency"), None)
    assert not torch.allclose(fn(model, x, torch.tensor([0])), fn(model, x, torch.tensor([1])))


def test_integrated_gradients_completeness():
    model = prepare_for_attribution(tiny_model("sigmoid"))
    x = torch.randn(2, 3, SIZE, SIZE)
    attr = M.integrated_gradients(method_params("integrated_gradients", n_steps=64), None)(model, x, None)
    with torch.no_grad():
        diff = (model(x) - model(torch.zeros_like(x))).reshape(-1)
    total = attr.sum(dim=(1, 2, 3))
    assert torch.allclose(total, diff, atol=0.02 * float(diff.abs().max()) + 1e-4), (total, diff)


class _Guided(torch.autograd.Function):
    """Reference guided ReLU: forward relu, backward only positive gradients where the input was positive."""

    @staticmethod
    def forward(ctx, i):
        ctx.save_for_backward(i)
        return i.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (i,) = ctx.saved_tensors
        return g.clamp(min=0) * (i > 0)


class _GuidedReLU(nn.Module):
    def forward(self, i):
        return _Guided.apply(i)


def guided_reference(prepared: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Guided backprop by hand: every (now distinct) ReLU module swapped for the reference guided ReLU."""
    ref = copy.deepcopy(prepared).eval()
    for parent in list(ref.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.ReLU:
                setattr(parent, name, _GuidedReLU())
    xi = x.clone().requires_grad_(True)
    ref(xi).sum().backward()
    return xi.grad


class FunctionalNet(nn.Module):
    """Functional relu calls: invisible to captum's module hooks until the preparation turns them into modules."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.fc = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Linear(8, 1)

    def forward(self, x):
        x = torch.nn.functional.relu(self.c2(torch.relu(self.c1(x))))
        return self.fc(x.mean(dim=(2, 3)))


class SharedReLUNet(nn.Module):
    """One in-place ReLU module called twice (as torchvision's BasicBlock does)."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.fc = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Linear(8, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.fc(self.relu(self.c2(self.relu(self.c1(x)))).mean(dim=(2, 3)))


def _gbp(model, x):
    return M.guided_backprop(method_params("guided_backprop"), None)(model, x, None)


def test_preparation_changes_guided_backprop_where_it_should():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 12, 12)
    raw = fx.symbolic_trace(FunctionalNet()).eval()
    prepared = prepare_for_attribution(raw, x)
    assert sum(isinstance(m, nn.ReLU) for m in prepared.modules()) == 2
    before, after = _gbp(raw, x), _gbp(prepared, x)
    reference = guided_reference(prepared, x)
    assert not torch.allclose(before, reference, atol=1e-6)  # functional relu: plain gradient, not guided
    assert torch.allclose(after, reference, atol=1e-6)


def test_preparation_unshares_reused_inplace_relus():
    torch.manual_seed(2)
    x = torch.randn(2, 3, 12, 12)
    net = SharedReLUNet().eval()
    assert _reused(net, x[:1]) == {"relu": 2}
    prepared = prepare_for_attribution(net, x)
    assert _reused(prepared, x[:1]) == {}
    assert not any(getattr(m, "inplace", False) for m in prepared.modules())
    assert torch.allclose(_gbp(prepared, x), guided_reference(prepared, x), atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(prepared(x), net(x))  # same function


def test_resnet_blocks_unshared_and_deeplift_becomes_possible():
    from captum.attr import DeepLift

    model = tiny_model("sigmoid")
    x = torch.randn(2, 3, SIZE, SIZE)
    assert any(name.endswith(".relu") for name in _reused(model, x[:1]))  # BasicBlock calls self.relu twice
    with pytest.raises(RuntimeError, match="used more than once"):
        DeepLift(copy.deepcopy(model).eval()).attribute(x.clone().requires_grad_(True))
    prepared = prepare_for_attribution(model, x)
    assert _reused(prepared, x[:1]) == {}
    attr, delta = DeepLift(prepared).attribute(x.clone().requires_grad_(True), return_convergence_delta=True)
    with torch.no_grad():
        diff = (prepared(x) - prepared(torch.zeros_like(x))).reshape(-1)
    assert delta.abs().max() <= 1e-3 * max(1.0, float(diff.abs().max()))  # summation-to-delta holds
    with torch.no_grad():
        assert torch.allclose(prepared(x), model(x), atol=1e-5)
    # guided backprop on the prepared resnet is exactly the hand-written guided ReLU reference
    assert torch.allclose(_gbp(prepared, x), guided_reference(prepared, x), atol=1e-6)


def test_gradcam_layer_override_by_name():
    model = prepare_for_attribution(tiny_model("sigmoid"))
    x = torch.randn(1, 3, SIZE, SIZE)
    deep = M.gradcam(method_params("gradcam", relu_attributions=False), None)(model, x, None)
    shallow = M.gradcam(method_params("gradcam", layer="backbone.body.layer2.1", relu_attributions=False),
                        None)(model, x, None)
    assert deep.shape == shallow.shape == (1, 1, SIZE, SIZE) and not torch.allclose(deep, shallow)
    with pytest.raises(UserError, match="not found"):
        M.gradcam(method_params("gradcam", layer="backbone.nope"), None)(model, x, None)
    with pytest.raises(UserError, match="never called"):  # a container the fx-traced backbone never calls
        M.gradcam(method_params("gradcam", layer="backbone.body.layer2"), None)(model, x, None)


def test_render_attention_shapes():
    feats = {"l": torch.rand(2, 4, 3, 3)}
    maps = {"pam": torch.rand(2, 9, 9), "cam": torch.rand(2, 4, 4), "gate": torch.rand(2, 4, 1, 1),
            "spatial": torch.rand(2, 1, 3, 3), "odd": torch.rand(2, 5)}
    out = M.render_attention(maps, feats, (12, 12))
    assert set(out) == {"pam", "cam", "gate", "spatial"}
    assert all(v.shape == (2, 1, 12, 12) for v in out.values())


def test_seed_naming_exact(tmp_path):
    run = SimpleNamespace(dir=tmp_path / "runs" / "exp" / "baseline", variant="baseline",
                          config={"model": {"backbone": {"name": "densenet121"}}})
    chosen = {"index": np.array([5, 12]), "labels": np.array([0, 1]),
              "images": np.random.rand(2, 3, 224, 224).astype(np.float32)}
    attr = np.random.randn(2, 3, 224, 224).astype(np.float32)
    cfg = {"seed_dir": None, "seed_names": {"saliency": "dl"}, "seed_variant": None}
    seed_files(run, cfg, "saliency", chosen, attr)
    folder = tmp_path / "runs" / "exp" / "attributes" / "densenet121"
    assert sorted(p.name for p in folder.iterdir()) == [
        "img_12_dl_baseline_label_1.npy", "img_12_original_1.npy", "img_5_dl_baseline_label_0.npy",
        "img_5_original_0.npy"]
    saved = np.load(folder / "img_12_dl_baseline_label_1.npy")
    assert saved.shape == (224, 224, 3) and np.array_equal(saved, np.transpose(attr[1], (1, 2, 0)))
    assert np.load(folder / "img_5_original_0.npy").shape == (224, 224, 3)
    seed_files(run, cfg, "gradcam", chosen, attr[:, :1])  # one-channel maps are repeated to three
    assert np.load(folder / "img_5_gradcam_baseline_label_0.npy").shape == (224, 224, 3)


def test_agreed_selection_intersects_the_variants(tmp_path):
    root = tmp_path / "exp"
    for name, rows in (("a", "x,1,1\ny,0,0\nz,1,0\n"), ("b", "x,1,1\ny,0,1\nz,1,0\n")):
        (root / name / "metrics").mkdir(parents=True)
        (root / name / "config.yaml").write_text("{}")
        (root / name / "metrics" / "predictions_best_val_loss.csv").write_text("id,label,prediction\n" + rows)
    (root / "c").mkdir()
    (root / "c" / "config.yaml").write_text("{}")
    run = SimpleNamespace(dir=root / "c", variant="c")
    with pytest.raises(UserError, match="predictions_best_val_loss.csv for"):
        agreed_ids(SimpleNamespace(dir=root / "a", variant="a"), "best_val_loss", [])  # c has no predictions
    ok, names = agreed_ids(run, "best_val_loss", ["a", "b"])
    assert ok == {"x"} and names == ["a", "b", "c"]
