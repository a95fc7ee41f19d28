"""Using a trained run: ``load_run`` / ``Predictor`` and ``medattn predict`` give the test job's predictions on the
same images, take every kind of input, explain, list runs, and turn bad input into one clear message (or, for
one unreadable image among others, a row with its error)."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import medattn_plugins.datasets
import numpy as np
import pytest
import torch
from PIL import Image

from medattn.errors import UserError
from medattn.image_io import read_image, to_tensor
from medattn.inference.cli import collect_inputs
from medattn.inference.notebook import Finished, run_experiment_file
from medattn.inference.predictor import load_run
from medattn.store.rundir import RunDir

from .test_export import model_file
from .test_image_io import write_dicom

CXR16 = Path(medattn_plugins.datasets.__file__).parent / "cxr16"

# the embedded chest X-rays (files on disk, as a user's would be), trained for one epoch
EXPERIMENT = {
    "name": "cxr", "seed": 3, "device": "cpu",
    "dataset": {"name": "cxr16", "image_size": 32},
    "model": {"backbone": {"name": "timm", "params": {"model_name": "test_resnet", "pretrained": False}},
              "attention": {"name": "none"}},
    "train": {"epochs": 3, "batch_size": 4, "progress": False},
    "test": {"checkpoints": ["best_val_loss"], "bootstrap": {"resamples": 0}},
    "jobs": ["train", "test"],
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Finished:
    """medattn.run on a dict (relative paths from the current folder), one override as a keyword."""
    tmp = tmp_path_factory.mktemp("cxr")
    here = os.getcwd()
    os.chdir(tmp)
    try:
        return run_experiment_file({**EXPERIMENT, "output_dir": "runs"}, log=lambda *_: None, train__epochs=1)
    finally:
        os.chdir(here)


@pytest.fixture(scope="module")
def run(finished) -> RunDir:
    return finished.runs[0]


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_medattn_run_from_a_dict_with_overrides(finished):
    assert [r.root.name for r in finished.runs] == ["default"] and finished.runs[0].root.is_absolute()
    assert [row["checkpoint"] for row in finished.summary] == ["best_val_loss"]
    assert len(finished.runs[0].read_history()) == 1  # train__epochs=1 overrode the dict's 3
    assert not list(finished.runs[0].root.parents[2].glob(".medattn-*.yaml"))  # the temporary file is gone
    with pytest.raises(UserError, match="expected one of default"):
        finished.load("nope")


def test_predictions_equal_the_test_jobs(run, cli, tmp_path):
    rows = run.read_predictions("best_val_loss")
    paths = [CXR16 / r["id"] for r in rows]
    predictor = load_run(run.root)
    assert predictor.class_names == ["NORMAL", "PNEUMONIA"] and predictor.threshold == 0.5
    out = predictor.predict(paths, batch_size=3)
    assert [int(i) for i in out.indices] == [int(r["prediction"]) for r in rows]
    assert out.labels == [predictor.class_names[int(r["prediction"])] for r in rows]
    np.testing.assert_allclose(out.probabilities[:, 1], [float(r["score"]) for r in rows], atol=1e-6)
    np.testing.assert_allclose(out.probabilities.sum(axis=1), 1.0, atol=1e-6)

    code, stdout, err = cli("predict", run.root, *paths, "--output", tmp_path / "p.csv", "--device", "cpu")
    assert code == 0, err
    assert f"{len(rows)} of {len(rows)} image(s) predicted" in stdout
    written = csv_rows(tmp_path / "p.csv")
    assert list(written[0]) == ["path", "prob_NORMAL", "prob_PNEUMONIA", "predicted", "threshold", "error"]
    assert [w["prob_PNEUMONIA"] for w in written] == [r["score"] for r in rows]
    assert [w["predicted"] for w in written] == out.labels and {w["threshold"] for w in written} == {"0.5"}


def test_the_transform_is_the_datasets_reading(run):
    predictor = load_run(run.root)
    file = CXR16 / "NORMAL" / "NORMAL2-IM-1427-0001.jpg"
    want = to_tensor(read_image(file), (32, 32), 3)
    assert torch.equal(predictor.transform.load(file), want)
    mean, std = (torch.tensor(predictor.meta[k]).view(-1, 1, 1) for k in ("mean", "std"))
    assert torch.allclose(predictor.transform(file), (want - mean) / std)


def test_paths_pil_images_arrays_and_tensors_predict_alike(run, tmp_path):
    predictor = load_run(run.root)
    rgb = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    grey16 = np.random.default_rng(1).integers(0, 65536, (40, 40), dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    chw = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    inputs = [tmp_path / "c.png", str(tmp_path / "c.png"), Image.open(tmp_path / "c.png"), rgb, chw,
              np.ascontiguousarray(np.moveaxis(rgb, -1, 0))]
    probs = predictor.predict(inputs).probabilities
    np.testing.assert_allclose(probs, np.repeat(probs[:1], len(inputs), axis=0), atol=1e-6)
    grey = predictor.predict([tmp_path / "g16.png", Image.open(tmp_path / "g16.png"), grey16]).probabilities
    np.testing.assert_allclose(grey, np.repeat(grey[:1], 3, axis=0), atol=1e-6)
    batch = predictor.predict(torch.stack([chw, chw]))  # a 4-D tensor is a batch
    assert len(batch) == 2 and np.allclose(batch.probabilities, probs[:2], atol=1e-6)
    arr = np.arange(300 * 200, dtype=np.uint16).reshape(300, 200) * 2
    dicom = predictor.predict(write_dicom(tmp_path / "x.dcm", arr, WindowCenter=30000, WindowWidth=20000))
    assert dicom.errors == [None] and dicom.labels[0] in predictor.class_names


def test_unreadable_inputs(run, cli, tmp_path):
    predictor = load_run(run.root)
    good = CXR16 / "NORMAL" / "NORMAL2-IM-1427-0001.jpg"
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match=r"bad.png: cannot decode image"):
        predictor.predict([good, tmp_path / "bad.png"])
    kept = predictor.predict([good, tmp_path / "bad.png", np.zeros((4, 4, 2))], errors="keep")
    assert kept.labels[0] in predictor.class_names and kept.labels[1:] == [None, None]
    assert np.isnan(kept.probabilities[1:]).all() and "cannot decode" in kept.errors[1] and "shape" in kept.errors[2]

    out = tmp_path / "mixed.csv"
    code, stdout, err = cli("predict", run.root, good, tmp_path / "bad.png", tmp_path / "gone.png", "-o", out)
    assert code == 0, err
    assert "1 of 3 image(s) predicted" in stdout and "2 could not be read" in stdout
    rows = csv_rows(out)
    assert [r["error"] != "" for r in rows] == [False, True, True]
    assert rows[2]["error"] == "file not found" and rows[1]["prob_NORMAL"] == "" and rows[1]["predicted"] == ""

    code, _, err = cli("predict", run.root, tmp_path / "bad.png", tmp_path / "gone.png", "-o", tmp_path / "none.csv")
    assert code == 2 and "none of the 2 input(s) could be predicted" in err and "bad.png: cannot decode" in err
    assert len(csv_rows(tmp_path / "none.csv")) == 2  # the rows are written all the same


def test_inputs_folders_and_csv_lists(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / ".hidden").mkdir()
    for name in ("d/b.png", "d/sub/a.JPG", "d/.hidden/x.png", "d/notes.txt", "d/sub/c.dcm"):
        (tmp_path / name).write_bytes(b"")
    found = collect_inputs([tmp_path / "d"])
    assert [Path(s.name).relative_to(tmp_path / "d").as_posix() for s in found] == ["b.png", "sub/a.JPG", "sub/c.dcm"]
    (tmp_path / "empty").mkdir()
    assert "no images in this folder" in collect_inputs([tmp_path / "empty"])[0].error
    (tmp_path / "list.csv").write_text("file,label\nd/b.png,1\n,0\nmissing.png,0\n")
    listed = collect_inputs([tmp_path / "list.csv"], "file")
    assert listed[0].path == tmp_path / "d" / "b.png" and listed[0].error is None
    assert listed[1].error == "empty file" and "file not found (listed in" in listed[2].error
    with pytest.raises(UserError, match=r"list.csv: no 'path' column \(columns: file, label\)"):
        collect_inputs([tmp_path / "list.csv"])


def test_bad_run_arguments(run, cli, tmp_path):
    with pytest.raises(UserError, match="no such run directory"):
        load_run(tmp_path / "nowhere")
    with pytest.raises(UserError, match=r"no checkpoint 'best_val_auc'; this run has: best_train_loss, best_val_lo"):
        load_run(run.root, "best_val_auc")
    with pytest.raises(UserError, match=r"an experiment folder: give one of its runs \(default\)"):
        load_run(run.root.parent)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(UserError, match="junk.pt"):
        load_run(tmp_path / "junk.pt")
    with pytest.raises(UserError, match="device 'cuda:7'"):
        load_run(run.root, device="cuda:7")
    code, _, err = cli("predict", run.root, "x.png", "--checkpoint", "best_val_auc")
    assert code == 2 and "no checkpoint 'best_val_auc'" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:
        cli("predict", run.root, "x.png", "--batch-size", "0")
    assert exc.value.code == 2


def test_threshold_from_the_model_file_and_multiclass(tmp_path):
    image = np.random.default_rng(2).random((32, 32, 3)).astype(np.float32)
    strict = load_run(model_file(tmp_path, threshold={"value": 1.0, "rule": "specificity", "source": "val"}))
    assert strict.threshold == 1.0 and strict.threshold_rule["rule"] == "specificity"
    assert strict.predict([image] * 2).labels == ["round", "round"]  # P(class 1) < 1: never class 1
    lenient = load_run(model_file(tmp_path, threshold={"value": 0.0, "rule": "fixed", "source": "test.threshold"},
                                  variant="lenient"))
    assert lenient.predict(image).labels == ["spiculated"]
    three = load_run(model_file(tmp_path, classes=("a", "b", "c"), variant="three"))
    out = three.predict([image, image[..., 0]])
    assert three.threshold is None and out.threshold is None and out.probabilities.shape == (2, 3)
    assert list(out.indices) == list(out.probabilities.argmax(axis=1))
    assert out.rows()[0]["threshold"] == "" and set(out.rows()[0]) >= {"prob_a", "prob_b", "prob_c"}


def test_explain_api_and_cli(run, cli, tmp_path):
    predictor = load_run(run.root)
    files = sorted((CXR16 / "NORMAL").glob("*.jpg"))[:3]
    ex = predictor.explain(files, "saliency")
    assert ex.attributions.shape == (3, 3, 32, 32) and np.isfinite(ex.attributions).all()
    assert ex.images.shape == (3, 3, 32, 32) and ex.predictions.labels == predictor.predict(files).labels
    assert ex.overlay(0).size == (224, 224)
    cam = predictor.explain(files[:1], "gradcam")
    assert cam.attributions.shape[0] == 1 and cam.attributions.shape[-2:] == (32, 32)
    with pytest.raises(UserError, match="nope"):
        predictor.explain(files[:1], "gradcam", layer="nope")
    with pytest.raises(UserError, match="no explainer named 'salience'"):
        predictor.explain(files[:1], "salience")

    out = tmp_path / "e.csv"
    code, stdout, err = cli("predict", run.root, *files, "--explain", "saliency", "-o", out, "--batch-size", "2")
    assert code == 0, err
    rows = csv_rows(out)
    assert [r["attribution"] for r in rows] == [f"e_saliency/{i:05d}_{f.stem}.npz" for i, f in enumerate(files)]
    with np.load(tmp_path / rows[0]["attribution"]) as z:
        scale = float(np.abs(ex.attributions[0]).max())  # batch 2 against 8: float sums may differ in the last bits
        np.testing.assert_allclose(z["attribution"], ex.attributions[0], rtol=1e-4, atol=1e-3 * scale)
        assert str(z["predicted"]) == rows[0]["predicted"] and list(z["class_names"]) == predictor.class_names
    assert Image.open(tmp_path / rows[0]["overlay"]).size == (224, 224)


def test_runs_lists_runs(run, cli):
    for folder in (run.root.parent.parent, run.root.parent, run.root):
        code, stdout, err = cli("runs", folder)
        assert code == 0, err
        lines = stdout.strip().splitlines()
        assert [c.strip() for c in lines[0].split("|")[1:-1]] == ["experiment", "variant", "jobs", "best", "test",
                                                                  "date"]
        assert len(lines) == 3 and "| cxr " in lines[2] and "train,test" in lines[2]
        assert "best_val_loss: val_loss" in lines[2] and "(epoch 1)" in lines[2] and "roc_auc" in lines[2]
    code, _, err = cli("runs", run.root / "nowhere")
    assert code == 2 and "no such folder" in err
