"""Conformal prediction sets (medattn.evidence.conformal): coverage over many random splits of fixed scores,
agreement with crepes on the same nonconformity scores, and clear errors for bad alpha or small splits."""
from __future__ import annotations

import numpy as np
import pytest

from medattn.errors import UserError
from medattn.evidence import conformal as K


def fixed_probabilities(n: int = 2000, seed: int = 0):
    """Softmax outputs of a fair but imperfect 3-class model with a rare class (10% of the images)."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, n, p=[0.6, 0.3, 0.1])
    logits = rng.normal(0, 1.0, (n, 3)) + np.eye(3)[y] * np.array([1.5, 1.2, 0.4])  # the rare class is hard
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return p, y


@pytest.mark.parametrize("score", ["lac", "aps"])
def test_coverage_over_a_thousand_random_splits(score):
    p, y = fixed_probabilities()
    marginal = K.random_split_coverage(p, y, 0.1, score, class_conditional=False, splits=1000, seed=1)
    assert marginal["coverage_error"] <= 0.005, marginal
    # marginal sets under-cover the rare, hard class; class-conditional (Mondrian) sets cover every class
    mondrian = K.random_split_coverage(p, y, 0.1, score, class_conditional=True, splits=1000, seed=1)
    assert min(mondrian["class_coverage"]) >= 0.9 - 0.01, mondrian
    assert marginal["class_coverage"][2] < min(mondrian["class_coverage"])


@pytest.mark.parametrize("mondrian", [False, True])
def test_the_sets_are_crepes_sets_on_the_same_scores(mondrian):
    from crepes import ConformalClassifier

    p, y = fixed_probabilities(1001, seed=4)
    cal, test = slice(0, 500), slice(500, None)  # n = 500: (n + 1)(1 - alpha) is not a whole number, no tie
    fitted = K.fit(p[cal], y[cal], 0.1, "lac", class_conditional=mondrian)
    ours = K.predict_sets(p[test], fitted)
    scores = K.class_scores(p, "lac")
    cc = ConformalClassifier()
    if mondrian:
        cc.fit(scores[cal][np.arange(500), y[cal]], bins=y[cal])
        theirs = np.stack([cc.predict_set(scores[test], bins=np.full(len(ours), c), confidence=0.9,
                                          smoothing=False)[:, c] for c in range(3)], axis=1)
    else:
        cc.fit(scores[cal][np.arange(500), y[cal]])
        theirs = cc.predict_set(scores[test], confidence=0.9, smoothing=False)
    assert np.array_equal(ours, theirs.astype(bool))
    assert 1 < ours.sum(axis=1).mean() < 3


def test_report_per_class_and_set_names():
    p, y = fixed_probabilities(400, seed=2)
    fitted = K.fit(p[:200], y[:200], 0.2, "aps", class_conditional=False)
    sets = K.predict_sets(p[200:], fitted)
    rep = K.coverage_report(y[200:], sets, ["a", "b", "c"], resamples=100, seed=0)
    assert rep["coverage"] == pytest.approx(sets[np.arange(200), y[200:]].mean())
    assert rep["ci"]["coverage"][0] <= rep["coverage"] <= rep["ci"]["coverage"][1]
    assert rep["class_coverage_min"] == min(v["coverage"] for v in rep["per_class"].values())
    assert sum(rep["set_sizes"].values()) == pytest.approx(1)
    assert K.set_names(np.array([[True, False, True], [False, False, False]]), ["a", "b", "c"]) == ["a|c", ""]
    # aps never splits tied classes
    tied = K.predict_sets(np.array([[0.4, 0.4, 0.2]]), {"score": "aps", "thresholds": [0.5] * 3})
    assert tied[0, 0] == tied[0, 1]


@pytest.mark.parametrize("alpha", [0, 1, 1.5, -0.1, True, "0.1"])
def test_alpha_outside_zero_one_is_one_clear_error(alpha):
    p, y = fixed_probabilities(100)
    with pytest.raises(UserError, match=r"test.conformal.alpha: .* between 0 and 1"):
        K.fit(p, y, alpha)


def test_a_calibration_split_too_small_for_alpha():
    p, y = fixed_probabilities(60, seed=5)
    counts = np.bincount(y, minlength=3)
    assert counts.min() < 9  # 1/0.1 - 1 = 9 images per class needed
    with pytest.raises(UserError, match=r"too small for class-conditional sets at alpha 0.1: each class needs at "
                                        r"least 9 images"):
        K.fit(p, y, 0.1, class_conditional=True, class_names=["a", "b", "c"])
    with pytest.raises(UserError, match="has 5 images; alpha 0.1 needs at least 9"):
        K.fit(p[:5], y[:5], 0.1, class_conditional=False)
    assert K.needed(0.1) == 9 and K.needed(0.05) == 19 and K.needed(0.3) == 3
    assert np.isfinite(K.fit(p[:9], y[:9], 0.1, class_conditional=False)["thresholds"]).all()
