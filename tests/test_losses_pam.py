"""attention_mask on position attention (MLDAM both variants, dual, AG-PAD): while training, attention_maps()
carries the graph, so the mask term trains what makes the map; explanations still get detached maps."""
from __future__ import annotations

import copy

import pytest
import torch
from medattn_plugins.attention import position as P
from medattn_plugins.losses import terms as T

from medattn.components.losses import LossTerms
from medattn.errors import UserError
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


def keeps_the_position_matrix(name: str, terms: LossTerms) -> bool:
    """Whether the train job's step (engine.train_epoch with ``terms``) saves a position-attention matrix (B, N, N),
    or the same flattened (B, N * N) as goncalves2021's whole-matrix softmax takes it, for the backward, on a model
    whose forward goes through SDPA."""
    torch.manual_seed(0)
    att, params = MODELS[name]
    model = build("resnet18", att, size=160, att_params={**params, "attention_impl": "sdpa"})
    g = torch.Generator().manual_seed(1)
    data = {"image": torch.randn(4, 3, 160, 160, generator=g), "label": torch.tensor([0, 1, 0, 1]),
            "mask": torch.ones(4, 1, 160, 160), "id": [f"img-{i}" for i in range(4)]}
    shapes: set[tuple[int, ...]] = set()

    def keep(t):
        shapes.add(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        E.train_epoch(model, [data], torch.optim.SGD(model.parameters(), lr=0.0), torch.device("cpu"),
                      progress=False, terms=terms)
    n = 5 * 5  # resnet18's last level at 160 px: 5 x 5 positions
    return bool(shapes & {(4, n, n), (4, n * n)})


@pytest.mark.parametrize("name", ["mldam_goncalves2021", "dual", "agpad"])
def test_the_train_step_builds_the_position_matrix_only_when_a_loss_term_needs_the_maps(name):
    default = LossTerms([("classification", 1.0, T.Classification())])
    assert not keeps_the_position_matrix(name, default)  # SDPA's forward alone: no N x N weights for the backward
    guided = LossTerms([("classification", 1.0, T.Classification()), ("mask", 0.5, T.AttentionMask("energy", []))])
    assert guided.needs_attention_maps and not default.needs_attention_maps
    assert keeps_the_position_matrix(name, guided)  # attention_mask supervises the map: built with its graph


def test_a_term_that_reads_the_maps_without_declaring_it_is_told_what_to_declare():
    class Undeclared(torch.nn.Module):
        def forward(self, batch):
            return sum(m.sum() for m in batch.attention.values())

    model = model_of("dual").train()
    data = batch_data()
    with pytest.raises(UserError, match="needs_attention_maps = True"):
        E._terms_loss(model, model, LossTerms([("mine", 1.0, Undeclared())]), data, data["image"], data["label"],
                      E.loss_function(model))
    wrapped = T.MaskFraction(T.AttentionMask("energy", []), 0.5)
    assert LossTerms([("f", 1.0, wrapped)]).needs_attention_maps
