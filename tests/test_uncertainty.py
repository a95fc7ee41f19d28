"""Uncertainty and selective prediction (medattn.evidence.uncertainty) and operating points / decision curves
(medattn.evidence.decision)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchmetrics.functional.classification import (
    binary_sensitivity_at_specificity,
    binary_specificity_at_sensitivity,
)

from medattn.errors import UserError
from medattn.evidence import decision as D
from medattn.evidence import uncertainty as U


def test_the_view_groups_are_the_flips_and_the_dihedral_group():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    d4 = U.views(x, U.check_tta("d4", (4, 4)))
    assert d4.shape == (8, 1, 4, 4) and len({tuple(v.flatten().tolist()) for v in d4}) == 8
    # a group: every view of every view is one of the eight
    seen = {tuple(v.flatten().tolist()) for v in d4}
    for v in d4:
        assert {tuple(w.flatten().tolist()) for w in U.views(v[None], U.GROUPS["d4"])} == seen
    assert U.views(x, U.check_tta("flips", (4, 6)[:1] * 2)).shape[0] == 4
    assert U.check_tta("flips", (4, 6)) == U.GROUPS["flips"]  # flips keep a non-square shape
    with pytest.raises(UserError, match=r"test.tta: d4 turns images by 90 degrees, which needs square inputs; "
                                        r"the model takes 4x6: use flips"):
        U.check_tta("d4", (4, 6))


class Counting(nn.Module):
    """A model that records the batch size of each forward."""

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.calls: list[int] = []
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        self.calls.append(len(x))
        return self.fc(self.drop(x.flatten(1)))


def test_views_run_in_one_forward_and_mc_dropout_samples():
    x = torch.randn(5, 1, 4, 4)
    model = Counting().eval()
    z = U.sample_logits(model, x, U.GROUPS["d4"])
    assert model.calls == [40] and z.shape == (8, 5, 3)  # 8 views x 5 images: one batch
    np.testing.assert_allclose(z[0], model(x).detach().numpy(), atol=1e-6)
    model.calls.clear()
    chunked = U.sample_logits(model, x, U.GROUPS["d4"], chunk=16)  # the stacked views in forwards of <= 16
    assert model.calls == [16, 16, 8] and np.allclose(chunked, z, atol=1e-6)
    with pytest.raises(UserError, match="test.mc_dropout: the model has no dropout layer"):
        U.check_mc_dropout(model)
    dropped = Counting(0.5).eval()
    U.check_mc_dropout(dropped)
    z = U.sample_logits(dropped, x, ("identity",), samples=6, model=dropped)
    assert z.shape == (6, 5, 3) and np.ptp(z, axis=0).max() > 0  # the samples differ
    assert not dropped.drop.training  # back in eval mode


def test_entropy_spread_and_mutual_information():
    same = np.repeat(np.array([[[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3]]]), 4, axis=0)
    s = U.summarise(same)
    assert np.allclose(s["spread"], 0) and np.allclose(s["mutual_information"], 0)
    assert s["entropy"][1] == pytest.approx(np.log(3)) and s["entropy"][0] < s["entropy"][1]
    split = np.array([[[0.9, 0.1]], [[0.1, 0.9]]])  # the views disagree: high spread and mutual information
    s = U.summarise(split)
    assert s["spread"][0] == pytest.approx(0.4) and s["mutual_information"][0] > 0.3


def test_risk_coverage_aurc_and_triage():
    correct = np.array([1, 1, 0, 1])
    uncertainty = np.array([0.1, 0.2, 0.9, 0.3])
    rc = U.risk_coverage(correct, uncertainty)
    assert rc["risk"] == [0, 0, 0, 0.25] and rc["aurc"] == pytest.approx(0.0625)
    assert U.weighted_aurc(correct, uncertainty, np.ones((1, 4)))[0] == pytest.approx(0.0625)
    twice = np.vstack([np.ones(4), 2 * np.ones(4)])
    assert np.ptp(U.weighted_aurc(correct, uncertainty, twice)) == pytest.approx(0)
    y = np.array([1] * 10 + [0] * 10)
    p = y.copy()
    p[[0, 10]] = [0, 1]  # two mistakes, the most uncertain images
    u = np.zeros(20)
    u[[0, 10]] = [1.0, 0.9]
    rows = U.triage(y, p, u)
    assert [r["n_referred"] for r in rows] == [0, 1, 2, 4]
    assert rows[0]["sensitivity"] == pytest.approx(0.9) and rows[0]["specificity"] == pytest.approx(0.9)
    assert rows[2]["sensitivity"] == 1.0 and rows[2]["ppv"] == 1.0 and rows[2]["n_kept"] == 18


@pytest.mark.parametrize("target", [0.5, 0.869, 0.889, 0.99])
def test_operating_points_are_torchmetrics_and_unit_weights_give_them(target):
    rng = np.random.default_rng(int(target * 1000))
    y = rng.integers(0, 2, 200)
    s = np.round(np.clip(0.3 * y + rng.random(200) * 0.7, 0, 1), 2)  # ties on purpose
    ones = np.ones((1, 200))
    want = float(binary_sensitivity_at_specificity(torch.tensor(s), torch.tensor(y), target)[0])
    assert D.weighted_at("sensitivity_at_specificity", y, s, target, ones)[0] == pytest.approx(want)
    want = float(binary_specificity_at_sensitivity(torch.tensor(s), torch.tensor(y), target)[0])
    assert D.weighted_at("specificity_at_sensitivity", y, s, target, ones)[0] == pytest.approx(want)
    out = D.operating_points(y, s, 0.869, target, resamples=100, seed=0)
    assert out["sensitivity_at_specificity_target"] == target and out["ci"]["sensitivity_at_specificity"][0] <= \
        out["ci"]["sensitivity_at_specificity"][1]


def test_decision_curve_against_treat_all_and_none():
    y = np.array([1, 1, 0, 0, 0])
    p = np.array([0.9, 0.4, 0.6, 0.2, 0.1])
    curve = D.decision_curve(y, p, [0.25, 0.5])
    # t = 0.5: the model treats images 0 and 2 (one TP, one FP): 1/5 - 1/5 * 1 = 0
    assert curve["model"] == pytest.approx([2 / 5 - 1 / 5 * (1 / 3), 0.0])
    assert curve["treat_all"] == pytest.approx([0.4 - 0.6 / 3, 0.4 - 0.6]) and curve["treat_none"] == [0, 0]
