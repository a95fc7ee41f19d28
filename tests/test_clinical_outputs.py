"""The clinical outputs end to end: test.calibration and test.conformal fitted on validation, kept in the model
file, reported by the test job and applied alike by predict, load_run and the exported models."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medattn.errors import UserError
from medattn.inference.notebook import run_experiment_file
from medattn.inference.predictor import load_run
from medattn.store import checkpoints


def write_images(root: Path, n: dict[str, int], seed: int = 0) -> Path:
    """PNG images of two classes (a faint bright square or none, in noise) listed in images.csv with a split
    and a site column; returns the CSV."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    lines = ["path,label,split,site"]
    for split, count in n.items():
        for i in range(count):
            label = i % 2
            site = "north" if i % 3 else "south"
            img = rng.normal(0.4 if site == "north" else 0.5, 0.15, (32, 32))
            if label:
                x, y = rng.integers(4, 20, 2)
                img[y:y + 8, x:x + 8] += 0.25
            path = root / split / f"{split}{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(path)
            lines.append(f"{split}/{path.name},{'lesion' if label else 'clear'},{split},{site}")
    (root / "images.csv").write_text("\n".join(lines) + "\n")
    return root / "images.csv"


def experiment(root: Path) -> dict:
    return {
        "name": "clinical", "seed": 5, "device": "cpu",
        "dataset": {"name": "csv", "image_size": 32,
                    "params": {"root": str(root), "csv": "images.csv", "split_column": "split",
                               "classes": ["clear", "lesion"]}},
        "model": {"backbone": {"name": "timm", "params": {"model_name": "test_resnet", "pretrained": False}},
                  "attention": {"name": "none"}},
        "train": {"epochs": 2, "batch_size": 16, "progress": False, "optimizer": {"name": "adam", "lr": 3.0e-3}},
        "test": {"checkpoints": ["best_val_loss"], "bootstrap": {"resamples": 50}},
        "jobs": ["train", "test"], "output_dir": str(root / "runs"),
    }


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short run: first tested without calibration (today's numbers), then with temperature scaling and
    class-conditional conformal sets (the test section is not the run's identity: the checkpoints stay)."""
    tmp = tmp_path_factory.mktemp("clinical")
    write_images(tmp, {"train": 64, "val": 40, "test": 40})
    plain = run_experiment_file(experiment(tmp), log=lambda *_: None)
    run = plain.runs[0]
    before = json.loads(run.test_metrics("best_val_loss").read_text())
    legacy = checkpoints.load(run.checkpoint("best_val_loss"))
    run_experiment_file(experiment(tmp), log=lambda *_: None, jobs=["test"], test__calibration="temperature",
                        test__conformal={"alpha": 0.2, "score": "lac", "class_conditional": True}, test__tta="d4",
                        test__subgroups=["site"])
    return run, before, legacy, tmp


def test_temperature_scaling_keeps_the_binary_auc_and_reports_before_and_after(trained):
    run, before, legacy, _ = trained
    after = json.loads(run.test_metrics("best_val_loss").read_text())
    assert legacy["meta"]["calibration"] is None and legacy["meta"]["conformal"] is None  # test.calibration: none
    assert "auc_change" not in before and before["calibration"]["method"] == "none"
    block = after["calibration"]
    assert block["method"] == "temperature" and block["fitted"]["temperature"] > 0
    assert after["roc_auc"] == before["roc_auc"]  # the ranking, and so the AUC, to the last digit
    assert after["auc_change"] == 0.0 and block["auc_before"] == block["auc_after"]
    for key in ("ece15", "adaptive_ece", "mce", "brier", "nll"):
        assert key in block["before"] and key in block["after"] and len(block["ci_after"][key]) == 2
    assert after["nll"] == block["after"]["nll"] and after["ci"]["ece15"] == block["ci_after"]["ece15"]
    assert block["before"]["ece15"] == pytest.approx(before["ece15"])  # the model's own, as the plain test said
    # fitted on validation by NLL: not worse there than the model itself
    assert block["fitted"]["nll_after"] <= block["fitted"]["nll_before"]


def test_the_model_file_keeps_calibration_and_sets_and_predict_applies_them(trained, cli):
    run, _, _, tmp = trained
    meta = checkpoints.read_meta(run.checkpoint("best_val_loss"))
    assert meta["calibration"]["method"] == "temperature" and meta["conformal"]["alpha"] == 0.2
    assert len(meta["conformal"]["thresholds"]) == 2 and meta["conformal"]["class_conditional"]
    metrics = json.loads(run.test_metrics("best_val_loss").read_text())
    conf = metrics["conformal"]
    assert conf["target_coverage"] == pytest.approx(0.8) and 0 <= conf["coverage"] <= 1
    assert set(conf["per_class"]) == {"clear", "lesion"} and "coverage" in metrics["ci"]
    predictor = load_run(run.root)
    assert predictor.calibration == meta["calibration"] and predictor.conformal == meta["conformal"]
    # the test job's calibrated scores and sets are what predict gives on the same images
    test_rows = rows(run.predictions("best_val_loss"))
    assert "set" in test_rows[0]
    paths = [tmp / r["id"] for r in test_rows]
    out = predictor.predict(paths)
    np.testing.assert_allclose(out.probabilities[:, 1], [float(r["score"]) for r in test_rows], atol=2e-6)
    assert ["|".join(s) for s in out.set_labels] == [r["set"] for r in test_rows]
    assert [r["set"] for r in out.rows()] == [r["set"] for r in test_rows]
    code, _, err = cli("predict", run.root, *paths[:3], "--output", tmp / "p.csv", "--device", "cpu")
    assert code == 0, err
    written = rows(tmp / "p.csv")
    assert list(written[0])[-2:] == ["set", "error"] and [w["set"] for w in written] == [r["set"] for r in test_rows[:3]]
    assert "made before" not in err


def with_meta(path: Path, **meta) -> Path:
    data = checkpoints.load(path)
    data["meta"].update(meta)
    checkpoints.save(data, path)
    return path


TEMPERATURE = {"method": "temperature", "output": "sigmoid", "weight": [0.5], "bias": [0.0], "temperature": 2.0,
               "split": "val", "n": 40, "nll_before": 0.9, "nll_after": 0.6}


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load is deprecated, still the TorchScript loader
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_models_apply_the_calibration_and_the_contract_says_so(tmp_path, fmt):
    from medattn.inference.export import EXPORTERS, export_run

    from .test_export import batch, model_file

    file = with_meta(model_file(tmp_path), calibration=TEMPERATURE,
                     conformal={"alpha": 0.1, "score": "lac", "class_conditional": False, "thresholds": [0.7, 0.7],
                                "split": "val", "n": 40, "n_per_class": [20, 20]})
    out, contract_file = export_run(file, fmt, output=tmp_path / f"model.{fmt}")
    contract = json.loads(contract_file.read_text())
    assert contract["output"]["calibrated"] and contract["calibration"]["temperature"] == 2.0
    assert "inside the exported model" in contract["calibration"]["applied"]
    assert contract["conformal"]["thresholds"] == [0.7, 0.7] and "1 - p_k" in contract["conformal"]["rule"]
    x = batch()
    predictor = load_run(file)
    with torch.no_grad():
        want = predictor.model(x).numpy() * 0.5
    got = EXPORTERS[fmt].run(out.read_bytes(), (x,), ["image"])[0]
    np.testing.assert_allclose(got, want, atol=1e-4)
    # and the predictor's probabilities are the calibrated ones
    np.testing.assert_allclose(predictor.scores(x), 1 / (1 + np.exp(-want[:, 0])), atol=1e-5)


def test_a_model_file_made_before_calibration_predicts_as_before(tmp_path, cli):
    from PIL import Image

    from .test_export import model_file

    file = model_file(tmp_path)  # the meta of a model file written before calibration: no such key
    assert "calibration" not in checkpoints.read_meta(file)
    predictor = load_run(file)
    assert predictor.calibration is None and predictor.conformal is None and predictor.made_before_calibration
    image = tmp_path / "a.png"
    Image.fromarray(np.full((32, 32), 128, np.uint8)).save(image)
    code, _, err = cli("predict", file, image, "--output", tmp_path / "p.csv", "--device", "cpu")
    assert code == 0 and "made before medattn kept a calibration" in err and "Traceback" not in err
    assert "set" not in rows(tmp_path / "p.csv")[0]
    with pytest.raises(UserError, match="meta.calibration: not a calibration medattn wrote"):
        load_run(with_meta(file, calibration={"method": "temperature"}))


def test_uncertainty_triage_and_operating_points(trained):
    run = trained[0]
    metrics = json.loads(run.test_metrics("best_val_loss").read_text())
    block = metrics["uncertainty"]
    assert "8 view(s)" in block["uncertainty"] and 0 <= metrics["aurc"] <= 1
    assert metrics["aurc_max_probability"] == block["aurc_max_probability"] and "aurc" in metrics["ci"]
    assert [r["referred"] for r in block["triage"]] == [0.0, 0.05, 0.1, 0.2]
    assert [r["n_referred"] for r in block["triage"]] == [0, 2, 4, 8]
    assert {"sensitivity", "specificity", "ppv", "npv"} <= set(block["triage"][1])
    table = rows(run.triage("best_val_loss"))
    assert len(table) == 4 and table[3]["n_kept"] == "32"
    test_rows = rows(run.predictions("best_val_loss"))
    assert {"entropy", "spread", "mutual_information"} <= set(test_rows[0])
    assert all(0 <= float(r["entropy"]) <= np.log(2) + 1e-6 for r in test_rows)
    decision = metrics["decision"]
    assert decision["sensitivity_at_specificity_target"] == 0.889 and "sensitivity_at_specificity" in metrics
    assert len(decision["curve"]["threshold"]) == 99 and decision["curve"]["treat_none"][0] == 0


def test_subgroups_from_the_csv_metadata(trained, cli):
    run, _, _, tmp = trained
    metrics = json.loads(run.test_metrics("best_val_loss").read_text())
    table = rows(run.subgroups("best_val_loss"))
    assert {r["group"] for r in table} == {"north", "south"} and {r["column"] for r in table} == {"site"}
    assert {r["metric"] for r in table} == {"accuracy", "sensitivity", "specificity", "roc_auc"}
    assert {w["metric"] for w in metrics["subgroups"]["worst"]} >= {"accuracy"} and metrics["subgroups"]["gaps"]
    bad = experiment(tmp)
    bad["test"] = {**bad["test"], "subgroups": ["density"]}
    (tmp / "bad.yaml").write_text(json.dumps(bad))
    code, out, err = cli("validate", tmp / "bad.yaml")
    assert code == 2 and "test.subgroups" in err + out and "no column 'density'" in err + out


def test_predict_tta_and_uncertainty_per_image(trained, cli):
    run, _, _, tmp = trained
    paths = [tmp / r["id"] for r in rows(run.predictions("best_val_loss"))[:5]]
    predictor = load_run(run.root)
    out = predictor.predict(paths, tta="d4", uncertainty=True)
    sampled = rows(run.predictions("best_val_loss"))[:5]
    np.testing.assert_allclose(out.uncertainty["entropy"], [float(r["entropy"]) for r in sampled], atol=2e-5)
    np.testing.assert_allclose(out.uncertainty["spread"], [float(r["spread"]) for r in sampled], atol=2e-5)
    code, _, err = cli("predict", run.root, *paths, "--tta", "flips", "--uncertainty", "--output", tmp / "u.csv")
    assert code == 0, err
    written = rows(tmp / "u.csv")
    assert list(written[0])[-5:] == ["set", "entropy", "spread", "mutual_information", "error"]
    code, _, err = cli("predict", run.root, *paths, "--mc-dropout", "4", "--output", tmp / "m.csv")
    assert code == 2 and "--mc-dropout: the model has no dropout layer" in err and "Traceback" not in err
    assert not (tmp / "m.csv").exists()


def test_the_before_and_after_reliability_figure(trained):
    from medattn_plugins.figures.classification import calibration

    from medattn.store.views import RunView

    run = trained[0]
    paths = calibration({}, RunView.from_dir(run.root, log=lambda *_: None))
    assert [p.name for p in paths] == ["calibration_best_val_loss.png"] and paths[0].stat().st_size > 1000


def test_the_clinical_figures_and_the_report_model_card(trained):
    run, _, _, tmp = trained
    config = {**experiment(tmp), "card": {"intended_use": "A test of the model card."}}
    run_experiment_file(config, log=lambda *_: None, jobs=["figure"],
                        figure__kinds=["decision_curve", "risk_coverage", "subgroups", "report"])
    names = {p.name for p in run.figures.glob("*.png")}
    assert {"decision_curve_best_val_loss.png", "risk_coverage_best_val_loss.png",
            "subgroups_best_val_loss.png"} <= names
    report = (run.root.parent / "report.html").read_text()
    assert "Model card" in report and "A test of the model card." in report and "temperature" in report
    assert "<b>Caveats.</b> <i>(not given: add it under <code>card:</code>" in report  # caveats left blank: the hint
    assert "reporting checklist" in report and "filled by the run" in report and "blank: for the authors" in report
