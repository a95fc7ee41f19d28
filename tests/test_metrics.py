"""Metrics against scikit-learn and small hand-checked cases; thresholds; bootstrap; PAD; the original's text format."""
from __future__ import annotations

import numpy as np
import pytest
from medattn_plugins.original import results_text
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from medattn.errors import UserError
from medattn.evidence import metrics as M
from medattn.evidence.metric_specs import metric_names


def test_hand_checked_binary_case():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.6, 0.4, 0.9])
    m = M.classification_metrics(y, s)
    # tp=1 (0.9), fp=1 (0.6), fn=1 (0.4), tn=1 (0.1)
    for key in ("accuracy", "precision", "recall", "sensitivity", "specificity", "f1", "balanced_accuracy"):
        assert m[key] == pytest.approx(0.5), key
    assert m["roc_auc"] == pytest.approx(3 / 4)  # 3 of 4 positive/negative pairs ordered correctly
    assert m["brier"] == pytest.approx((0.01 + 0.36 + 0.36 + 0.01) / 4)
    assert m["ece"] == pytest.approx((0.1 + 0.6 + 0.6 + 0.1) / 4)  # one sample per bin
    assert M.confusion(y, s) == [[1, 1], [1, 1]]
    # a (N, 2) softmax output gives the same numbers as the sigmoid score
    assert M.classification_metrics(y, np.stack([1 - s, s], 1)) == pytest.approx(m)


def test_binary_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    m = M.classification_metrics(y, s, threshold=0.4)
    p = (s >= 0.4).astype(int)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, p))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, p))
    assert m["precision"] == pytest.approx(skm.precision_score(y, p))
    assert m["recall"] == pytest.approx(skm.recall_score(y, p))
    assert m["specificity"] == pytest.approx(skm.recall_score(y, p, pos_label=0))
    assert m["f1"] == pytest.approx(skm.f1_score(y, p))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, s))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, s))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, s))
    rel = M.reliability(y, s, bins=10)
    true, pred = calibration_curve(y, s, n_bins=10)
    assert [v for v in rel["observed"] if v is not None] == pytest.approx(list(true))
    assert [v for v in rel["confidence"] if v is not None] == pytest.approx(list(pred))
    assert sum(rel["count"]) == 200


def test_multiclass_macro_and_per_class_match_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 150)
    logits = rng.normal(size=(150, 3)) + np.eye(3)[y] * 1.5
    s = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    p = s.argmax(1)
    m = M.classification_metrics(y, s)
    assert m["precision"] == pytest.approx(skm.precision_score(y, p, average="macro"))
    assert m["recall"] == pytest.approx(skm.recall_score(y, p, average="macro"))
    assert m["f1"] == pytest.approx(skm.f1_score(y, p, average="macro"))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, s, multi_class="ovr"))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, p))
    assert m["brier"] == pytest.approx(np.mean(np.sum((s - np.eye(3)[y]) ** 2, 1)))
    per = M.per_class(y, s, ["a", "b", "c"])
    report = skm.classification_report(y, p, output_dict=True)
    for i, name in enumerate("abc"):
        assert per[name]["f1"] == pytest.approx(report[str(i)]["f1-score"])
        assert per[name]["support"] == report[str(i)]["support"]
        spec = skm.recall_score(y == i, p == i, pos_label=False)
        assert per[name]["specificity"] == pytest.approx(spec)
    assert np.array(M.confusion(y, s)).tolist() == skm.confusion_matrix(y, p).tolist()


def test_threshold_selection_on_validation():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.7, 0.3, 0.8, 0.9])
    assert M.choose_threshold(y, s, "fixed", 0.9, fixed=0.42) == 0.42
    # Youden: 0.8 (TPR 2/3, FPR 0) and 0.3 (TPR 1, FPR 1/3) tie at J=2/3; the stricter one is taken first
    assert M.choose_threshold(y, s, "youden", 0.9, 0.5) == pytest.approx(0.8)
    assert M.choose_threshold(y, s, "sensitivity", 1.0, 0.5) == pytest.approx(0.3)  # highest with TPR 1
    assert M.choose_threshold(y, s, "specificity", 1.0, 0.5) == pytest.approx(0.8)  # lowest with FPR 0
    assert M.choose_threshold(y, s, "specificity", 0.6, 0.5) == pytest.approx(0.3)
    with pytest.raises(UserError, match="needs a binary task"):
        M.choose_threshold(np.array([0, 1, 2]), np.eye(3), "youden", 0.9, 0.5)
    with pytest.raises(UserError, match="both classes"):
        M.choose_threshold(np.array([1, 1]), np.array([0.2, 0.9]), "youden", 0.9, 0.5)
    # the record the train job keeps in a model file and the test job applies
    test = {"threshold_method": "sensitivity", "threshold": 0.5, "threshold_target": 1.0}
    assert M.operating_point(y, s, test) == {"value": pytest.approx(0.3), "rule": "sensitivity",
                                             "source": "validation (sensitivity 1.0)"}
    assert M.operating_point(y, s, {**test, "threshold_method": "youden"})["source"] == "validation (youden)"
    assert M.operating_point(y, s, {**test, "threshold_method": "fixed"}) == {"value": 0.5, "rule": "fixed",
                                                                            "source": "fixed"}


def test_bootstrap_is_seeded_grouped_and_matches_sklearn_weights():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 60)
    s = np.round(np.clip(y * 0.25 + rng.random(60) * 0.75, 0, 1), 2)  # ties on purpose
    a = M.bootstrap_ci(y, s, 0.5, 300, 7, None, 0.95)
    assert a == M.bootstrap_ci(y, s, 0.5, 300, 7, None, 0.95)
    assert a != M.bootstrap_ci(y, s, 0.5, 300, 8, None, 0.95)
    point = M.classification_metrics(y, s)
    for key in ("accuracy", "recall", "specificity", "f1", "roc_auc"):
        lo, hi = a[key]
        assert lo <= point[key] <= hi, key
    # one image per group (ids in order): the same draws, the same intervals
    assert M.bootstrap_ci(y, s, 0.5, 300, 7, [f"p{i:03d}" for i in range(60)], 0.95) == a
    # three big patients: far fewer distinct resamples, different intervals
    assert M.bootstrap_ci(y, s, 0.5, 300, 7, [str(i % 3) for i in range(60)], 0.95) != a
    # the vectorised resample metrics equal sklearn's with sample weights
    w = rng.integers(0, 3, (4, 60)).astype(float)
    p = (s >= 0.5).astype(int)
    got = {k: M.weighted_metric(k, y, p, s, w) for k in ("roc_auc", "pr_auc", "f1", "balanced_accuracy", "precision")}
    for r in range(4):
        assert got["roc_auc"][r] == pytest.approx(skm.roc_auc_score(y, s, sample_weight=w[r]))
        assert got["pr_auc"][r] == pytest.approx(skm.average_precision_score(y, s, sample_weight=w[r]))
        assert got["f1"][r] == pytest.approx(skm.f1_score(y, p, sample_weight=w[r]))
        assert got["balanced_accuracy"][r] == pytest.approx(skm.balanced_accuracy_score(y, p, sample_weight=w[r]))
        assert got["precision"][r] == pytest.approx(skm.precision_score(y, p, sample_weight=w[r]))
    # every declared interval, binary and multi-class (PR-AUC included)
    assert set(a) == set(metric_names(has_ci=True, source="test"))
    # multi-class is repeatable too, and resamples where a class is absent give no ROC / PR area
    probs = np.eye(3)[rng.integers(0, 3, 30)] * 0.5 + 0.5 / 3
    yy = rng.integers(0, 3, 30)
    assert M.bootstrap_ci(yy, probs, 0.5, 20, 1, None, 0.95) == M.bootstrap_ci(yy, probs, 0.5, 20, 1, None, 0.95)
    assert set(M.bootstrap_ci(yy, probs, 0.5, 20, 1, None, 0.95)) == set(metric_names(has_ci=True, source="test"))


def test_the_resampler_is_the_same_however_it_is_chunked():
    groups = [f"p{i // 3}" for i in range(30)]
    whole = M.bootstrap_weights(30, groups, resamples=37, seed=5)
    chunked = np.concatenate(list(M.bootstrap_chunks(30, groups, resamples=37, seed=5, max_cells=100)))
    assert whole.shape == (37, 30) and np.array_equal(whole, chunked)
    # one draw of a unit per unit, as numpy draws them: the figures' bands and the test CIs share these draws
    draws = np.random.default_rng(5).integers(0, 10, size=(37, 10))
    assert np.array_equal(whole[:, ::3], np.stack([np.bincount(d, minlength=10) for d in draws]))


def test_weighted_pr_auc_multi_class_is_the_macro_average_precision():
    rng = np.random.default_rng(6)
    y = np.r_[0, 1, 2, rng.integers(0, 3, 57)]
    s = rng.dirichlet(np.ones(3), 60) + np.eye(3)[y] * 0.2
    w = rng.integers(0, 3, (3, 60)).astype(float)
    got = M.weighted_metric("pr_auc", y, s.argmax(1), s, w)
    for r in range(3):
        want = np.mean([skm.average_precision_score(y == c, s[:, c], sample_weight=w[r]) for c in range(3)])
        assert got[r] == pytest.approx(want)
    w[0, y == 2] = 0  # a class absent from the resample: undefined
    assert np.isnan(M.weighted_metric("pr_auc", y, s.argmax(1), s, w)[0])


@pytest.mark.parametrize("classes", [1, 3])
def test_weighted_metrics_are_the_test_metrics(classes):
    rng = np.random.default_rng(4)
    n = 90
    if classes == 1:
        y = rng.integers(0, 2, n)
        scores = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.25, n), 0, 1)
    else:
        y = rng.integers(0, 3, n)
        scores = rng.dirichlet(np.ones(3), n) + np.eye(3)[y] * 0.3
        scores /= scores.sum(axis=1, keepdims=True)
    want = M.classification_metrics(y, scores)
    ones = np.ones((1, n))
    for metric in metric_names(has_ci=True, source="test") + ("sensitivity",):
        assert M.weighted_metric(metric, y, M.predictions(scores), scores, ones)[0] == pytest.approx(want[metric])
    twice = np.vstack([ones, 2 * ones])  # doubling every image changes nothing
    assert np.ptp(M.weighted_metric("f1", y, M.predictions(scores), scores, twice)) == pytest.approx(0)


def test_pad_metrics_and_tdr_at_fdr():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])  # 1 = attack
    s = np.array([0.1, 0.2, 0.6, 0.3, 0.9, 0.8, 0.4, 0.7])
    pm = M.pad_metrics(y, s, threshold=0.5, fdr=0.25)
    assert pm["apcer"] == pytest.approx(1 / 4)  # the attack at 0.4 accepted as bona fide
    assert pm["bpcer"] == pytest.approx(1 / 4)  # the bona fide at 0.6 rejected
    assert pm["acer"] == pytest.approx(1 / 4)
    assert pm["tdr_at_25pct_fdr"] == pytest.approx(1.0)  # threshold 0.4: TDR 1 at FDR 1/4
    assert len(pm["roc"]["fdr"]) == len(pm["roc"]["tdr"]) == len(pm["roc"]["thresholds"])
    # 0.2% FDR on 1000 bona fide: at most 2 of them may score above the operating threshold
    rng = np.random.default_rng(0)
    neg, attacks = rng.random(1000), np.linspace(0.99, 0.9995, 50)
    yy = np.r_[np.zeros(1000), np.ones(50)].astype(int)
    ss = np.r_[neg, attacks]
    third_highest = np.sort(neg)[-3]
    expected = np.mean(attacks > third_highest)
    assert M.pad_metrics(yy, ss, 0.5, 0.002)["tdr_at_0_2pct_fdr"] == pytest.approx(expected)


def test_original_text_format(tmp_path):
    cfg = {"model": {"backbone": {"name": "densenet121"}, "attention": {"name": "mldam"}},
           "train": {"augment": {"name": "goncalves2021"}}}
    assert results_text.model_name(cfg) == "DenseNet121" and results_text.setting(cfg) == "mldamdaug"
    m = {"accuracy": 0.6649746192893401, "recall": 0.5573770491803278, "precision": 0.6017699115044248,
         "f1": 0.5787234042553191}
    text = results_text.render([("DenseNet121", "val", "baseline", m), ("DenseNet121", "tr", "mldam", None),
                                ("DenseNet121", "tr", "baseline", m)], finished=True)
    assert text == (
        "Model Name: DenseNet121 | Weight Split: tr | Train Setting: baseline\n"
        "Accuracy: 0.6649746192893401 | Recall: 0.5573770491803278 | Precision: 0.6017699115044248 | "
        "F1-Score: 0.5787234042553191\n\n\n"
        "Model Name: DenseNet121 | Weight Split: tr | Train Setting: mldam\nError\n\n\n"
        "Model Name: DenseNet121 | Weight Split: val | Train Setting: baseline\n"
        "Accuracy: 0.6649746192893401 | Recall: 0.5573770491803278 | Precision: 0.6017699115044248 | "
        "F1-Score: 0.5787234042553191\n\n\nFinished.\n")
