"""attention_mask on position attention (MLDAM both variants, dual, AG-PAD): while training, attention_maps()
carries the graph, so the mask term trains what makes the map; explanations still get detached maps."""
from __future__ import annotations

import copy

import pytest
import torch
from medattn_plugins.attention import position as P
from medattn_plugins.losses import terms as T

from medattn.components.losses import LossTerms
from medattn.train import engine as E

from .conftest_models import build

SIZE = 64
MODELS = {
    "mldam_goncalves2021": ("mldam", {"variant": "goncalves2021"}),
    "mldam_mishra2019": ("mldam", {"variant": "mishra2019"}),
    "dual": ("dual", {}),
    "agpad": ("agpad", {"width": 32}),
}


def model_of(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    att, params = MODELS[name]
    return build("resnet18", att, size=SIZE, att_params=params)


def batch_data(full_masks: bool = False) -> dict:
    g = torch.Generator().manual_seed(1)
    masks = torch.zeros(4, 1, SIZE, SIZE)
    masks[:, :, 8:24, 16:40] = 1.0
    if full_masks:
        masks = torch.ones_like(masks)
    return {"image": torch.randn(4, 3, SIZE, SIZE, generator=g), "label": torch.tensor([0, 1, 0, 1]),
            "mask": masks, "id": [f"img-{i}" for i in range(4)]}


def step_grads(name: str, weight: float) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Gradients of one training step on classification + weight * attention_mask, and the mask term's value."""
    model = model_of(name).train()
    terms = LossTerms([("classification", 1.0, T.Classification()), ("mask", weight, T.AttentionMask("energy", []))])
    data = batch_data()
    _, loss, parts = E._terms_loss(model, model, terms, data, data["image"], data["label"], E.loss_function(model))
    loss.backward()
    grads = {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for n, p in model.named_parameters()}
    return grads, parts["mask"]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_mask_term_sends_gradient_into_what_makes_the_position_map(name):
    without, value = step_grads(name, 0.0)
    with_mask, value_1 = step_grads(name, 1.0)
    assert 0 < value.item() < 1 and value_1.item() == pytest.approx(value.item())
    # dual / AG-PAD: the PAM's query and key projections (gamma is 0 at init, so classification alone gives
    # them no gradient); MLDAM's PAM has no parameters of its own: its queries and keys are backbone levels
    prefix = "backbone." if name.startswith("mldam") else "attention.pam."
    diff = sum((with_mask[n] - without[n]).abs().sum() for n in with_mask if n.startswith(prefix))
    assert diff > 0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_an_all_ones_mask_gives_zero_penalty_on_position_attention(name):
    model = model_of(name).train()
    term = LossTerms([("mask", 1.0, T.AttentionMask("energy", []))])
    for full, check in ((False, lambda v: v > 0), (True, lambda v: v == 0.0)):
        data = batch_data(full_masks=full)
        _, loss, _ = E._terms_loss(model, model, term, data, data["image"], data["label"], E.loss_function(model))
        assert check(loss.item())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_explanations_and_copies_get_detached_maps(name):
    model = model_of(name)
    x = batch_data()["image"][:2]
    model.eval()
    with torch.no_grad():
        model(x)
    assert not model.attention.attention_maps()["pam"].requires_grad
    model.train()
    model(x)
    assert model.attention.attention_maps()["pam"].requires_grad
    copied = copy.deepcopy(model)  # a copy after a training forward (explainers take one) keeps no graph
    assert not copied.attention.attention_maps()["pam"].requires_grad


@pytest.mark.parametrize("softmax", ["row", "global"])
def test_the_large_map_summary_carries_the_gradient_of_the_column_mean(monkeypatch, softmax):
    gen = torch.Generator().manual_seed(3)
    q, k = (torch.randn(2, 8, 30, generator=gen).mul(0.5).requires_grad_() for _ in range(2))
    target = torch.rand(2, 30, generator=gen)
    full = P.attention_map(q, k, softmax, (5, 6)).mean(dim=1)
    want = torch.autograd.grad((full * target).sum(), (q, k))
    monkeypatch.setattr(P, "MAP_FULL_LIMIT", 20)
    monkeypatch.setattr(P, "_MAP_CHUNK", 7)
    summary = P.attention_map(q, k, softmax, (5, 6))
    assert summary.shape == (2, 1, 5, 6) and summary.requires_grad
    torch.testing.assert_close(summary.view(2, 30), full)
    got = torch.autograd.grad((summary.view(2, 30) * target).sum(), (q, k))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_a_copy_of_cbam_after_a_training_forward_keeps_no_graph_and_the_original_keeps_its_own():
    torch.manual_seed(0)
    model = build("resnet18", "timm_attn", size=SIZE, att_params={"type": "cbam"}).train()
    model(batch_data()["image"][:2])
    assert any(m.requires_grad for m in model.attention.attention_maps().values())
    copied = copy.deepcopy(model)
    assert copied.attention.attention_maps() and not any(
        m.requires_grad for m in copied.attention.attention_maps().values())
    assert any(m.requires_grad for m in model.attention.attention_maps().values())
    x = batch_data()["image"][:2]
    model.eval(), copied.eval()
    with torch.no_grad():
        assert torch.equal(model(x), copied(x))
