"""One declaration per metric, as plain data (reading it imports no numpy): name, direction, range, what it
says, whether it needs a decision threshold, has a bootstrap CI and can be compared between variants.

Everything that lists metrics derives from :data:`METRICS`: the schema's enums (what checkpoints, early
stopping, schedulers and ``compare`` accept), the training history's columns, the printed summary, the test
job's bootstrap intervals and the comparison table. :func:`metric_spec` finds the declaration of any name a
table or a config uses: ``roc_auc``, a history column (``val_roc_auc``), a prefixed name (``shifted.roc_auc``
for another split, ``saliency.energy_in_mask`` for a method's quality score) or a family member
(``tdr_at_0_2pct_fdr``).
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

from ..errors import UserError

HISTORY_SPLITS = ("train", "val")  # the history columns of a metric are <split>_<name>


@dataclass(frozen=True)
class MetricSpec:
    """The declaration of one metric: name, description, direction, range, and whether it needs a threshold, has a
    bootstrap CI, can be compared between variants and is a history column."""

    name: str
    description: str
    direction: str = "max"  # max: higher is better; min: lower is better; none: neither (a chance level)
    range: tuple[float | None, float | None] = (0.0, 1.0)  # None: unbounded on that side
    needs_threshold: bool = False  # moves with the decision threshold
    has_ci: bool = False  # the test job gives a percentile bootstrap interval
    comparable: bool = False  # a paired difference between variants is meaningful
    history: bool = False  # a column of every training history row (train_/val_), so it can be monitored
    shown: bool = False  # printed in the experiment summary
    source: str = "test"  # test: the classification metrics; loss; pad: presentation-attack; quality: explanations;
    # calibration, conformal, uncertainty, decision: the clinical outputs of the test job (medattn.evidence)
    # shortcut: reliance on a confound (the test job, per image)
    score: str | None = None  # quality: the explain.quality.scores entry that computes it
    alias_of: str | None = None  # the same number under another name
    chance: str | None = None  # the metric (of the same rows) that holds its chance level
    pattern: str | None = None  # a family of names (regular expression) instead of one

    @property
    def mode(self) -> str:
        """'min' or 'max': how a checkpoint or early stopping follows it (a metric without direction: max)."""
        return "min" if self.direction == "min" else "max"


_UNBOUNDED = (0.0, None)
_TEST = dict(needs_threshold=True, has_ci=True, comparable=True, history=True, shown=True)

METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("loss", "the training objective (the configured loss) on the split", "min", _UNBOUNDED,
               history=True, source="loss"),
    MetricSpec("accuracy", "fraction of images classified correctly", **_TEST),
    MetricSpec("balanced_accuracy", "mean recall over the classes present", **_TEST),
    MetricSpec("precision", "positive predictive value (class 1; macro mean for multi-class)", **_TEST),
    MetricSpec("recall", "sensitivity, true-positive rate (class 1; macro mean for multi-class)", **_TEST),
    MetricSpec("sensitivity", "the recall under its clinical name", needs_threshold=True, comparable=True,
               alias_of="recall"),
    MetricSpec("specificity", "true-negative rate (class 1 positive; one-vs-rest mean for multi-class)", **_TEST),
    MetricSpec("f1", "harmonic mean of precision and recall", **_TEST),
    MetricSpec("roc_auc", "area under the ROC curve (one-vs-rest macro mean for multi-class)", has_ci=True,
               comparable=True, history=True, shown=True),
    MetricSpec("pr_auc", "average precision, the area under the precision-recall curve (macro for multi-class)",
               has_ci=True, comparable=True, history=True),
    MetricSpec("brier", "mean squared distance of the class probabilities to the one-hot label", "min",
               (0.0, 2.0), history=True),
    MetricSpec("ece", "expected calibration error over 10 equal-width confidence bins", "min", history=True),
    MetricSpec("ece15", "expected calibration error, 15 equal-width bins (torchmetrics: P(class 1) for a binary "
               "task, the top-class confidence otherwise), of the probabilities after test.calibration", "min",
               has_ci=True, source="calibration"),
    MetricSpec("adaptive_ece", "expected calibration error over 15 equal-mass bins, after test.calibration", "min",
               has_ci=True, source="calibration"),
    MetricSpec("mce", "maximum calibration error: the largest gap of the 15 equal-width bins", "min", has_ci=True,
               source="calibration"),
    MetricSpec("nll", "negative log-likelihood of the true class (mean), after test.calibration", "min", _UNBOUNDED,
               has_ci=True, source="calibration"),
    MetricSpec("auc_change", "ROC AUC after test.calibration minus before it (0 for temperature scaling of a binary "
               "model)", "none", (-1.0, 1.0), source="calibration"),
    MetricSpec("coverage", "fraction of test images whose conformal prediction set holds the true class (target: "
               "1 - test.conformal.alpha)", "none", has_ci=True, source="conformal"),
    MetricSpec("class_coverage_min", "the lowest coverage of any class", has_ci=True, source="conformal"),
    MetricSpec("set_size", "mean number of classes in a conformal prediction set", "min", (0.0, None), has_ci=True,
               source="conformal"),
    MetricSpec("aurc", "area under the risk-coverage curve, images kept from the least uncertain (test.tta / "
               "test.mc_dropout predictive entropy)", "min", has_ci=True, source="uncertainty"),
    MetricSpec("aurc_max_probability", "area under the risk-coverage curve ranked by the plain model's top "
               "probability (the baseline of aurc)", "min", has_ci=True, source="uncertainty"),
    MetricSpec("sensitivity_at_specificity", "sensitivity at the ROC point reaching test.operating_points."
               "specificity (torchmetrics BinarySensitivityAtSpecificity)", has_ci=True, source="decision"),
    MetricSpec("specificity_at_sensitivity", "specificity at the ROC point reaching test.operating_points."
               "sensitivity (torchmetrics BinarySpecificityAtSensitivity)", has_ci=True, source="decision"),
    MetricSpec("apcer", "attacks accepted as bona fide (class 1 = attack)", "min", needs_threshold=True,
               source="pad"),
    MetricSpec("bpcer", "bona fide images rejected as attacks", "min", needs_threshold=True, source="pad"),
    MetricSpec("acer", "mean of APCER and BPCER", "min", needs_threshold=True, source="pad"),
    MetricSpec("tdr_at_fdr", "true-detection rate at the false-detection rate test.pad.fdr", source="pad",
               pattern=r"tdr_at_[0-9_]+pct_fdr"),
    MetricSpec("deletion_auc", "area under the deletion curve (the explained probability as the most relevant "
               "pixels are removed)", "min", comparable=True, source="quality", score="deletion"),
    MetricSpec("insertion_auc", "area under the insertion curve (the most relevant pixels put back into a "
               "blurred image)", comparable=True, source="quality", score="insertion"),
    MetricSpec("infidelity", "captum infidelity under Gaussian perturbations", "min", _UNBOUNDED, comparable=True,
               source="quality", score="infidelity"),
    MetricSpec("sensitivity_max", "captum sensitivity_max: the largest change of the map under small input "
               "perturbations", "min", _UNBOUNDED, comparable=True, source="quality", score="sensitivity"),
    MetricSpec("pointing_game", "fraction of images whose most relevant pixel lies in the mask", comparable=True,
               source="quality", score="localisation"),
    MetricSpec("energy_in_mask", "fraction of the relevance inside the mask (chance: mask_area)", comparable=True,
               source="quality", score="localisation", chance="mask_area"),
    MetricSpec("iou_top", "IoU with the mask of the most relevant pixels (explain.quality.top_percent)",
               comparable=True, source="quality", score="localisation"),
    MetricSpec("mask_area", "fraction of the image the mask covers: the chance level of energy_in_mask", "none",
               source="quality", score="localisation"),
    MetricSpec("energy_in_confound", "fraction of the relevance inside the confound mask (where a known shortcut "
               "lives: chance is confound_area)", "min", comparable=True, source="quality", score="localisation",
               chance="confound_area"),
    MetricSpec("confound_area", "fraction of the image the confound mask covers: the chance level of "
               "energy_in_confound", "none", source="quality", score="localisation"),
    MetricSpec("reliance", "mean over the test images of how far the confound moves the probability of the true "
               "class, |P(y | with it) - P(y | without it)| (shortcut.reliance; data sets that render both)",
               "min", comparable=True, source="shortcut"),
    MetricSpec("randomisation_spearman", "rank correlation of the map with the map of the model with randomised "
               "weights (high: the map hardly depends on what the model learnt)", "min", (-1.0, 1.0),
               comparable=True, source="quality", score="randomisation"),
    MetricSpec("randomisation_insensitive", "1 when randomisation_spearman is above "
               "explain.quality.randomisation_threshold", "min", source="quality", score="randomisation"),
)

# the multiple-comparison corrections compare offers (statsmodels multipletests names)
# McNemar's test for one seed per variant: exact binomial (then chi-square from 25 discordant pairs), or mid-p
MCNEMAR_TESTS = ("exact", "mid_p")
CORRECTIONS = ("holm", "bonferroni", "holm-sidak", "sidak", "simes-hochberg", "hommel", "fdr_bh", "fdr_by", "none")

_BY_NAME = {m.name: m for m in METRICS if m.pattern is None}
_FAMILIES = [m for m in METRICS if m.pattern is not None]


def metric_names(**where: Any) -> tuple[str, ...]:
    """Names of the declared metrics whose fields equal ``where``, in declaration order
    (``metric_names(has_ci=True)``, ``metric_names(history=True, source="test")``)."""
    return tuple(m.name for m in METRICS if all(getattr(m, k) == v for k, v in where.items()))


def comparable_metrics() -> tuple[str, ...]:
    """What ``compare.metrics`` accepts: the comparable metrics computed from the test predictions."""
    return metric_names(comparable=True, source="test")


_MISSING: Any = object()


def metric_spec(name: str, default: Any = _MISSING) -> MetricSpec:
    """The declaration of ``name``: plain (``roc_auc``), a history column (``val_roc_auc``), prefixed by a split
    or method and a dot (``shifted.roc_auc``, ``saliency.energy_in_mask``) or a family member
    (``tdr_at_0_2pct_fdr``). Unknown: ``default`` when given, else a UserError with a did-you-mean."""
    base = name.rpartition(".")[2]
    found = _BY_NAME.get(base)
    if found is None and "." not in name:
        split, _, rest = base.partition("_")
        if split in HISTORY_SPLITS and rest in _BY_NAME and _BY_NAME[rest].history:
            found = _BY_NAME[rest]
    if found is None:
        found = next((m for m in _FAMILIES if re.fullmatch(m.pattern or "", base)), None)
    if found is not None:
        return found
    if default is not _MISSING:
        return default
    close = difflib.get_close_matches(base, list(_BY_NAME), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UserError(f"unknown metric {name!r}{hint}")


def metric_subgroup(name: str) -> tuple[str, str] | None:
    """(column, value) of a metric of one subgroup of the test images (``site=north.roc_auc`` -> ("site",
    "north"); the value may hold dots), or None for any other name."""
    prefix = name.rpartition(".")[0]
    column, sep, value = prefix.partition("=")
    return (column, value) if sep else None


def mode_of(metric: str) -> str:
    """'min' for losses, calibration and error rates, 'max' for the rest (``val_f1`` -> max); unknown: max."""
    spec = metric_spec(metric, None)
    return spec.mode if spec is not None else "max"
