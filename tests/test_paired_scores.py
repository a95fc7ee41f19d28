"""The paired comparison of per-image scores (explanation quality, shortcut reliance) against a computation written
here from the Obuchowski-Rockette formulas with Hillis's degrees of freedom: delta, p, ddf and the CI."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from medattn.evidence import stats as S


def paired_runs(seed: int = 7, r: int = 5, n: int = 200, delta: float = 0.03, seed_sd: float = 0.005) -> np.ndarray:
    """(2r, n) per-image scores: the variant's r seeds, then the reference's. Every run shares each image's
    difficulty (a strong image effect), so variant and reference covary image by image."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0, 0.3, n)
    rows = [0.5 + image + effect + rng.normal(0, seed_sd) + rng.normal(0, 0.1, n)
            for effect in (delta, 0.0) for _ in range(r)]
    return np.array(rows)


def or_by_formula(values: np.ndarray, drop_cov3: bool = False) -> dict[str, float]:
    """OR-Hillis of two treatments x r readers (seeds) from the ANOVA of the run means (Hillis 2007): MS(T),
    MS(TxR), the image covariances Cov2 (same treatment, other reader) and Cov3 (other treatment, other
    reader), F = MS(T) / (MS(TxR) + r max(Cov2 - Cov3, 0)) on (1, ddf), ddf = den^2 / (MS(TxR)^2 / (r - 1))."""
    t, n = 2, values.shape[1]
    r = len(values) // t
    theta = values.mean(axis=1).reshape(t, r)
    grand = theta.mean()
    ms_t = r * ((theta.mean(axis=1) - grand) ** 2).sum() / (t - 1)
    resid = theta - theta.mean(axis=1, keepdims=True) - theta.mean(axis=0, keepdims=True) + grand
    ms_tr = (resid ** 2).sum() / ((t - 1) * (r - 1))
    centred = values - values.mean(axis=1, keepdims=True)

    def cov(a: int, b: int) -> float:  # the image-sampling covariance of two runs' means
        return float((centred[a] * centred[b]).sum() / (n - 1) / n)

    run = [(i, j) for i in range(t) for j in range(r)]  # (treatment, reader) of each row
    cov2 = np.mean([cov(a, b) for a, (ta, ja) in enumerate(run) for b, (tb, jb) in enumerate(run)
                    if ta == tb and ja != jb])
    cov3 = 0.0 if drop_cov3 else np.mean([cov(a, b) for a, (ta, ja) in enumerate(run)
                                          for b, (tb, jb) in enumerate(run) if ta != tb and ja != jb])
    den = ms_tr + r * max(cov2 - cov3, 0.0)
    ddf = den ** 2 / (ms_tr ** 2 / ((t - 1) * (r - 1)))
    delta = float(theta[0].mean() - theta[1].mean())
    half = sps.t.ppf(0.975, ddf) * np.sqrt(2 / r * den)
    return {"delta": delta, "p": float(sps.f.sf(ms_t / den, 1, ddf)), "ddf": float(ddf),
            "ci_low": delta - half, "ci_high": delta + half}


def test_compare_means_is_the_or_hillis_test_and_the_covariance_decides_the_verdict():
    values = paired_runs()
    got = S.compare_means(values)
    want = or_by_formula(values)
    assert got["test"] == "OR-Hillis (image covariance)"
    for key in ("delta", "p", "ddf", "ci_low", "ci_high"):
        assert got[key] == pytest.approx(want[key], rel=1e-9), key
    # the covariance between variant and reference is what makes the paired test powerful: without it the same
    # data give no significant difference
    assert want["p"] < 0.05 < or_by_formula(values, drop_cov3=True)["p"]


def test_compare_scores_pairs_images_by_id_and_seeds_by_value():
    values = paired_runs(seed=11, r=3, n=60, delta=0.05)
    ids = [f"img{i}" for i in range(60)]
    by_run = {}
    for row, (variant, seed) in zip(values, [("guided", s) for s in (4, 5, 6)] + [("none", s) for s in (4, 5, 6)]):
        order = np.random.default_rng(seed).permutation(60)  # each run lists its images in another order
        by_run[(variant, seed)] = {"energy_in_mask": {ids[i]: float(row[i]) for i in order}}
    by_run[("none", 9)] = {"energy_in_mask": {i: 0.0 for i in ids}}  # a seed the variant lacks: left out
    (row,) = S.compare_scores(by_run, "none", ["energy_in_mask"])
    want = or_by_formula(values)
    assert row["variant"] == "guided" and row["n_seeds"] == 3 and row["n_images"] == 60
    assert row["delta"] == pytest.approx(want["delta"]) and row["p"] == pytest.approx(want["p"])
    assert row["ddf"] == pytest.approx(want["ddf"])


def test_one_seed_is_the_paired_t_test_over_the_images():
    values = paired_runs(seed=3, r=1, n=40)
    got = S.compare_means(values)
    want = sps.ttest_rel(values[0], values[1])
    assert got["test"] == "paired t (images)" and got["p"] == pytest.approx(want.pvalue)
    assert got["delta"] == pytest.approx(float((values[0] - values[1]).mean()))
