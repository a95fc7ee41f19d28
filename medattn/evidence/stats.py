"""Statistics for repeated runs: the spread across seeds, and paired comparisons of variants on the same test images.

**Across seeds** (:func:`aggregate`): per variant and metric, the mean, the sample sd, the t-based 95% CI of the
mean across seeds and n (the seeds with a finite value). It says how much training randomness moves a metric.

**Between variants** (:func:`compare`): each variant is compared with its reference on the test images both were
scored on (paired by image id). ``delta`` is always variant minus reference, and it is the difference of the
*mean over seeds* of the metric, so it equals the difference of the means in the aggregate table.

How the seeds are combined. Seeds are treated as a random factor (training randomness) and images as another
(the test set is a sample), as in multi-reader multi-case ROC analysis, where seeds play the readers and images
the cases. With one seed per variant the classic paired tests apply: DeLong for ROC-AUC, McNemar for accuracy,
a paired bootstrap for any other metric. With several seeds the Obuchowski-Rockette test with Hillis's
denominator degrees of freedom (:func:`or_hillis`) is used: its variance of delta adds how much the per-seed
delta varies across seeds (seed s of the variant is paired with seed s of the reference) to the part of the
image-sampling variance that the seeds share (from the covariance of all runs' estimates on the shared images:
DeLong's for ROC-AUC, the binomial one for accuracy, a paired bootstrap's for anything else); the rest of the
image noise already shows in the seed-to-seed spread. With identical runs per variant it reduces to DeLong's
test for ROC-AUC, but for accuracy to a paired Wald z test (not McNemar) and for other metrics to a z test with
the bootstrap variance (not the percentile bootstrap). We do not average each image's score across seeds first: that tests the seed
ensemble, a different model from any one run, whose metric differs from the aggregate table's means and which
favours variants that vary more between seeds. We do not combine per-seed p-values either (Fisher, Stouffer):
the seeds share the test images, so their p-values are dependent and those methods would be anti-conservative.
With three seeds the seed term has two degrees of freedom, so a real but small difference may not reach
significance: "no significant difference" is then the honest answer.

When the seeds tested other images (a data set drawn anew per seed: the ``test_sets`` fingerprints differ, or
the same ids carry other labels), the seeds are independent replications, each with its own test set: there is
no image covariance across seeds, and the OR-Hillis test becomes the paired t-test of the per-seed deltas
(r - 1 degrees of freedom), which then holds both sources of noise.

When the items carry a patient group and some group holds several images, the images are not independent:
every metric then uses the paired bootstrap resampling whole groups (DeLong and McNemar assume independent
images).

Explanation-quality scores (``saliency.energy_in_mask``: a method's score, averaged over the images) are compared
image by image too (:func:`compare_scores`): one seed, the paired t-test over the images; several, OR-Hillis with
the image covariance of the runs' means. A split's metrics (``shifted.roc_auc``) are compared like the test split's,
on that split's predictions.

The reference (:func:`reference_pairs`): a variant name (everyone against it), ``none`` (each variant against
the variant without attention, ``model.attention.name: none``, that shares the most matrix choices with it, so
in a backbone x attention grid each backbone is compared with its own baseline; the first variant when no variant
is without attention), or nothing (the first variant). The adjusted p-values correct over the whole table
(every variant and metric): one family, so choosing the metric after the fact is guarded against too.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

from ..errors import UserError
from .metric_specs import CORRECTIONS, MCNEMAR_TESTS, comparable_metrics
from .metrics import bootstrap_weights, positive_scores, weighted_metric

COLUMNS = ("variant", "reference", "metric", "delta", "ci_low", "ci_high", "p", "p_adjusted", "test", "ddf",
           "n_seeds", "n_images")
NOT_AGGREGATED = frozenset({"seed", "n", "n_positive"})  # counts and ids, not metrics
MCNEMAR_EXACT_BELOW = 25  # discordant pairs under which McNemar uses the exact binomial test
NAN = float("nan")


# --- across seeds --------------------------------------------------------------------------------------------------
def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """mean, sample sd, the t-based CI of the mean and n of the finite values (sd and CI NaN below two)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    n = len(v)
    if n == 0:
        return {"mean": NAN, "sd": NAN, "ci_low": NAN, "ci_high": NAN, "n": 0}
    mean = float(v.mean())
    if n < 2:
        return {"mean": mean, "sd": NAN, "ci_low": NAN, "ci_high": NAN, "n": 1}
    sd = float(v.std(ddof=1))
    half = float(sps.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half, "n": n}


def _number(value: Any) -> float | None:
    """A float from a number or a numeric string (as read from a CSV); None for anything else."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


def _numeric_columns(rows: Sequence[Mapping[str, Any]], exclude: set[str]) -> list[str]:
    """Columns, in order of appearance, whose non-empty values are all numbers."""
    names = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in exclude]
    present = lambda v: v is not None and v != ""  # noqa: E731
    return [k for k in names if any(present(r.get(k)) for r in rows)
            and all(_number(r[k]) is not None for r in rows if present(r.get(k)))]


def aggregate(rows: Sequence[Mapping[str, Any]], by: Sequence[str] = ("variant",),
              metrics: Sequence[str] | None = None, confidence: float = 0.95) -> list[dict[str, Any]]:
    """One row per group of ``by`` and metric: the ``by`` values, metric, mean, sd, ci_low, ci_high, n.

    ``rows`` are per-run rows (one per variant and seed, e.g. the summary's or the quality table's, numbers or
    numeric strings); ``metrics`` defaults to every numeric column except ``by`` and seed, n, n_positive.
    """
    by = tuple(by)
    names = list(metrics) if metrics is not None else _numeric_columns(rows, set(by) | NOT_AGGREGATED)
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in by), []).append(r)
    out = []
    for key, members in groups.items():
        for m in names:
            values = [_number(r.get(m)) for r in members]
            stats = mean_ci([v for v in values if v is not None], confidence)
            if stats["n"]:
                out.append({**dict(zip(by, key)), "metric": m, **stats})
    return out


# --- the paired tests ----------------------------------------------------------------------------------------------
def delong(labels: Sequence[int], scores: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """ROC-AUCs of k score vectors on the same images and their covariance matrix (DeLong et al. 1988).

    Hand-written (scikit-learn, scipy and statsmodels have no DeLong), by the fast midrank algorithm of Sun and
    Xu (2014), O(k n log n): for each positive, V10 = the fraction of negatives scored below it (ties count one
    half); for each negative, V01 = the fraction of positives scored above it; AUC = mean V10 = mean V01 and
    cov = S10 / m + S01 / n, S the sample covariances of the components over the m positives and n negatives.
    The covariance is NaN with fewer than two positives or negatives.
    """
    y = np.asarray(labels).astype(int)
    s = np.atleast_2d(np.asarray(scores, dtype=float))
    pos, neg = s[:, y == 1], s[:, y != 1]
    m, n = pos.shape[1], neg.shape[1]
    k = len(s)
    if m == 0 or n == 0:
        return np.full(k, NAN), np.full((k, k), NAN)
    tx = sps.rankdata(pos, axis=1)  # midranks among the positives
    ty = sps.rankdata(neg, axis=1)
    tz = sps.rankdata(np.concatenate([pos, neg], axis=1), axis=1)  # midranks among all
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    v10 = (tz[:, :m] - tx) / n  # negatives below each positive (ties: one half)
    v01 = 1 - (tz[:, m:] - ty) / m  # positives above each negative
    if m < 2 or n < 2:
        return aucs, np.full((k, k), NAN)
    return aucs, np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n


def _z_result(delta: float, var: float, confidence: float) -> dict[str, float]:
    """Normal-theory CI and two-sided p of a difference with the given variance."""
    if not (math.isfinite(delta) and math.isfinite(var)):
        return {"delta": delta, "ci_low": NAN, "ci_high": NAN, "p": NAN}
    se = math.sqrt(max(var, 0.0))
    if se == 0:
        return {"delta": delta, "ci_low": delta, "ci_high": delta, "p": 1.0 if delta == 0 else NAN}
    q = float(sps.norm.ppf((1 + confidence) / 2))
    return {"delta": delta, "ci_low": delta - q * se, "ci_high": delta + q * se,
            "p": float(2 * sps.norm.sf(abs(delta) / se))}


def delong_test(labels: Sequence[int], scores_a: Sequence[float], scores_b: Sequence[float],
                confidence: float = 0.95) -> dict[str, float]:
    """DeLong's paired test of two ROC-AUCs: delta = AUC(a) - AUC(b), its normal CI and the two-sided p."""
    aucs, cov = delong(labels, [scores_a, scores_b])
    return _z_result(float(aucs[0] - aucs[1]), float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]), confidence)


def mcnemar_test(correct_a: Sequence[bool], correct_b: Sequence[bool], confidence: float = 0.95,
                 method: str = "exact") -> dict[str, Any]:
    """McNemar's test of paired accuracies: delta = acc(a) - acc(b), its CI, p and the test used.

    ``exact`` (statsmodels): the exact binomial test below ``MCNEMAR_EXACT_BELOW`` discordant pairs, else the
    chi-square statistic without the continuity correction (which only makes the test conservative; Fagerland
    et al. 2013). ``mid_p``: the mid-p binomial test at every count, the exact two-sided p less the probability
    of the observed split, 2 P(X <= k) - P(X = k) with X ~ Binomial(discordant, 1/2) and k the smaller
    discordant count (hand-written: statsmodels and scipy have no mid-p); less conservative than the exact test.
    The CI is Bonett and Price's (2012) adjusted Wald interval for a paired difference of proportions
    (hand-written: statsmodels has none for matched pairs), one count added to each discordant cell.
    """
    from statsmodels.stats.contingency_tables import mcnemar

    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    n = len(a)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    p12, p21 = (only_a + 1) / (n + 2), (only_b + 1) / (n + 2)
    half = float(sps.norm.ppf((1 + confidence) / 2)) * math.sqrt((p12 + p21 - (p12 - p21) ** 2) / (n + 2))
    out = {"delta": (only_a - only_b) / n if n else NAN, "ci_low": max(-1.0, p12 - p21 - half),
           "ci_high": min(1.0, p12 - p21 + half)}
    if method == "mid_p":
        k, discordant = min(only_a, only_b), only_a + only_b
        mid = 2 * sps.binom.cdf(k, discordant, 0.5) - sps.binom.pmf(k, discordant, 0.5)
        return {**out, "p": float(min(1.0, mid)), "test": "McNemar mid-p"}
    exact = only_a + only_b < MCNEMAR_EXACT_BELOW
    result = mcnemar([[int((a & b).sum()), only_a], [only_b, int((~a & ~b).sum())]], exact=exact, correction=False)
    return {**out, "p": float(result.pvalue), "test": "McNemar exact" if exact else "McNemar chi-square"}


def paired_bootstrap(statistic: Callable[[np.ndarray], np.ndarray], n: int, groups: Sequence[Any] | None = None,
                     resamples: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict[str, float]:
    """Percentile bootstrap of a paired difference: ``statistic(weights (R, n)) -> (R,)`` is the difference
    (variant minus reference) under each row of image multiplicities; both runs see the same resample.

    delta is the statistic with every weight one; p (two-sided) inverts the percentile interval:
    2 min(P*(d <= 0), P*(d >= 0)) with the usual +1 correction. Resamples where it is undefined are dropped.
    """
    delta = float(statistic(np.ones((1, n)))[0])
    d = np.asarray(statistic(bootstrap_weights(n, groups, resamples, seed)), dtype=float)
    d = d[np.isfinite(d)]
    if not math.isfinite(delta) or len(d) < 2:
        return {"delta": delta, "ci_low": NAN, "ci_high": NAN, "p": NAN}
    alpha = (1 - confidence) / 2
    tail = min((d <= 0).sum(), (d >= 0).sum())
    return {"delta": delta, "ci_low": float(np.quantile(d, alpha)), "ci_high": float(np.quantile(d, 1 - alpha)),
            "p": float(min(1.0, 2 * (tail + 1) / (len(d) + 1)))}


def or_hillis(theta_variant: Sequence[float], theta_reference: Sequence[float], cov: np.ndarray,
              confidence: float = 0.95) -> dict[str, float]:
    """Obuchowski-Rockette test of two variants over r paired seeds, Hillis's denominator df (2007, 2008).

    ``theta_*`` (r,): a metric per seed; ``cov`` (2r, 2r): the image-sampling covariance of the estimates (the
    variant's seeds first). With d_s the per-seed deltas, MS(TxR) = var(d) / 2, and the image term is
    r max(Cov2 - Cov3, 0) (Cov2: same variant, other seed; Cov3: other variant, other seed). Then
    se^2 = (2 / r) (MS(TxR) + image term), ddf = (MS(TxR) + image term)^2 / (MS(TxR)^2 / (r - 1)), and
    t = delta / se on ddf degrees of freedom (infinite, a z test, when every seed gives the same delta); the
    result carries ddf. Hand-written: no Python library has the OR-Hillis method.
    """
    tv, tr = np.asarray(theta_variant, dtype=float), np.asarray(theta_reference, dtype=float)
    r = len(tv)
    d = tv - tr
    delta = float(d.mean())
    cov = np.asarray(cov, dtype=float)
    if r < 2 or not np.all(np.isfinite(d)) or not np.all(np.isfinite(cov)):
        return {"delta": delta, "ci_low": NAN, "ci_high": NAN, "p": NAN, "ddf": NAN}
    off = ~np.eye(r, dtype=bool)
    cov2 = float(np.mean([cov[:r, :r][off], cov[r:, r:][off]]))
    cov3 = float(np.mean([cov[:r, r:][off], cov[r:, :r][off]]))
    ms_tr = float(d.var(ddof=1)) / 2
    denominator = ms_tr + r * max(cov2 - cov3, 0.0)
    if denominator <= 0:
        return {"delta": delta, "ci_low": delta, "ci_high": delta, "p": 1.0 if delta == 0 else NAN, "ddf": NAN}
    se = math.sqrt(2 / r * denominator)
    ddf = denominator ** 2 / (ms_tr ** 2 / (r - 1)) if ms_tr > 0 else math.inf
    q = float(sps.t.ppf((1 + confidence) / 2, ddf))
    return {"delta": delta, "ci_low": delta - q * se, "ci_high": delta + q * se,
            "p": float(2 * sps.t.sf(abs(delta) / se, ddf)), "ddf": float(ddf)}


def adjust(pvalues: Sequence[float], method: str = "holm") -> np.ndarray:
    """p-values adjusted for multiple comparisons (statsmodels multipletests); NaN stays NaN, ``none`` keeps p."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=float)
    if method not in CORRECTIONS:
        raise UserError(f"compare.correction: {method!r} is not one of {', '.join(CORRECTIONS)}")
    out = p.copy()
    ok = np.isfinite(p)
    if method != "none" and ok.any():
        out[ok] = multipletests(p[ok], method=method)[1]
    return out


# --- predictions and the comparison table --------------------------------------------------------------------------
@dataclass(frozen=True)
class Predictions:
    """One run's test predictions: ids, labels, predicted classes, scores (N,) P(class 1) or (N, K), groups."""

    ids: np.ndarray
    labels: np.ndarray
    predicted: np.ndarray
    scores: np.ndarray
    groups: np.ndarray | None = None


def as_predictions(value: Predictions | Mapping[str, Any], where: str = "predictions") -> Predictions:
    """Predictions from a mapping with ids, labels, scores, predictions (or predicted) and optional groups."""
    if isinstance(value, Predictions):
        return value
    try:
        predicted = value["predictions"] if "predictions" in value else value["predicted"]
        out = Predictions(np.asarray(value["ids"]).astype(str), np.asarray(value["labels"]).astype(int),
                          np.asarray(predicted).astype(int), np.asarray(value["scores"], dtype=float),
                          None if value.get("groups") is None else np.asarray(value["groups"]).astype(str))
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{where}: needs ids, labels, scores and predictions ({e})") from None
    if not len(out.ids) == len(out.labels) == len(out.predicted) == len(out.scores):
        raise UserError(f"{where}: ids, labels, predictions and scores differ in length")
    return out


def predictions_from_rows(rows: Sequence[Mapping[str, str]], where: str = "predictions") -> Predictions:
    """Predictions from the rows of a test job's predictions CSV: id, [group], label, prediction, score or
    score_<class> columns (P(class 1) of a sigmoid model, or one column per class)."""
    if not rows:
        raise UserError(f"{where}: no predictions")
    cols = [c for c in rows[0] if c == "score" or c.startswith("score_")]
    try:
        scores = np.array([[float(r[c]) for c in cols] for r in rows])
        return Predictions(np.array([r["id"] for r in rows]), np.array([int(r["label"]) for r in rows]),
                           np.array([int(r["prediction"]) for r in rows]),
                           scores[:, 0] if cols == ["score"] else scores,
                           np.array([r["group"] for r in rows]) if "group" in rows[0] else None)
    except (KeyError, ValueError) as e:
        raise UserError(f"{where}: needs id, label, prediction and score columns ({e})") from None


def reference_pairs(reference: str | None, variants: Sequence[str], attention: Mapping[str, str] | None = None,
                    choices: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, str]:
    """{variant: its reference variant} for every variant compared (see the module docstring).

    ``attention``: each variant's attention component name; ``choices``: each variant's matrix choices
    ({dotted key: value}), used to pair a variant with the attention-free variant sharing most of them.
    """
    variants = list(variants)
    if not variants:
        return {}
    if reference in variants:
        return {v: reference for v in variants if v != reference}
    if reference not in (None, "none", "first"):
        raise UserError(f"compare.reference: {reference!r} is neither a variant ({', '.join(variants)}) nor none")
    plain = [v for v in variants if (attention or {}).get(v) == "none"] if reference == "none" else []
    if not plain:
        return {v: variants[0] for v in variants[1:]}
    choices = choices or {}

    def shared(v: str, w: str) -> int:
        a, b = choices.get(v, {}), choices.get(w, {})
        return sum(1 for key in a if not key.startswith("model.attention") and key in b and a[key] == b[key])

    return {v: max(plain, key=lambda w: (shared(v, w), -plain.index(w))) for v in variants if v not in plain}


def _aligned(runs: list[Predictions], where: str) -> list[Predictions]:
    """The runs restricted to the images all of them scored, in the first run's order; labels must agree."""
    common = set(runs[0].ids).intersection(*(set(r.ids) for r in runs[1:]))
    if not common:
        raise UserError(f"{where}: the runs share no test image ids")
    out = []
    for r in runs:
        pos = {i: j for j, i in enumerate(r.ids)}
        idx = np.array([pos[i] for i in runs[0].ids if i in common])
        out.append(Predictions(r.ids[idx], r.labels[idx], r.predicted[idx], r.scores[idx],
                               None if r.groups is None else r.groups[idx]))
    if any(not np.array_equal(r.labels, out[0].labels) for r in out[1:]):
        raise UserError(f"{where}: the runs give different labels for the same image ids")
    return out


def compare_metric(metric: str, runs: Sequence[Predictions], resamples: int = 2000, seed: int = 0,
                   confidence: float = 0.95, mcnemar: str = "exact") -> dict[str, Any]:
    """delta, ci_low, ci_high, p, test (and ddf for OR-Hillis) of one metric: ``runs`` are aligned, the variant's r
    seeds then the reference's r seeds, seed s of one paired with seed s of the other; ``mcnemar``: exact or
    mid_p (see :func:`mcnemar_test`)."""
    r = len(runs) // 2
    labels = runs[0].labels
    groups = next((x.groups for x in runs if x.groups is not None), None)
    clustered = groups is not None and len(np.unique(groups)) < len(groups)
    positives = [positive_scores(x.scores) for x in runs]
    if metric == "roc_auc" and not clustered and all(p is not None for p in positives):
        aucs, cov = delong((labels == 1).astype(int), positives)
        if r == 1:
            return {**_z_result(float(aucs[0] - aucs[1]), float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]),
                                confidence), "test": "DeLong"}
        return {**or_hillis(aucs[:r], aucs[r:], cov, confidence), "test": "OR-Hillis (DeLong covariance)"}
    if metric == "accuracy" and not clustered:
        correct = np.stack([x.predicted == labels for x in runs])
        if r == 1:
            return mcnemar_test(correct[0], correct[1], confidence, mcnemar)
        return {**or_hillis(correct[:r].mean(axis=1), correct[r:].mean(axis=1),
                            np.atleast_2d(np.cov(correct.astype(float))) / len(labels), confidence),
                "test": "OR-Hillis (binomial covariance)"}
    unit = "patient group" if clustered else "image"
    weigh = lambda w: np.stack([weighted_metric(metric, labels, x.predicted, x.scores, w) for x in runs])  # noqa: E731
    if r == 1:
        return {**paired_bootstrap(lambda w: np.subtract(*weigh(w)), len(labels), groups if clustered else None,
                                   resamples, seed, confidence), "test": f"paired bootstrap (by {unit})"}
    values = weigh(bootstrap_weights(len(labels), groups if clustered else None, resamples, seed))
    values = values[:, np.all(np.isfinite(values), axis=0)]
    theta = weigh(np.ones((1, len(labels))))[:, 0]
    return {**or_hillis(theta[:r], theta[r:], np.cov(values), confidence),
            "test": f"OR-Hillis (bootstrap covariance by {unit})"}


def compare_across_test_sets(metric: str, per_seed: Sequence[Sequence[Predictions]],
                             confidence: float = 0.95) -> dict[str, Any]:
    """delta, CI, p and test of one metric when each seed tested other images: ``per_seed`` holds the aligned
    (variant, reference) runs of each seed. The seeds are then independent replications, so the OR-Hillis
    test has no image covariance across seeds and is the paired t-test of the per-seed deltas (r - 1 df)."""
    theta = np.array([[float(weighted_metric(metric, x.labels, x.predicted, x.scores, np.ones((1, len(x.labels))))[0])
                       for x in pair] for pair in per_seed])  # (r, 2)
    r = len(theta)
    return {**or_hillis(theta[:, 0], theta[:, 1], np.zeros((2 * r, 2 * r)), confidence),
            "test": "paired t over seeds (other test images per seed)"}


def _labels_agree(runs: Sequence[Predictions]) -> bool:
    """Whether the runs share image ids and give every shared id the same label."""
    seen: dict[str, int] = dict(zip(runs[0].ids, runs[0].labels.tolist()))
    common = set(seen)
    for r in runs[1:]:
        mine = dict(zip(r.ids, r.labels.tolist()))
        common &= set(mine)
        if any(seen[i] != mine[i] for i in common):
            return False
    return bool(common)


def _pair_rows(variant: str, ref: str, runs: Mapping[tuple[str, Any], Predictions], metrics: Sequence[str],
               test_sets: Mapping[tuple[str, Any], str | None], resamples: int, seed: int,
               confidence: float, mcnemar: str) -> list[dict[str, Any]]:
    """The rows of one variant against its reference: every metric, seeds paired by value."""
    seeds = sorted({s for v, s in runs if v == variant} & {s for v, s in runs if v == ref}, key=lambda s: (s is None, s))
    if not seeds:
        raise UserError(f"compare: {variant} and {ref} share no seed")
    for s in seeds:
        a, b = test_sets.get((variant, s)), test_sets.get((ref, s))
        if a and b and a != b:
            raise UserError(f"compare: {variant} and {ref} (seed {s}) were tested on different data ({a} vs {b})")
    keys = [(variant, s) for s in seeds] + [(ref, s) for s in seeds]
    tags = [test_sets.get(k) for k in keys]
    shared = len(set(tags)) == 1 if all(tags) else _labels_agree([runs[k] for k in keys])
    out = []
    if shared:
        aligned = _aligned([runs[k] for k in keys], f"compare {variant} with {ref}")
        results = [compare_metric(m, aligned, resamples, seed, confidence, mcnemar) for m in metrics]
        n_images = len(aligned[0].ids)
    else:
        per_seed = [_aligned([runs[(variant, s)], runs[(ref, s)]], f"compare {variant} with {ref} (seed {s})")
                    for s in seeds]
        results = [compare_across_test_sets(m, per_seed, confidence) for m in metrics]
        n_images = min(len(p[0].ids) for p in per_seed)
    one_class = all(len(np.unique(runs[k].labels)) < 2 for k in keys)  # e.g. a subgroup of positives alone
    for metric, result in zip(metrics, results):
        if one_class and not math.isfinite(result["delta"]):
            result = {**result, "test": "undefined: every image compared is of one class"}
        out.append({"variant": variant, "reference": ref, "metric": metric, **result, "n_seeds": len(seeds),
                    "n_images": n_images})
    return out


def compare(pred_by_run: Mapping[tuple[str, int | None], Predictions | Mapping[str, Any]],
            reference: str | Mapping[str, str] | None = None, metrics: Sequence[str] = ("roc_auc", "accuracy"),
            correction: str = "holm", *, attention: Mapping[str, str] | None = None,
            choices: Mapping[str, Mapping[str, Any]] | None = None,
            test_sets: Mapping[tuple[str, int | None], str | None] | None = None, resamples: int = 2000,
            seed: int = 0, confidence: float = 0.95, mcnemar: str = "exact") -> list[dict[str, Any]]:
    """Rows (``COLUMNS``) comparing each variant with its reference on every metric, on the shared test images.

    ``pred_by_run``: {(variant, seed or None): predictions} (:class:`Predictions` or a mapping, see
    :func:`as_predictions`); ``reference``: a variant name, ``none``, None, or an explicit {variant: reference};
    ``attention`` and ``choices``: see :func:`reference_pairs`; ``test_sets``: {(variant, seed): a fingerprint of
    the test data} (e.g. the manifest's data fingerprint), which tells whether the seeds tested the same images.
    Seeds are paired by value (the seeds both variants ran); n_images counts the images of each comparison (the
    fewest of a seed when the seeds tested other images); ddf is the denominator degrees of freedom of the
    OR-Hillis and paired-t rows, empty for the others. ``mcnemar``: exact or mid_p (see :func:`mcnemar_test`).
    See the module docstring for the tests.
    """
    bad = [m for m in metrics if m not in comparable_metrics()]
    if bad:
        raise UserError(f"compare.metrics: {', '.join(map(repr, bad))} not supported "
                        f"(choose from {', '.join(comparable_metrics())})")
    if correction not in CORRECTIONS:
        raise UserError(f"compare.correction: {correction!r} is not one of {', '.join(CORRECTIONS)}")
    if mcnemar not in MCNEMAR_TESTS:
        raise UserError(f"compare.mcnemar: {mcnemar!r} is not one of {', '.join(MCNEMAR_TESTS)}")
    runs = {key: as_predictions(v, f"predictions of {key[0]}") for key, v in pred_by_run.items()}
    variants = list(dict.fromkeys(v for v, _ in runs))
    pairs = dict(reference) if isinstance(reference, Mapping) else reference_pairs(reference, variants, attention,
                                                                                   choices)
    rows = []
    for variant, ref in pairs.items():
        if variant not in variants or ref not in variants:
            raise UserError(f"compare.reference: no predictions for {variant if variant not in variants else ref!r}")
        rows += _pair_rows(variant, ref, runs, metrics, test_sets or {}, resamples, seed, confidence, mcnemar)
    for row, p in zip(rows, adjust([row["p"] for row in rows], correction)):
        row["p_adjusted"] = float(p)
    return [{c: row.get(c, "") for c in COLUMNS} for row in rows]


# --- per-image scores (explanation quality) ------------------------------------------------------------------------
def compare_means(values: np.ndarray, confidence: float = 0.95) -> dict[str, Any]:
    """delta, CI, p and test of a per-image score whose metric is its mean over the images: ``values`` (2r, n),
    the variant's r seeds then the reference's, aligned image by image. One seed: the paired t-test over the
    images; several: OR-Hillis with the image covariance of the runs' means (the sample covariance / n)."""
    values = np.asarray(values, dtype=float)
    r, n = len(values) // 2, values.shape[1]
    if n < 2:
        return {"delta": float(values[:r].mean() - values[r:].mean()) if n else NAN, "ci_low": NAN, "ci_high": NAN,
                "p": NAN, "test": "too few images"}
    if r == 1:
        d = values[0] - values[1]
        delta, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(n))
        if se == 0:
            return {"delta": delta, "ci_low": delta, "ci_high": delta, "p": 1.0 if delta == 0 else 0.0,
                    "test": "paired t (images)"}
        q = float(sps.t.ppf((1 + confidence) / 2, n - 1))
        return {"delta": delta, "ci_low": delta - q * se, "ci_high": delta + q * se,
                "p": float(2 * sps.t.sf(abs(delta) / se, n - 1)), "test": "paired t (images)", "ddf": n - 1}
    theta = values.mean(axis=1)
    return {**or_hillis(theta[:r], theta[r:], np.cov(values) / n, confidence), "test": "OR-Hillis (image covariance)"}


def compare_scores(by_run: Mapping[tuple[str, Any], Mapping[str, Mapping[str, float]]],
                   reference: str | Mapping[str, str] | None, metrics: Sequence[str], *,
                   attention: Mapping[str, str] | None = None, choices: Mapping[str, Mapping[str, Any]] | None = None,
                   confidence: float = 0.95) -> list[dict[str, Any]]:
    """Rows (``COLUMNS``, ``p_adjusted`` = ``p``: the caller corrects over its whole table) comparing per-image
    scores: ``by_run`` {(variant, seed): {metric: {image id: value}}}; each metric on the images every run of the
    pair scored (finite values), seeds paired by value."""
    variants = list(dict.fromkeys(v for v, _ in by_run))
    pairs = dict(reference) if isinstance(reference, Mapping) else reference_pairs(reference, variants, attention,
                                                                                   choices)
    rows = []
    for variant, ref in pairs.items():
        seeds = sorted({s for v, s in by_run if v == variant} & {s for v, s in by_run if v == ref},
                       key=lambda s: (s is None, s))
        if not seeds:
            raise UserError(f"compare: no per-image scores shared by {variant} and {ref}")
        keys = [(variant, s) for s in seeds] + [(ref, s) for s in seeds]
        for metric in metrics:
            maps = [by_run[k].get(metric, {}) for k in keys]
            ids = [i for i in maps[0] if all(np.isfinite(m.get(i, NAN)) for m in maps)]
            result = compare_means(np.array([[m[i] for i in ids] for m in maps]).reshape(len(keys), len(ids)),
                                   confidence)
            rows.append({"variant": variant, "reference": ref, "metric": metric, **result, "p_adjusted": result["p"],
                         "n_seeds": len(seeds), "n_images": len(ids)})
    return [{c: row.get(c, "") for c in COLUMNS} for row in rows]
