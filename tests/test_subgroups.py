"""Subgroup performance (medattn.evidence.subgroups): fairlearn MetricFrame per metadata column, intervals, the
worst group and the largest gap, and clear answers for a missing column or a one-class group."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medattn.errors import UserError
from medattn.evidence.subgroups import subgroup_table

from .conftest import paired_experiment


def data(n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    site = rng.choice(["north", "south"], n)
    y = rng.integers(0, 2, n)
    noise = np.where(site == "south", 0.45, 0.2)  # the model is worse at the south site
    s = np.clip(0.5 + (y - 0.5) * 0.6 + rng.normal(0, 1, n) * noise, 0, 1)
    return y, s, [{"site": a, "device": "A" if i % 2 else "B"} for i, a in enumerate(site)]


def test_per_group_metrics_worst_group_and_gap():
    y, s, meta = data()
    out = subgroup_table(y, s, meta, ["site", "device"], resamples=100, seed=1)
    rows = {(r["column"], r["group"], r["metric"]): r for r in out["rows"]}
    south = np.array([m["site"] == "south" for m in meta])
    assert rows[("site", "south", "roc_auc")]["value"] == pytest.approx(roc_auc_score(y[south], s[south]))
    assert rows[("site", "south", "roc_auc")]["n"] == south.sum()
    r = rows[("site", "north", "accuracy")]
    assert r["ci_low"] <= r["value"] <= r["ci_high"]
    worst = {(w["column"], w["metric"]): w for w in out["worst"]}
    assert worst[("site", "roc_auc")]["group"] == "south"
    gap = {(g["column"], g["metric"]): g for g in out["gaps"]}[("site", "roc_auc")]
    assert gap["gap"] == pytest.approx(rows[("site", "north", "roc_auc")]["value"] - worst[("site", "roc_auc")]["value"])


def test_intervals_resample_whole_patients_within_each_group():
    """Four images of each patient (the same scan four times): drawing images one by one would take them for four
    independent cases and give intervals about half as wide; drawing patients gives the intervals of the patients
    alone, as the whole split's intervals do."""
    from medattn.evidence.metrics import bootstrap_ci

    y, s, meta = data(80)
    patients = np.repeat([f"p{i}" for i in range(80)], 4)
    y4, s4, meta4 = np.repeat(y, 4), np.repeat(s, 4), [m for m in meta for _ in range(4)]
    by_patient = subgroup_table(y4, s4, meta4, ["site"], resamples=400, seed=2, patients=patients)
    by_image = subgroup_table(y4, s4, meta4, ["site"], resamples=400, seed=2)
    south = np.array([m["site"] == "south" for m in meta4])
    expected = bootstrap_ci(y4[south], s4[south], 0.5, 400, 2, patients[south], 0.95,
                            keys=("accuracy", "sensitivity", "specificity", "roc_auc"))
    for metric in ("accuracy", "roc_auc"):
        row = {r["group"]: r for r in by_patient["rows"] if r["metric"] == metric}["south"]
        assert [row["ci_low"], row["ci_high"]] == expected[metric]
        narrow = {r["group"]: r for r in by_image["rows"] if r["metric"] == metric}["south"]
        assert row["value"] == narrow["value"]
        assert (row["ci_high"] - row["ci_low"]) > 1.5 * (narrow["ci_high"] - narrow["ci_low"])


def test_a_missing_column_and_a_one_class_group():
    y, s, meta = data(60)
    with pytest.raises(UserError, match=r"test.subgroups: the test images carry no column 'density' \(they carry: "
                                        r"device, site\)"):
        subgroup_table(y, s, meta, ["density"], resamples=0)
    meta = [{**m, "view": "MLO" if label else "CC"} for m, label in zip(meta, y)]  # each view has one class
    out = subgroup_table(y, s, meta, ["view"], resamples=20)
    auc = [r for r in out["rows"] if r["metric"] == "roc_auc"]
    assert all(np.isnan(r["value"]) and r["note"] == "one class in this group: no ROC AUC" for r in auc)
    assert {r["metric"] for r in out["rows"] if np.isfinite(r["value"])} >= {"accuracy"}


def test_multi_class_groups():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 120)
    s = rng.dirichlet(np.ones(3), 120) + np.eye(3)[y] * 0.5
    s /= s.sum(axis=1, keepdims=True)
    meta = [{"site": "a" if i < 60 else "b"} for i in range(120)]
    out = subgroup_table(y, s, meta, ["site"], resamples=0)
    assert {r["metric"] for r in out["rows"]} == {"accuracy", "balanced_accuracy", "roc_auc"}


def test_synthetic_lesions_sites_are_off_by_default_and_differ_in_contrast():
    from medattn_plugins.datasets.synthetic_lesions import SyntheticLesions, generate

    look = {"difficulty": 0.5, "lesion_size": 0.12, "decoys": 0.0}
    plain = SyntheticLesions("test", 12, 7, (32, 32), 1, **look)
    sited = SyntheticLesions("test", 12, 7, (32, 32), 1, **look, sites=3)
    assert plain.metadata() == {}
    for i in range(12):  # sites: 0 leaves every image as it was, byte for byte
        assert np.array_equal(plain[i]["image"][0].numpy(), generate(7, "test", i, (32, 32), 0.5, 0.12, 0.0)[0])
    meta = sited.metadata()
    assert set(meta) == set(sited.ids()) and {m["site"] for m in meta.values()} <= {"site0", "site1", "site2"}
    assert len({m["site"] for m in meta.values()}) > 1
    for i, sid in enumerate(sited.ids()):
        a, b = plain[i]["image"].numpy(), sited[i]["image"].numpy()
        if meta[sid]["site"] == "site0":
            assert np.array_equal(a, b)
        else:
            assert np.abs(b - 0.5).mean() < np.abs(a - 0.5).mean()  # lower contrast around mid-grey


def sites_experiment(out: Path) -> str:
    return paired_experiment(
        "sites", out, "{n_train: 16, n_val: 8, n_test: 24, n_calibration: 12, sites: 2}",
        "{checkpoints: [last], bootstrap: {resamples: 0}, subgroups: [site], "
        "conformal: {alpha: 0.25, split: calibration, class_conditional: false}}",
        "[roc_auc, site=site1.roc_auc, site=site0.accuracy]")


@pytest.fixture(scope="module")
def sited(tmp_path_factory):
    """Two variants on the synthetic sites, with a carved conformal calibration split, compared per site."""
    from medattn.cli import main

    root = tmp_path_factory.mktemp("sites")
    path = root / "sites.yaml"
    path.write_text(sites_experiment(root / "runs"))
    assert main(["run", str(path)]) == 0
    return root, path


def test_compare_tests_one_groups_difference_between_variants(sited):
    import csv

    root, _ = sited
    exp = root / "runs" / "sites"

    def table(path):
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh))

    preds = {v: table(exp / v / "metrics" / "predictions_last.csv") for v in ("none", "se")}
    assert all(r["subgroup_site"] in ("site0", "site1") for r in preds["none"])
    rows = {r["metric"]: r for r in table(exp / "comparisons.csv")}
    assert list(rows) == ["roc_auc", "site=site1.roc_auc", "site=site0.accuracy"]
    mine = {v: [r for r in p if r["subgroup_site"] == "site1"] for v, p in preds.items()}
    assert int(rows["site=site1.roc_auc"]["n_images"]) == len(mine["none"]) < len(preds["none"])
    auc = {v: roc_auc_score([int(r["label"]) for r in m], [float(r["score"]) for r in m]) for v, m in mine.items()}
    assert float(rows["site=site1.roc_auc"]["delta"]) == pytest.approx(auc["se"] - auc["none"], abs=1e-6)
    assert rows["site=site1.roc_auc"]["test"] == "DeLong" and rows["site=site0.accuracy"]["test"].startswith("McNemar")
    ps = [float(r["p"]) for r in rows.values()]
    assert all(float(r["p_adjusted"]) >= float(r["p"]) for r in rows.values()) and all(0 <= p <= 1 for p in ps)
    # the conformal thresholds came from the carved calibration split, not from validation
    from medattn.store import checkpoints

    fitted = checkpoints.read_meta(exp / "se" / "checkpoints" / "last.pt")["conformal"]
    assert fitted["split"] == "calibration" and fitted["n"] == 12 and fitted["n_per_class"] == [6, 6]
    metrics = json.loads((exp / "se" / "metrics" / "test_last.json").read_text())
    assert metrics["conformal"]["split"] == "calibration" and metrics["conformal"]["n"] == 24  # the test images
    assert metrics["conformal"]["n_calibration"] == 12


def test_compare_of_a_group_the_test_does_not_write_is_refused(sited, cli, write):
    root, path = sited
    text = path.read_text()
    code, out, err = cli("validate", write("nosub.yaml", text.replace("subgroups: [site]", "subgroups: []")))
    assert code == 2 and "compare.metrics: 'site=site1.roc_auc'" in err and "test.subgroups does not list 'site'" in err
    code, out, err = cli("run", write("noval.yaml", text.replace("site=site0.accuracy", "site=site7.accuracy")),
                         "--jobs", "test")
    assert code == 2 and "no test image of" in err and "site = 'site7'" in err and "'site0', 'site1'" in err
    assert "Traceback" not in err
