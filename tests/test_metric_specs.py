"""One declaration per metric: lookups by every name a table or config uses, and every list of metrics (schema
enums, history columns, summary, bootstrap intervals, compare) derived from the declarations."""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from medattn.errors import UserError
from medattn.evidence.metric_specs import METRICS, comparable_metrics, metric_names, metric_spec, mode_of


def test_lookups_by_plain_history_prefixed_and_family_names():
    assert metric_spec("roc_auc").name == "roc_auc" and metric_spec("roc_auc").comparable
    assert metric_spec("val_roc_auc") is metric_spec("roc_auc")
    assert metric_spec("train_loss").direction == "min" and metric_spec("train_loss").range == (0.0, None)
    assert metric_spec("shifted.roc_auc") is metric_spec("roc_auc")  # another split of the same metric
    quality = metric_spec("saliency.energy_in_mask")
    assert (quality.source, quality.direction, quality.score, quality.comparable) == ("quality", "max",
                                                                                      "localisation", True)
    assert metric_spec("gradcam.deletion_auc").direction == "min"
    assert metric_spec("mask_area").direction == "none" and not metric_spec("mask_area").comparable
    assert metric_spec("tdr_at_0_2pct_fdr").name == "tdr_at_fdr"
    assert metric_spec("sensitivity").alias_of == "recall" and metric_spec("recall").needs_threshold
    assert not metric_spec("roc_auc").needs_threshold and metric_spec("f1").has_ci
    with pytest.raises(UserError, match=r"unknown metric 'roc_acu' \(did you mean 'roc_auc'\?\)"):
        metric_spec("roc_acu")
    with pytest.raises(UserError, match="unknown metric 'val_sensitivity'"):
        metric_spec("val_sensitivity")  # not a history column
    assert metric_spec("nonsense", None) is None
    assert [mode_of(m) for m in ("val_loss", "train_ece", "val_f1", "brier", "apcer", "whatever")] == [
        "min", "min", "max", "min", "min", "max"]


def test_declarations_are_complete_and_consistent():
    names = [m.name for m in METRICS]
    assert len(names) == len(set(names))
    for m in METRICS:
        assert m.direction in ("max", "min", "none") and m.description, m.name
        assert m.source in ("test", "loss", "pad", "quality", "shortcut", "calibration", "conformal", "uncertainty",
                            "decision"), m.name
        assert m.alias_of is None or metric_spec(m.alias_of).alias_of is None
        assert (m.score is not None) == (m.source == "quality"), m.name
        low, high = m.range
        assert low is None or high is None or low < high
    # every comparable test metric has a resampled form, so compare and the intervals can bootstrap it
    from medattn.evidence import metrics as M

    y = np.array([0, 1, 0, 1, 1, 0])
    s = np.array([0.2, 0.7, 0.6, 0.9, 0.4, 0.1])
    for name in set(comparable_metrics()) | set(metric_names(has_ci=True, source="test")):
        assert np.isfinite(M.weighted_metric(name, y, M.predictions(s), s, np.ones((1, 6)))[0]), name


def test_the_schema_enums_history_summary_intervals_and_compare_derive_from_the_declarations():
    from medattn.config.schema import COMPARE
    from medattn.evidence import stats
    from medattn.jobs.train import MONITOR
    from medattn.runs import summary
    from medattn.train import trainer

    items = COMPARE["properties"]["metrics"]["items"]
    plain, prefixed = items["else"], items["then"]
    assert plain["enum"] == list(comparable_metrics())
    assert re.fullmatch(prefixed["pattern"], "shifted.roc_auc") and re.fullmatch(prefixed["pattern"],
                                                                                 "saliency.energy_in_mask")
    assert not re.fullmatch(prefixed["pattern"], "shifted.brier") and not re.fullmatch(prefixed["pattern"],
                                                                                       "saliency.mask_area")
    assert re.fullmatch(prefixed["pattern"], "shortcut.reliance")  # only under the name the test job gives it
    assert not re.fullmatch(prefixed["pattern"], "saliency.reliance")
    assert "pr_auc" in comparable_metrics() and "brier" not in comparable_metrics()
    monitorable = [m.name for m in METRICS if m.history]
    assert all(re.fullmatch(MONITOR, f"{split}_{m}") for m in monitorable for split in ("train", "val"))
    assert not re.fullmatch(MONITOR, "val_sensitivity") and not re.fullmatch(MONITOR, "val_deletion_auc")
    assert trainer.ROW_METRICS == tuple(m for m in monitorable if m != "loss")
    assert summary.SHOWN["summary"][4:] == metric_names(shown=True)
    with pytest.raises(UserError, match="'brier' not supported"):
        stats.compare({}, None, ["brier"])


def test_reading_the_declarations_imports_no_numpy():
    code = ("import sys, medattn.evidence.metric_specs as s; s.metric_spec('val_roc_auc'); "
            "print('numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
