"""Explainers on tiny models (shapes for sigmoid and softmax heads, IG completeness, capability flags), the
prepared copy, and the explain job: selection, files, planning and its summary table."""
from __future__ import annotations

import copy
import importlib
import json
import re
from types import SimpleNamespace

import pytest
import torch
from medattn_plugins.explainers import attention_maps as A
from medattn_plugins.explainers import medattn_components
from torch import fx, nn

from medattn.api import ExperimentDir, ExperimentView, NotApplicable, RunDir, RunView, UserError
from medattn.components.model import MedAttnModel
from medattn.hookspecs import AttentionContext, HeadContext
from medattn.jobs.explain import ExplainJob
from medattn.jobs.explain.attribution import _reused, prepare_for_attribution
from medattn.jobs.explain.methods import check_layers, model_to_attribute
from medattn.jobs.explain.select import agreed_ids, method_labels

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


def build(name: str, **over):
    """The explainer component ``name`` built as the explain job builds it (its factory, params with defaults)."""
    comp = next(c for c in medattn_components() if c.name == name)
    module, _, attr = comp.factory.partition(":")
    return getattr(importlib.import_module(module), attr)(method_params(name, **over), None)


CHEAP = {"integrated_gradients": {"n_steps": 4}, "gradient_shap": {"n_samples": 2},
         "occlusion": {"window": 8, "stride": 8}, "noise_tunnel": {"nt_samples": 2}}


@pytest.mark.parametrize("output,attention", [("sigmoid", "none"), ("softmax", "timm_attn")])
def test_every_method_returns_input_shaped_maps(output, attention):
    model = tiny_model(output, attention, {"type": "cbam"} if attention == "timm_attn" else None)
    x = torch.randn(2, 3, SIZE, SIZE)
    target = None if output == "sigmoid" else torch.tensor([0, 2])
    prepared = prepare_for_attribution(model, x)
    for comp in medattn_components():
        fn = build(comp.name, **CHEAP.get(comp.name, {}))
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
    fn = build("saliency")
    assert not torch.allclose(fn(model, x, torch.tensor([0])), fn(model, x, torch.tensor([1])))


def test_integrated_gradients_completeness():
    model = prepare_for_attribution(tiny_model("sigmoid"))
    x = torch.randn(2, 3, SIZE, SIZE)
    attr = build("integrated_gradients", n_steps=64)(model, x, None)
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
    return build("guided_backprop")(model, x, None)


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
    deep = build("gradcam", relu_attributions=False)(model, x, None)
    shallow = build("gradcam", layer="backbone.body.layer2.1", relu_attributions=False)(model, x, None)
    assert deep.shape == shallow.shape == (1, 1, SIZE, SIZE) and not torch.allclose(deep, shallow)
    with pytest.raises(UserError, match="not found"):
        build("gradcam", layer="backbone.nope")(model, x, None)
    with pytest.raises(UserError, match="never called"):  # a container the fx-traced backbone never calls
        build("gradcam", layer="backbone.body.layer2")(model, x, None)
    with pytest.raises(UserError, match="never called"):  # the same check when noise_tunnel wraps it
        build("noise_tunnel", method="gradcam", nt_samples=1,
              method_params={"layer": "backbone.body.layer2"})(model, x, None)


def test_render_attention_shapes():
    feats = {"l": torch.rand(2, 4, 3, 3)}
    maps = {"pam": torch.rand(2, 9, 9), "cam": torch.rand(2, 4, 4), "gate": torch.rand(2, 4, 1, 1),
            "spatial": torch.rand(2, 1, 3, 3), "odd": torch.rand(2, 5)}
    out = A.render_attention(maps, feats, (12, 12))
    assert set(out) == {"pam", "cam", "gate", "spatial"}
    assert all(v.shape == (2, 1, 12, 12) for v in out.values())


def test_capability_flags_replace_name_checks():
    hook_safe = {c.name for c in medattn_components() if build(c.name).needs_hook_safe_model}
    assert hook_safe == {"deeplift", "guided_backprop", "gradcam", "guided_gradcam"}
    assert {c.name for c in medattn_components() if build(c.name).needs_layer} == {"gradcam", "guided_gradcam"}
    wrapped = build("noise_tunnel", method="guided_gradcam")  # the wrapped method's flags
    assert wrapped.needs_layer and wrapped.needs_hook_safe_model
    assert not build("noise_tunnel").needs_hook_safe_model
    with pytest.raises(UserError, match=r"method_params: .*'n_step' was unexpected.*integrated_gradients"):
        build("noise_tunnel", method="integrated_gradients", method_params={"n_step": 4})


def test_the_hook_safe_copy_only_when_a_method_needs_it():
    model = tiny_model("sigmoid")
    x = torch.randn(1, 3, SIZE, SIZE)
    plain = [("saliency", {}, build("saliency")), ("maps", {}, build("attention_maps"))]
    assert model_to_attribute(plain, model, x, None) is model  # no copy, weights frozen
    assert not any(p.requires_grad for p in model.parameters())
    hooked = model_to_attribute([*plain, ("gbp", {}, build("guided_backprop"))], model, x, None)
    assert hooked is not model and _reused(hooked, x) == {}
    undeclared = [("fn", {}, lambda m, i, t: i)]  # a plugin callable without flags: the safe choice
    assert model_to_attribute(undeclared, model, x, None) is not model


def test_layers_are_checked_before_any_work():
    model = tiny_model("sigmoid")
    ok = [("saliency", {}, build("saliency")), ("gradcam", {}, build("gradcam"))]
    check_layers(ok, model)
    with pytest.raises(UserError, match=r"^explain\.methods\.1\.params\.layer: layer 'backbone\.nope' not found"):
        check_layers([ok[0], ("gradcam", {}, build("gradcam", layer="backbone.nope"))], model)


def test_method_labels_number_repeated_names():
    methods = [{"name": "saliency"}, {"name": "gradcam"}, {"name": "saliency"}]
    assert method_labels(methods) == ["saliency-1", "gradcam", "saliency-2"]


def _predictions(rd: RunDir, rows: str) -> None:
    rd.predictions("best_val_loss").parent.mkdir(parents=True)
    rd.config.write_text("{}")
    rd.predictions("best_val_loss").write_text("id,label,prediction\n" + rows)


def test_agreed_selection_intersects_the_variants(tmp_path):
    exp = ExperimentDir(tmp_path / "exp")
    _predictions(exp.run("a"), "x,1,1\ny,0,0\nz,1,0\n")
    _predictions(exp.run("b"), "x,1,1\ny,0,1\nz,1,0\n")
    exp.run("c").root.mkdir()
    exp.run("c").config.write_text("{}")
    with pytest.raises(UserError, match=re.escape(f"{exp.run('a').predictions('best_val_loss').name} for c beside")):
        agreed_ids(exp.run("a"), 42, "best_val_loss", [])  # c has no predictions
    ok, names = agreed_ids(exp.run("c"), 42, "best_val_loss", ["a", "b"])
    assert ok == {"x"} and names == ["a", "b", "c"]


def test_agreed_selection_with_repeated_seeds_compares_the_same_seed(tmp_path):
    exp = ExperimentDir(tmp_path / "exp")
    _predictions(exp.run("a", 1), "x,1,1\ny,0,0\n")
    _predictions(exp.run("a", 2), "x,1,0\ny,0,0\n")
    exp.run("b", 1).root.mkdir(parents=True)
    exp.run("b", 1).config.write_text("{}")
    assert agreed_ids(exp.run("b", 1), 1, "best_val_loss", []) == ({"x", "y"}, ["a", "b"])
    assert agreed_ids(exp.run("b", 2), 2, "best_val_loss", []) == ({"y"}, ["a", "b"])


def test_planning_names_the_files_the_job_reads(tmp_path):
    exp = ExperimentDir(tmp_path / "exp")
    for name in ("a", "b"):
        exp.run(name).root.mkdir(parents=True)
        exp.run(name).config.write_text("{}")
    cfg = {"methods": [{"name": "saliency"}], "checkpoint": "best_val_loss", "select": "first", "variants": []}
    job = ExplainJob()
    assert job.needs(exp.run("a"), {"seed": 1, "explain": cfg}) == {
        "checkpoint": [exp.run("a").checkpoint("best_val_loss")]}
    needed = job.needs(exp.run("a"), {"seed": 1, "explain": {**cfg, "select": "agreed"}})
    assert needed["predictions"] == [exp.run("b").predictions("best_val_loss")]
    assert job.check({"explain": cfg}) == []
    assert job.check({"explain": {**cfg, "methods": []}})[0].startswith(
        "explain.methods: the explain job needs at least one explainer")
    assert set(job.reads) >= set(needed) and job.writes == ("explanations",) and not job.distributed


def test_validate_sees_a_missing_layer(tmp_path):
    from medattn.registry import default_registry

    job = ExplainJob(default_registry())
    cfg = {"batch_size": 2, "methods": [{"name": "saliency"}, {"name": "gradcam", "params": {"layer": "nope"}}]}
    problems = job.check_model({"explain": cfg}, tiny_model("sigmoid"))
    assert problems == [(("explain", "methods", 1, "params", "layer"),
                         "layer 'nope' not found in the model; top-level modules: backbone, attention, head")]


def test_quality_rows_come_from_each_run(tmp_path):
    exp = ExperimentDir(tmp_path / "exp")
    for run in (exp.run("a"), exp.run("a", 7)):
        run.explanations.mkdir(parents=True)
        run.quality.write_text(json.dumps({"saliency": {"deletion_auc": 0.25, "flag": True, "note": "x"}}))
    views = [RunView("exp", "a", exp.run("a"), {}), RunView("exp", "b", exp.run("b"), {}),
             RunView("exp", "a", exp.run("a", 7), {}, seed=7)]
    rows = ExplainJob().tables(ExperimentView("exp", exp, views))
    assert rows == {"quality": [{"variant": "a", "method": "saliency", "deletion_auc": 0.25},
                                {"variant": "a", "seed": 7, "method": "saliency", "deletion_auc": 0.25}]}


class _Data(torch.utils.data.Dataset):
    def __init__(self, n: int):
        g = torch.Generator().manual_seed(0)
        self.raw = torch.rand(n, 3, SIZE, SIZE, generator=g)
        self.mask = (torch.rand(n, 1, SIZE, SIZE, generator=g) > 0.7).float()

    def __len__(self):
        return len(self.raw)

    def __getitem__(self, i):
        return {"image": self.raw[i] - 0.5, "raw": self.raw[i], "label": i % 2, "id": f"im{i}", "mask": self.mask[i]}


def test_the_job_writes_maps_and_scores(tmp_path, write):
    from medattn.config import load_experiment

    from .conftest import TINY

    text = TINY.replace("explain: {methods: [{name: saliency}], samples: 2}", """explain:
  methods: [{name: saliency}, {name: attention_maps}, {name: saliency, params: {abs: true}}]
  samples: 3
  batch_size: 2
  quality: {steps: 2, scores: [deletion, localisation, randomisation]}""")
    exp = load_experiment(write("e.yaml", text))
    config = exp.variants[0].config.data
    rd = ExperimentDir(tmp_path / "runs" / "tiny").run("v")
    rd.attributions("stale").parent.mkdir(parents=True)
    rd.attributions("stale").write_bytes(b"old")  # an earlier explain's maps are removed
    logged = []
    run = SimpleNamespace(config=config, dir=rd.root, variant="v", registry=exp.registry, device=torch.device("cpu"),
                          log=logged.append, data=lambda: (None, {"test": _Data(5)}),
                          load_model=lambda name: tiny_model("sigmoid"))
    ExplainJob().run(run)
    assert rd.attribution_labels() == ["saliency-1", "saliency-2"]  # attention_maps: no attention, skipped
    samples = rd.read_npz(rd.samples)
    assert list(samples["index"]) == [0, 1, 2] and samples["masks"].shape == (3, 1, SIZE, SIZE)
    maps = rd.read_npz(rd.attributions("saliency-2"))
    assert maps["attributions"].shape == (3, 3, SIZE, SIZE) and (maps["attributions"] >= 0).all()
    assert json.loads(str(maps["params"]))["abs"] is True and str(maps["method"]) == "saliency"
    quality = rd.read_quality()
    assert set(quality) == {"saliency-1", "saliency-2"}
    assert {"deletion_auc", "energy_in_mask", "randomisation_spearman"} <= set(quality["saliency-1"])
    assert set(rd.read_npz(rd.quality_curves)) == {"saliency-1/deletion", "saliency-1/fractions",
                                                    "saliency-2/deletion", "saliency-2/fractions"}
    assert any("attention_maps: skipped" in line for line in logged)
