"""The statistics of repeated runs on known cases: t intervals across seeds, DeLong against a hand-computed example
and a bootstrap, McNemar on 2x2 tables with known p, bootstrap coverage, OR-Hillis, and the comparison table."""
from __future__ import annotations

import math
from fractions import Fraction as Fr

import numpy as np
import pytest

from medattn.errors import UserError
from medattn.evidence import metrics as M
from medattn.evidence import stats as S


# --- aggregate -----------------------------------------------------------------------------------------------------
def test_aggregate_gives_mean_sd_t_interval_and_n_per_variant_and_metric():
    rows = [{"variant": "a", "seed": 0, "n": 40, "accuracy": 0.8, "roc_auc": "0.9"},
            {"variant": "a", "seed": 1, "n": 40, "accuracy": 0.9, "roc_auc": "0.8"},
            {"variant": "a", "seed": 2, "n": 40, "accuracy": 1.0, "roc_auc": ""},
            {"variant": "b", "seed": 0, "n": 40, "accuracy": 0.7, "roc_auc": "nan"}]
    out = S.aggregate(rows)
    assert [(r["variant"], r["metric"]) for r in out] == [("a", "accuracy"), ("a", "roc_auc"), ("b", "accuracy")]
    a = out[0]
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, 2 df) * sd / sqrt(n)
    assert a["n"] == 3 and a["mean"] == pytest.approx(0.9) and a["sd"] == pytest.approx(0.1)
    assert (a["ci_low"], a["ci_high"]) == pytest.approx((0.9 - half, 0.9 + half))
    assert out[1]["n"] == 2 and out[1]["mean"] == pytest.approx(0.85)  # the empty value is not a seed
    b = out[2]
    assert b["n"] == 1 and b["mean"] == 0.7 and math.isnan(b["sd"]) and math.isnan(b["ci_low"])


def test_aggregate_groups_by_several_keys_and_picks_metrics():
    rows = [{"variant": v, "method": m, "seed": s, "pointing_game": float(s), "label": "x"}
            for v in ("a", "b") for m in ("saliency", "gradcam") for s in range(2)]
    out = S.aggregate(rows, by=("variant", "method"))
    assert len(out) == 4 and {r["metric"] for r in out} == {"pointing_game"}  # strings and the seed left out
    assert out[0] == {"variant": "a", "method": "saliency", "metric": "pointing_game", "mean": 0.5,
                      "sd": pytest.approx(math.sqrt(0.5)), "ci_low": pytest.approx(0.5 - 12.7062047 * 0.5),
                      "ci_high": pytest.approx(0.5 + 12.7062047 * 0.5), "n": 2}
    assert S.aggregate(rows, metrics=["seed"])[0]["mean"] == 0.5


# --- DeLong --------------------------------------------------------------------------------------------------------
def test_delong_matches_a_hand_computed_example():
    labels = [1, 1, 1, 0, 0]
    a = [0.9, 0.6, 0.4, 0.5, 0.1]
    b = [0.8, 0.3, 0.55, 0.6, 0.2]
    # structural components by hand: V10 per positive (negatives below it), V01 per negative (positives above it)
    v10_a, v10_b = [Fr(1), Fr(1), Fr(1, 2)], [Fr(1), Fr(1, 2), Fr(1, 2)]
    v01_a, v01_b = [Fr(2, 3), Fr(1)], [Fr(1, 3), Fr(1)]
    auc_a, auc_b = Fr(5, 6), Fr(2, 3)

    def cov(x, y, mx, my):
        return sum((i - mx) * (j - my) for i, j in zip(x, y)) / (len(x) - 1)

    s10 = [[cov(v10_a, v10_a, auc_a, auc_a), cov(v10_a, v10_b, auc_a, auc_b)],
           [0, cov(v10_b, v10_b, auc_b, auc_b)]]
    s01 = [[cov(v01_a, v01_a, auc_a, auc_a), cov(v01_a, v01_b, auc_a, auc_b)],
           [0, cov(v01_b, v01_b, auc_b, auc_b)]]
    assert (s10[0][0], s10[0][1], s10[1][1]) == (Fr(1, 12), Fr(1, 24), Fr(1, 12))
    assert (s01[0][0], s01[0][1], s01[1][1]) == (Fr(1, 18), Fr(1, 9), Fr(2, 9))
    var = (s10[0][0] + s10[1][1] - 2 * s10[0][1]) / 3 + (s01[0][0] + s01[1][1] - 2 * s01[0][1]) / 2
    assert var == Fr(1, 18)
    aucs, c = S.delong(labels, [a, b])
    assert aucs == pytest.approx([5 / 6, 2 / 3])
    assert c == pytest.approx(np.array([[1 / 36 + 1 / 36, 1 / 72 + 1 / 18], [1 / 72 + 1 / 18, 1 / 36 + 1 / 9]]))
    got = S.delong_test(labels, a, b)
    z = (1 / 6) / math.sqrt(1 / 18)
    assert got["delta"] == pytest.approx(1 / 6) and got["p"] == pytest.approx(math.erfc(z / math.sqrt(2)))
    assert got["ci_high"] - got["delta"] == pytest.approx(1.959963984540054 * math.sqrt(1 / 18))


def test_fast_delong_equals_the_quadratic_definition_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    scores = rng.integers(0, 6, (3, 40)) / 5  # many ties
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    psi = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])  # (k, m, n)
    v10, v01 = psi.mean(axis=2), psi.mean(axis=1)
    want = np.cov(v10) / pos.shape[1] + np.cov(v01) / neg.shape[1]
    aucs, cov = S.delong(y, scores)
    assert aucs == pytest.approx(v10.mean(axis=1)) and cov == pytest.approx(want)
    assert aucs[0] == pytest.approx(M.classification_metrics(y, scores[0])["roc_auc"])


def test_delong_agrees_with_a_paired_bootstrap_on_a_simulated_case():
    rng = np.random.default_rng(1)
    n = 400
    y = rng.integers(0, 2, n)
    shared = rng.normal(size=n)
    a = 1.2 * y + shared + rng.normal(0, 0.6, n)
    b = 0.8 * y + shared + rng.normal(0, 0.6, n)
    dl = S.delong_test(y, a, b)
    pos = lambda s: s  # noqa: E731
    bs = S.paired_bootstrap(lambda w: M.weighted_metric("roc_auc", y, y, pos(a), w)
                            - M.weighted_metric("roc_auc", y, y, pos(b), w), n, resamples=2000, seed=0)
    assert bs["delta"] == pytest.approx(dl["delta"])
    width_dl, width_bs = dl["ci_high"] - dl["ci_low"], bs["ci_high"] - bs["ci_low"]
    assert 0.85 < width_bs / width_dl < 1.15
    assert dl["p"] < 0.01 and bs["p"] < 0.01


def test_delong_undefined_with_one_class():
    aucs, cov = S.delong([1, 1, 1], [[0.1, 0.2, 0.3]])
    assert np.isnan(aucs).all() and np.isnan(cov).all()
    assert math.isnan(S.delong_test([1, 1, 0], [0.2, 0.3, 0.1], [0.3, 0.2, 0.1])["p"])  # one negative: no variance


# --- McNemar -------------------------------------------------------------------------------------------------------
def table_to_pairs(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([1] * both + [1] * only_a + [0] * only_b + [0] * neither, dtype=bool)
    b = np.array([1] * both + [0] * only_a + [1] * only_b + [0] * neither, dtype=bool)
    return a, b


def test_mcnemar_exact_for_few_discordant_pairs():
    got = S.mcnemar_test(*table_to_pairs(10, 2, 10, 5))
    assert got["test"] == "McNemar exact"
    assert got["p"] == pytest.approx(2 * (1 + 12 + 66) / 2 ** 12)  # 2 P(X <= 2), X ~ Binomial(12, 1/2)
    assert got["delta"] == pytest.approx(-8 / 27) and got["ci_low"] < got["delta"] < got["ci_high"] < 0


def test_mcnemar_chi_square_on_a_textbook_table():
    # Agresti's approval ratings: 794 approve twice, 150 then disapprove, 86 the other way, 570 disapprove twice
    got = S.mcnemar_test(*table_to_pairs(794, 150, 86, 570))
    assert got["test"] == "McNemar chi-square"
    assert got["p"] == pytest.approx(3.0993e-5, rel=1e-3)  # chi2 = 64^2 / 236 = 17.36, 1 df
    assert got["delta"] == pytest.approx(64 / 1600)
    # Bonett-Price: p12 = 151 / 1602, p21 = 87 / 1602, half width 1.96 sqrt((p12 + p21 - (p12 - p21)^2) / 1602)
    assert got["ci_low"] == pytest.approx(0.02118, abs=5e-5) and got["ci_high"] == pytest.approx(0.05872, abs=5e-5)


def test_mcnemar_without_discordant_pairs():
    got = S.mcnemar_test(*table_to_pairs(5, 0, 0, 5))
    assert got["p"] == 1.0 and got["delta"] == 0 and got["ci_low"] < 0 < got["ci_high"]
    assert S.mcnemar_test(*table_to_pairs(5, 0, 0, 5), method="mid_p")["p"] == 1.0


def test_mcnemar_mid_p_by_hand():
    # 7 images only a gets right, 1 only b: X ~ Binomial(8, 1/2), P(X <= 1) = 9/256, P(X = 1) = 8/256
    exact = S.mcnemar_test(*table_to_pairs(10, 7, 1, 5))
    mid = S.mcnemar_test(*table_to_pairs(10, 7, 1, 5), method="mid_p")
    assert exact["test"] == "McNemar exact" and exact["p"] == pytest.approx(float(2 * Fr(9, 256)), rel=1e-12)
    assert mid["test"] == "McNemar mid-p" and mid["p"] == pytest.approx(float(2 * Fr(9, 256) - Fr(8, 256)),
                                                                          rel=1e-12)
    assert {k: mid[k] for k in ("delta", "ci_low", "ci_high")} == {k: exact[k] for k in ("delta", "ci_low",
                                                                                          "ci_high")}
    # an even split: the exact test caps 2 P(X <= 4) = 1 + P(X = 4) at 1, mid-p is 1 by itself
    assert S.mcnemar_test(*table_to_pairs(3, 4, 4, 3), method="mid_p")["p"] == pytest.approx(1.0)
    # mid-p at every count: 30 discordant pairs would be the chi-square under the default
    big = S.mcnemar_test(*table_to_pairs(10, 20, 10, 5), method="mid_p")
    k = np.arange(11)
    want = 2 * sum(Fr(math.comb(30, int(i)), 2 ** 30) for i in k) - Fr(math.comb(30, 10), 2 ** 30)
    assert big["test"] == "McNemar mid-p" and big["p"] == pytest.approx(float(want), rel=1e-12)


# --- the paired bootstrap ------------------------------------------------------------------------------------------
def _coverage(groups_per_set: int, per_group: int, by_group: bool, sims: int = 150) -> float:
    """How often the 95% bootstrap CI of a paired accuracy difference covers the true difference (0.1)."""
    rng = np.random.default_rng(7)
    hits = 0
    n = groups_per_set * per_group
    groups = np.repeat(np.arange(groups_per_set), per_group)
    for i in range(sims):
        own = rng.random(n) < 0.1  # most images share their patient's draw: images of one patient are alike
        u = np.where(own, rng.random(n), rng.random(groups_per_set)[groups])  # uniform on [0, 1] either way
        right_a, right_b = u < 0.8, u < 0.7  # the true difference is 0.1
        stat = lambda w: (w @ right_a - w @ right_b) / w.sum(axis=1)  # noqa: E731, B023
        ci = S.paired_bootstrap(stat, n, groups if by_group else None, resamples=400, seed=i)
        hits += ci["ci_low"] <= 0.1 <= ci["ci_high"]
    return hits / sims


def test_bootstrap_ci_covers_the_true_difference_about_95_percent():
    assert 0.90 <= _coverage(120, 1, by_group=False) <= 0.99


def test_bootstrap_by_patient_group_keeps_its_coverage_where_the_image_bootstrap_loses_it():
    by_group = _coverage(60, 4, by_group=True)
    by_image = _coverage(60, 4, by_group=False)
    assert 0.88 <= by_group <= 0.99
    assert by_image < by_group - 0.1


def test_bootstrap_weights_draw_whole_groups():
    w = M.bootstrap_weights(6, ["p1", "p1", "p2", "p2", "p3", "p3"], resamples=50, seed=0)
    assert w.shape == (50, 6) and np.all(w[:, 0] == w[:, 1]) and np.all(w[:, 4] == w[:, 5])
    assert np.all(w.sum(axis=1) == 6)
    p = S.paired_bootstrap(lambda w: np.zeros(len(w)), 6)
    assert p["delta"] == 0 and p["p"] == 1.0


# --- multiple comparisons and OR-Hillis ----------------------------------------------------------------------------
def test_holm_and_other_corrections():
    assert S.adjust([0.01, 0.04, 0.03], "holm") == pytest.approx([0.03, 0.06, 0.06])
    assert S.adjust([0.01, 0.04, 0.03], "bonferroni") == pytest.approx([0.03, 0.12, 0.09])
    assert S.adjust([0.01, 0.04, 0.03], "fdr_bh") == pytest.approx([0.03, 0.04, 0.04])
    got = S.adjust([0.01, float("nan"), 0.04], "holm")
    assert got[0] == pytest.approx(0.02) and math.isnan(got[1]) and got[2] == pytest.approx(0.04)
    assert S.adjust([0.2], "none") == pytest.approx([0.2])
    with pytest.raises(UserError, match="compare.correction"):
        S.adjust([0.1], "holmes")


def test_or_hillis_reduces_to_delong_when_the_seeds_agree():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 120)
    a, b = y + rng.normal(0, 1, 120), y + rng.normal(0, 1.3, 120)
    aucs, cov = S.delong(y, [a, a, a, b, b, b])
    got = S.or_hillis(aucs[:3], aucs[3:], cov)
    want = S.delong_test(y, a, b)
    assert got["delta"] == pytest.approx(want["delta"]) and got["p"] == pytest.approx(want["p"])
    assert got["ci_low"] == pytest.approx(want["ci_low"])


def test_or_hillis_by_hand():
    theta_v, theta_r = np.array([0.80, 0.84, 0.82]), np.array([0.78, 0.80, 0.81])
    cov = np.full((6, 6), 0.0004)  # Cov3 (other variant, other seed)
    cov[:3, :3] = cov[3:, 3:] = 0.0006  # Cov2 (same variant, other seed)
    np.fill_diagonal(cov, 0.001)
    d = theta_v - theta_r  # 0.02, 0.04, 0.01
    ms_tr = np.var(d, ddof=1) / 2
    denominator = ms_tr + 3 * (0.0006 - 0.0004)
    se = math.sqrt(2 / 3 * denominator)
    ddf = denominator ** 2 / (ms_tr ** 2 / 2)
    from scipy import stats as sps

    got = S.or_hillis(theta_v, theta_r, cov)
    assert got["ddf"] == pytest.approx(ddf, rel=1e-12)
    assert got["delta"] == pytest.approx(d.mean())
    assert got["p"] == pytest.approx(2 * sps.t.sf(d.mean() / se, ddf))
    assert got["ci_high"] - got["delta"] == pytest.approx(sps.t.ppf(0.975, ddf) * se)


def _simulated_runs(rng, seeds, n=150, effect=0.0, seed_sd=0.3, groups=None):
    """Runs of two variants a and b whose seeds shift their separation (training randomness)."""
    y = rng.integers(0, 2, n)
    hard = rng.normal(size=n)
    runs = {}
    for variant, eff in (("a", effect), ("b", 0.0)):
        for s in seeds:
            z = (1 + eff + rng.normal(0, seed_sd)) * (2 * y - 1) + hard + rng.normal(0, 0.8, n)
            p = 1 / (1 + np.exp(-z))
            runs[(variant, s)] = {"ids": [f"img{i}" for i in range(n)], "labels": y, "scores": p,
                                  "predictions": (p >= 0.5).astype(int), "groups": groups}
    return runs


def test_seeds_as_a_random_factor_hold_the_error_rate():
    rng = np.random.default_rng(3)
    p = np.array([[r["p"] for r in S.compare(_simulated_runs(rng, [0, 1, 2]), "b", ("roc_auc", "accuracy"), "none")]
                  for _ in range(120)])
    assert np.isfinite(p).all() and 0.35 < p.mean() < 0.65  # p is spread over (0, 1) under the null
    assert np.all(np.mean(p < 0.05, axis=0) <= 0.12)


# --- weighted metrics and the comparison table ---------------------------------------------------------------------
def test_compare_one_seed_uses_delong_mcnemar_and_the_bootstrap():
    rng = np.random.default_rng(5)
    runs = _simulated_runs(rng, [None], effect=1.0, seed_sd=0.0)
    rows = S.compare(runs, None, ("roc_auc", "accuracy", "f1"), "holm", resamples=300)
    assert [r["test"].split()[0] for r in rows] == ["DeLong", "McNemar", "paired"]
    assert all(list(r) == list(S.COLUMNS) for r in rows)
    assert all(r["variant"] == "b" and r["reference"] == "a" and r["n_seeds"] == 1 and r["n_images"] == 150
               for r in rows)
    assert all(r["delta"] < 0 and r["ci_low"] <= r["delta"] <= r["ci_high"] for r in rows)
    assert all(r["p_adjusted"] >= r["p"] for r in rows)
    assert [r["ddf"] for r in rows] == ["", "", ""]  # degrees of freedom belong to the OR-Hillis rows only
    mid = S.compare(runs, None, ("roc_auc", "accuracy", "f1"), "holm", resamples=300, mcnemar="mid_p")
    assert mid[1]["test"] == "McNemar mid-p" and mid[1]["p"] != rows[1]["p"]
    assert [r["p"] for i, r in enumerate(mid) if i != 1] == [r["p"] for i, r in enumerate(rows) if i != 1]
    with pytest.raises(UserError, match="compare.mcnemar: 'midp' is not one of exact, mid_p"):
        S.compare(runs, None, ("accuracy",), mcnemar="midp")
    a = runs[("a", None)]
    assert rows[0]["delta"] == pytest.approx(M.classification_metrics(a["labels"], runs[("b", None)]["scores"])
                                             ["roc_auc"] - M.classification_metrics(a["labels"], a["scores"])["roc_auc"])


def test_compare_several_seeds_pairs_them_and_matches_the_aggregate_means():
    rng = np.random.default_rng(6)
    runs = _simulated_runs(rng, [0, 1, 2], effect=0.5)
    runs[("b", 7)] = runs[("b", 0)]  # a seed the reference lacks is not compared
    shuffled = {k: dict(v) for k, v in runs.items()}
    order = rng.permutation(150)
    for key in [("b", 0), ("b", 1)]:  # the same images in another order pair by id
        shuffled[key] = {k: (np.asarray(v)[order] if k != "groups" else v) for k, v in runs[key].items()}
    rows = S.compare(shuffled, "b", ("roc_auc", "accuracy", "specificity"), "holm", resamples=300)
    assert [r["test"] for r in rows] == ["OR-Hillis (DeLong covariance)", "OR-Hillis (binomial covariance)",
                                         "OR-Hillis (bootstrap covariance by image)"]
    assert all(r["variant"] == "a" and r["n_seeds"] == 3 for r in rows)
    assert all(2 <= r["ddf"] for r in rows)  # Hillis: at least r - 1 = 2
    per_seed = {key: M.classification_metrics(v["labels"], v["scores"]) for key, v in runs.items()}
    for row in rows:
        means = {v: np.mean([per_seed[(v, s)][row["metric"]] for s in (0, 1, 2)]) for v in "ab"}
        assert row["delta"] == pytest.approx(means["a"] - means["b"])


def test_compare_seeds_that_tested_other_images_is_a_paired_t_test_over_seeds():
    from scipy import stats as sps

    rng = np.random.default_rng(12)
    runs = {}
    for s in range(3):  # each seed draws its own test images (same ids, other images)
        for key, value in _simulated_runs(rng, [s], effect=0.3).items():
            runs[key] = value
    sets = {(v, s): f"data:{s}" for v, s in runs}
    rows = S.compare(runs, "b", ("roc_auc", "f1"), "none", test_sets=sets)
    assert {r["test"] for r in rows} == {"paired t over seeds (other test images per seed)"}
    for row in rows:
        theta = {v: [M.classification_metrics(runs[(v, s)]["labels"], runs[(v, s)]["scores"])[row["metric"]]
                     for s in range(3)] for v in "ab"}
        assert row["delta"] == pytest.approx(np.mean(theta["a"]) - np.mean(theta["b"]))
        assert row["p"] == pytest.approx(sps.ttest_rel(theta["a"], theta["b"]).pvalue)
    runs[("a", 1)] = {**runs[("a", 1)], "labels": 1 - np.asarray(runs[("a", 1)]["labels"])}
    runs[("b", 1)] = {**runs[("b", 1)], "labels": runs[("a", 1)]["labels"]}
    other_labels = S.compare(runs, "b", ("accuracy",))  # no fingerprints: labels that differ tell it
    assert other_labels[0]["test"] == "paired t over seeds (other test images per seed)"
    with pytest.raises(UserError, match=r"a and b \(seed 0\) were tested on different data"):
        S.compare(runs, "b", test_sets={**sets, ("a", 0): "data:x"})


def test_compare_resamples_patient_groups_when_they_repeat():
    rng = np.random.default_rng(8)
    runs = _simulated_runs(rng, [None], n=60, groups=[f"p{i // 3}" for i in range(60)])
    rows = S.compare(runs, "a", ("roc_auc", "accuracy"), "none", resamples=200)
    assert {r["test"] for r in rows} == {"paired bootstrap (by patient group)"}
    assert all(r["p_adjusted"] == r["p"] for r in rows)


def test_compare_multi_class_roc_auc_by_bootstrap():
    rng = np.random.default_rng(9)
    y = rng.integers(0, 3, 60)
    runs = {}
    for v in ("a", "b"):
        s = rng.dirichlet(np.ones(3), 60) + np.eye(3)[y] * 0.4
        s /= s.sum(axis=1, keepdims=True)
        runs[(v, None)] = {"ids": np.arange(60), "labels": y, "scores": s, "predictions": s.argmax(axis=1)}
    rows = S.compare(runs, "a", ("roc_auc", "accuracy"), resamples=200)
    assert rows[0]["test"] == "paired bootstrap (by image)" and rows[1]["test"].startswith("McNemar")


def test_compare_refuses_bad_input_with_one_message():
    rng = np.random.default_rng(10)
    runs = _simulated_runs(rng, [0], n=20)
    with pytest.raises(UserError, match="compare.metrics: 'brier'"):
        S.compare(runs, None, ("brier",))
    with pytest.raises(UserError, match="compare.reference: 'c' is neither a variant"):
        S.compare(runs, "c")
    bad = dict(runs)
    bad[("a", 0)] = {**runs[("a", 0)], "labels": 1 - np.asarray(runs[("a", 0)]["labels"])}
    with pytest.raises(UserError, match="different labels"):
        S.compare(bad)
    bad[("a", 0)] = {**runs[("a", 0)], "ids": [f"other{i}" for i in range(20)]}
    with pytest.raises(UserError, match="share no test image"):
        S.compare(bad)
    with pytest.raises(UserError, match="share no seed"):
        S.compare({("a", 0): runs[("a", 0)], ("b", 1): runs[("b", 0)]})
    with pytest.raises(UserError, match="needs ids, labels"):
        S.compare({("a", 0): {"ids": [1]}, ("b", 0): runs[("b", 0)]})


def test_reference_pairs_each_variant_with_its_own_baseline():
    variants = ["r18_none", "r18_cbam", "r50_none", "r50_cbam"]
    attention = {"r18_none": "none", "r18_cbam": "timm_attn", "r50_none": "none", "r50_cbam": "timm_attn"}
    choices = {v: {"model.backbone.name": v[:3], "model.attention.name": attention[v]} for v in variants}
    assert S.reference_pairs("none", variants, attention, choices) == {"r18_cbam": "r18_none", "r50_cbam": "r50_none"}
    assert S.reference_pairs("none", variants) == {"r18_cbam": "r18_none", "r50_none": "r18_none",
                                                   "r50_cbam": "r18_none"}  # nothing known: the first variant
    assert S.reference_pairs("r50_none", variants)["r18_none"] == "r50_none"
    assert S.reference_pairs(None, ["x"]) == {}


def test_predictions_from_the_test_jobs_csv_rows():
    rows = [{"id": "a", "group": "p1", "label": "1", "prediction": "1", "score": "0.9"},
            {"id": "b", "group": "p1", "label": "0", "prediction": "1", "score": "0.6"}]
    p = S.predictions_from_rows(rows)
    assert list(p.ids) == ["a", "b"] and list(p.groups) == ["p1", "p1"] and p.scores.shape == (2,)
    multi = S.predictions_from_rows([{"id": "a", "label": "2", "prediction": "2", "score_x": "0.1",
                                      "score_y": "0.2", "score_z": "0.7"}])
    assert multi.scores.shape == (1, 3) and multi.groups is None
    with pytest.raises(UserError, match="predictions_best.csv: needs id, label"):
        S.predictions_from_rows([{"id": "a", "label": "x", "prediction": "1", "score": "1"}], "predictions_best.csv")


# --- the comparisons figure ----------------------------------------------------------------------------------------
def test_comparisons_figure_draws_a_forest_plot(tmp_path):
    from medattn_plugins.figures import comparisons

    from medattn.api import ExperimentDir, ExperimentView

    rng = np.random.default_rng(11)
    rows = S.compare(_simulated_runs(rng, [0, 1]), "b", ("roc_auc", "accuracy"), resamples=100)
    as_csv = [{k: str(v) for k, v in r.items()} for r in rows]  # as read back from comparisons.csv
    logged = []
    view = ExperimentView("exp", ExperimentDir(tmp_path), [], {"comparisons": as_csv}, {}, logged.append)
    paths = comparisons.draw({"metrics": ["accuracy"], "alpha": 0.05}, view)
    assert paths == [tmp_path / "figures" / "comparisons.png"] and paths[0].stat().st_size > 1000
    assert comparisons.draw({"alpha": 0.05}, ExperimentView("exp", ExperimentDir(tmp_path), [], {}, {},
                                                            logged.append)) == []
    assert logged == []  # nothing compared: nothing to say
    nan_rows = [{**r, "delta": "nan"} for r in as_csv]
    assert comparisons.draw({"alpha": 0.05}, ExperimentView("exp", ExperimentDir(tmp_path), [],
                                                            {"comparisons": nan_rows}, {}, logged.append)) == []
    assert logged == ["comparisons figure: no comparison rows to draw"]
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(comparisons.PARAMS)
    jsonschema.validate({"metrics": ["roc_auc"], "alpha": 0.01}, comparisons.PARAMS)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"alpha": 2}, comparisons.PARAMS)


def test_a_metric_undefined_on_one_class_says_so():
    """Images all of one class (a subgroup of positives, say) have no ROC AUC: the row says why, not just NaN."""
    ids = np.array([str(i) for i in range(12)])
    y = np.ones(12, int)
    runs = {("a", None): {"ids": ids, "labels": y, "predictions": np.arange(12) % 2, "scores": np.linspace(0.1, 0.9, 12)},
            ("b", None): {"ids": ids, "labels": y, "predictions": np.ones(12, int), "scores": np.linspace(0.2, 0.8, 12)}}
    rows = {r["metric"]: r for r in S.compare(runs, "a", ["roc_auc", "accuracy"], resamples=20)}
    assert rows["roc_auc"]["test"] == "undefined: every image compared is of one class"
    assert rows["accuracy"]["test"].startswith("McNemar") and np.isfinite(rows["accuracy"]["delta"])
