"""Explanation quality scores on hand-made cases with known answers (medattn.evidence.explanation_quality)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from medattn.evidence import explanation_quality as Q
from medattn.evidence.metric_specs import metric_spec

CFG = {"scores": ["deletion", "insertion", "infidelity", "sensitivity", "localisation", "randomisation"],
       "steps": 8, "rank": "abs", "deletion_baseline": "zero", "insertion_start": "zero", "n_perturb": 4,
       "noise": 0.1, "top_percent": "mask", "randomisation_threshold": 0.5}


def square_mask(n: int = 4, size: int = 16) -> np.ndarray:
    m = np.zeros((n, 1, size, size), dtype=np.float32)
    m[:, :, 4:8, 6:12] = 1
    return m


class RegionModel(nn.Module):
    """Single-output model whose logit is 4 * the sum of the first channel inside a fixed region."""

    output, num_outputs = "sigmoid", 1

    def __init__(self, region: np.ndarray):
        super().__init__()
        self.register_buffer("w", torch.as_tensor(region[0, 0]) * 4.0 / float(region[0, 0].sum()))

    def forward(self, x):
        return (x[:, 0] * self.w).sum(dim=(1, 2))[:, None]

    def probabilities(self, logits):
        return torch.sigmoid(logits.reshape(-1))


def test_localisation_perfect_map_and_chance():
    masks = square_mask()
    perfect = Q.localisation(masks[:, 0], masks)
    assert perfect["pointing_game"] == 1 and perfect["energy_in_mask"] == 1 and perfect["iou_top"] == 1
    rng = np.random.default_rng(0)
    random = Q.localisation(rng.random((4, 16, 16)), masks)
    area = masks.mean()
    assert abs(random["energy_in_mask"] - area) < 0.05 and random["mask_area"] == area
    assert random["iou_top"] < 0.3
    inverse = Q.localisation(1 - masks[:, 0], masks)
    assert inverse["pointing_game"] == 0 and inverse["energy_in_mask"] == 0 and inverse["iou_top"] == 0
    assert Q.localisation(masks[:, 0], np.zeros_like(masks)) == {}  # no mask: no score


def test_deletion_and_insertion_rank_a_faithful_map_first():
    region = square_mask(1)
    model = RegionModel(region).eval()
    x = torch.ones(2, 3, 16, 16)  # P(class 1) = sigmoid(4) before deletion
    good = np.repeat(region[:, 0], 2, axis=0)
    bad = 1 - good
    classes = np.ones(2, dtype=int)
    g = Q.deletion_insertion(model, x, good, classes, 8, "zero", "zero", "cpu", 4)
    b = Q.deletion_insertion(model, x, bad, classes, 8, "zero", "zero", "cpu", 4)
    f = g["fractions"]
    assert Q.auc(g["deletion"], f).mean() < Q.auc(b["deletion"], f).mean() - 0.2
    assert Q.auc(g["insertion"], f).mean() > Q.auc(b["insertion"], f).mean() + 0.2
    assert np.allclose(g["deletion"][:, 0], 1 / (1 + np.exp(-4))) and np.allclose(g["deletion"][:, -1], 0.5)


def test_infidelity_zero_for_exact_attribution_of_a_linear_model():
    region = square_mask(1)
    model = RegionModel(region).eval()
    x = torch.randn(3, 3, 16, 16)
    exact = np.zeros((3, 3, 16, 16), dtype=np.float32)
    exact[:, 0] = model.w.numpy()
    wrong = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
    assert Q.infidelity_score(model, x, exact, None, 4, 0.1, "cpu", 4) < 1e-8
    assert Q.infidelity_score(model, x, wrong, None, 4, 0.1, "cpu", 4) > 1e-4


def test_sensitivity_zero_for_gradients_of_a_linear_model():
    model = RegionModel(square_mask(1)).eval()

    def saliency(m, x, t):
        x = x.detach().requires_grad_(True)
        m(x).sum().backward()
        return x.grad

    x = torch.randn(2, 3, 16, 16)
    assert Q.sensitivity_score(model, saliency, x, None, 3, 0.1, "cpu", 4) < 1e-6
    noisy = lambda m, x, t: x + torch.randn_like(x)  # noqa: E731
    assert Q.sensitivity_score(model, noisy, x, None, 3, 0.1, "cpu", 4) > 0.1


def test_rank_correlation_identity_and_independence():
    rng = np.random.default_rng(1)
    a = rng.random((3, 32, 32))
    assert Q.rank_correlation(a, a) > 0.999
    assert abs(Q.rank_correlation(a, rng.random((3, 32, 32)))) < 0.1


def test_score_method_flags_a_model_independent_explainer():
    """An 'explanation' that ignores the model (an edge-detector-like copy of the input) fails randomisation."""
    model = RegionModel(square_mask(1)).eval()
    randomised = RegionModel(1 - square_mask(1)).eval()
    x = torch.rand(4, 3, 16, 16)
    copy_input = lambda m, x, t: x.clone()  # noqa: E731

    def saliency(m, x, t):
        x = x.detach().requires_grad_(True)
        m(x).sum().backward()
        return x.grad

    cfg = {**CFG, "scores": ["randomisation", "localisation", "deletion"]}
    s_copy, _ = Q.score_method(model, copy_input, x, None, x.numpy(), square_mask(), cfg, "cpu", 4,
                               copy_input(randomised, x, None).numpy())
    s_sal, curves = Q.score_method(model, saliency, x, None, saliency(model, x, None).numpy(), square_mask(), cfg,
                                   "cpu", 4, saliency(randomised, x, None).numpy())
    assert s_copy["randomisation_spearman"] > 0.999 and s_copy["randomisation_insensitive"] == 1.0
    assert s_sal["randomisation_spearman"] < 0.5 and s_sal["randomisation_insensitive"] == 0.0
    assert s_sal["energy_in_mask"] > 0.99  # the gradient lives exactly on the region
    assert curves["deletion"].shape == (4, 9) and "deletion_auc" in s_sal
    # every score is declared, by the scores entry that asked for it (direction etc. for the figures and compare)
    assert {metric_spec(k).score for k in s_sal} == set(cfg["scores"])
    s_none, _ = Q.score_method(model, saliency, x, None, x.numpy(), None, cfg, "cpu", 4, None)
    assert "randomisation_spearman" not in s_none and "energy_in_mask" not in s_none  # nothing to compare with


def test_explained_class_and_sign():
    model = RegionModel(square_mask(1)).eval()
    x = torch.zeros(2, 3, 16, 16)
    x[1, 0] = -1.0  # logit -4: class 0 predicted, its evidence is the negative logit
    classes, sign = Q.explained_classes(model, x, None, "cpu")
    assert classes.tolist() == [1, 0] and sign.tolist() == [1.0, -1.0]
    classes, sign = Q.explained_classes(model, x, np.array([2, 0]), "cpu")
    assert classes.tolist() == [2, 0] and sign.tolist() == [1.0, 1.0]
