"""Calibration (medattn.evidence.calibration): temperature and vector scaling fitted by NLL, applied the same way
in numpy and in torch, and the calibration metrics as torchmetrics defines them."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import binary_calibration_error, multiclass_calibration_error

from medattn.errors import UserError
from medattn.evidence import calibration as C


def overconfident_binary(n: int = 600, scale: float = 3.0, seed: int = 0):
    """Labels drawn from sigmoid(z) and logits that say scale * z: a model sure of itself beyond its skill."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return (scale * z).astype(np.float32), y


def test_temperature_scaling_recovers_the_temperature_and_keeps_the_binary_auc_to_the_last_digit():
    logits, y = overconfident_binary()
    cal = C.fit(logits, y, "temperature", "sigmoid")
    assert cal["method"] == "temperature" and cal["temperature"] == pytest.approx(3.0, rel=0.15)
    assert cal["nll_after"] < cal["nll_before"] and cal["bias"] == [0.0]
    raw = C.probabilities(logits, "sigmoid")
    after = C.probabilities(C.apply(cal, logits), "sigmoid")
    block = C.report(y, raw, after, resamples=50, seed=1,
                     log_odds=(C.log_odds(logits, "sigmoid"), C.log_odds(C.apply(cal, logits), "sigmoid")))
    assert block["auc_change"] == 0.0 and block["auc_before"] == block["auc_after"]
    assert block["after"]["ece15"] < 0.5 * block["before"]["ece15"]
    assert block["after"]["nll"] < block["before"]["nll"]
    lo, hi = block["ci_after"]["nll"]  # (ECE is biased upwards under resampling: its point may sit below its CI)
    assert lo <= block["after"]["nll"] <= hi and set(block["ci_before"]) == set(C.METRICS)
    assert set(block["reliability_before"]) >= {"count", "confidence", "observed"}


def test_vector_scaling_multi_class_and_the_torch_module_agree():
    rng = np.random.default_rng(3)
    n, k = 500, 4
    true = rng.normal(0, 2, (n, k))
    y = np.array([rng.choice(k, p=np.exp(t) / np.exp(t).sum()) for t in true])
    logits = (2.5 * true + np.array([1.0, 0, 0, -1.0])).astype(np.float32)
    for method in ("temperature", "vector"):
        cal = C.fit(logits, y, method, "softmax")
        assert cal["nll_after"] < cal["nll_before"]
        assert len(cal["weight"]) == (1 if method == "temperature" else k)
        mod = C.module(cal)
        got = mod(torch.from_numpy(logits)).numpy()
        assert np.allclose(got, C.apply(cal, logits), atol=1e-5)
    block = C.report(y, C.probabilities(logits, "softmax"), C.probabilities(C.apply(cal, logits), "softmax"),
                     resamples=20, seed=0)
    assert np.isfinite(block["auc_change"])  # multi-class: reported, not promised to be 0
    assert isinstance(C.module(None), torch.nn.Identity) and np.array_equal(C.apply(None, logits), logits)


@pytest.mark.parametrize("classes", [2, 3])
def test_the_metrics_are_torchmetrics_and_unit_weights_give_them(classes):
    rng = np.random.default_rng(classes)
    n = 300
    if classes == 2:
        scores = rng.random(n)
        scores[:5] = 1.0  # a confidence of exactly 1: torchmetrics' bin of its own
        scores[5:8] = 0.0
        y = (rng.random(n) < scores ** 2).astype(int)
        tm = {norm: float(binary_calibration_error(torch.tensor(scores), torch.tensor(y), n_bins=15, norm=norm))
              for norm in ("l1", "max")}
    else:
        scores = rng.dirichlet(np.ones(3) * 0.5, n)
        y = rng.integers(0, 3, n)
        tm = {norm: float(multiclass_calibration_error(torch.tensor(scores), torch.tensor(y), 3, n_bins=15,
                                                       norm=norm)) for norm in ("l1", "max")}
    ones = np.ones((1, n))
    assert C.weighted("ece15", y, scores, ones)[0] == pytest.approx(tm["l1"], abs=1e-6)
    assert C.weighted("mce", y, scores, ones)[0] == pytest.approx(tm["max"], abs=1e-6)
    point = C.metrics(y, scores)
    assert point["ece15"] == pytest.approx(tm["l1"], abs=1e-6) and point["mce"] == pytest.approx(tm["max"], abs=1e-6)
    from medattn.evidence import metrics as M

    assert point["brier"] == pytest.approx(M.classification_metrics(y, scores)["brier"])
    assert 0 <= point["adaptive_ece"] <= 1 and point["nll"] > 0
    # the weighted forms under resampling weights: doubling every image changes nothing
    twice = np.vstack([ones, 2 * ones])
    for metric in C.METRICS:
        values = C.weighted(metric, y, scores, twice)
        assert values[0] == pytest.approx(values[1]), metric


def test_bad_calibration_input():
    logits, y = overconfident_binary(20)
    with pytest.raises(UserError, match="two classes in the 'val' split"):
        C.fit(logits, np.zeros_like(y), "temperature", "sigmoid")
    with pytest.raises(UserError, match="'platt' is not one of none, temperature, vector"):
        C.fit(logits, y, "platt", "sigmoid")
    assert C.fit(logits, y, "none", "sigmoid") is None
    assert C.check(None) is None and C.check({"method": "none"}) is None
    with pytest.raises(UserError, match="meta.calibration: not a calibration medattn wrote"):
        C.check({"method": "temperature"}, "meta.calibration")
