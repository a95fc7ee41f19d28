"""``medattn predict --dicom-out``: a TID 1500 SR per DICOM input and, with ``--explain``, a Parametric Map on the
source's grid; both pass dciodvfy without errors and read back (with highdicom) to the values in the CSV."""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image

from medattn.inference.dicom_sr import PRIVATE_SCHEME, class_code, model_uncertainty, read_finding
from medattn.inference.parametric_map import to_source_grid
from medattn.inference.predictor import load_run
from medattn.store import checkpoints

from .dicom_studies import dciodvfy_errors, study
from .test_export import model_file


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A model file (built, not trained: the SR states whatever it predicts) with a calibration and a conformal
    threshold in its meta, as issue 23's model files carry them."""
    tmp = tmp_path_factory.mktemp("model")
    file = model_file(tmp)
    state = torch.load(file, weights_only=True)
    state["meta"]["calibration"] = {"method": "temperature", "output": "sigmoid", "weight": [0.5], "bias": [0.0],
                                    "temperature": 2.0, "split": "val", "n": 10}
    state["meta"]["conformal"] = {"alpha": 0.1, "score": "lac", "class_conditional": False,
                                  "thresholds": [0.52, 0.52], "split": "val", "n": 10, "n_per_class": [5, 5]}
    checkpoints.save(state, file)
    return file


def rows_of(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_srs_and_maps_are_valid_and_read_back(model, cli, tmp_path):
    mg = study(tmp_path / "mg", 2, seed=1)
    ct = study(tmp_path / "ct", 2, grid=True, seed=2)
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "plain.png")
    out, csv_file = tmp_path / "dicom", tmp_path / "p.csv"
    code, stdout, err = cli("predict", model, *mg, *ct, tmp_path / "plain.png", "-o", csv_file, "--dicom-out", out,
                            "--explain", "saliency", "--device", "cpu")
    assert code == 0, err
    assert "4 SR(s) in" in stdout and "1 predicted input(s) without one" in stdout
    rows = rows_of(csv_file)
    assert rows[-1]["sr"] == "" and rows[-1]["note"] == "not a DICOM input: no SR written"
    assert all("no frame of reference" in r["note"] for r in rows[:2]) and [r["note"] for r in rows[2:4]] == ["", ""]
    written = sorted(out.iterdir())
    assert len(written) == 6 and not [p for p in written if ".tmp" in p.name]  # 4 SRs + 2 maps, nothing torn
    for path in written:
        assert dciodvfy_errors(path) == [], path.name

    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    uncalibrated = load_run(model)
    uncalibrated.calibration = None  # the model's own probabilities: what the SR must not state
    own = uncalibrated.predict([*mg, *ct]).probabilities
    series = set()
    for at, (row, source_file) in enumerate(zip(rows[:4], [*mg, *ct])):
        source = pydicom.dcmread(source_file)
        sr = pydicom.dcmread(row["sr"])
        got = read_finding(sr)
        probs = {c: float(row[f"prob_{c}"]) for c in ("round", "spiculated")}
        assert got["label"] == row["predicted"] and got["source"] == [source.SOPInstanceUID]
        # "round" is a SNOMED CT concept DICOM uses (a shape), "spiculated" is not: medattn's private scheme
        assert got["code"] == {"round": ("42700002", "SCT"), "spiculated": ("spiculated", PRIVATE_SCHEME)}[row["predicted"]]
        assert got["probabilities"] == pytest.approx(probs, abs=1e-6)
        assert got["probability"] == pytest.approx(probs[row["predicted"]], abs=1e-6)
        assert got["threshold"] == pytest.approx(float(row["threshold"]))
        # predict's probabilities are the calibrated ones (the model file's temperature applied to the logits)
        calibrated = np.array([probs["round"], probs["spiculated"]])
        assert got["calibrated"] == pytest.approx(calibrated[["round", "spiculated"].index(row["predicted"])],
                                                  abs=1e-5)
        # ... not the model's own: temperature 2 draws them towards 1/2
        assert not np.allclose(calibrated, own[at], atol=1e-3) and np.all(abs(calibrated - 0.5) < abs(own[at] - 0.5))
        assert got["conformal_set"] == [c for k, c in enumerate(("round", "spiculated")) if 1 - calibrated[k] <= 0.52]
        assert got["alpha"] == pytest.approx(0.1)
        assert got["algorithm"]["parameters"][0] == f"model sha256 {sha}"
        assert "not a medical device" in got["algorithm"]["parameters"][-1]
        assert "RESEARCH USE ONLY" in sr.SeriesDescription
        for key in ("StudyInstanceUID", "PatientID", "PatientName", "AccessionNumber", "StudyDate"):
            assert sr[key].value == source[key].value, key
        assert sr.SeriesInstanceUID != source.SeriesInstanceUID and sr.SOPInstanceUID != source.SOPInstanceUID
        series.add(sr.SeriesInstanceUID)
    assert len(series) == 2  # one new SR series per source series

    for row, source_file in zip(rows[2:4], ct):
        source = pydicom.dcmread(source_file)
        pm = pydicom.dcmread(next(out.glob(f"{source.SOPInstanceUID}.saliency.pm.dcm")))
        assert (pm.Rows, pm.Columns) == (source.Rows, source.Columns) and pm.StudyInstanceUID == source.StudyInstanceUID
        derivation = pm.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
        assert derivation.ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0].LUTLabel == "saliency"
        with np.load(tmp_path / row["attribution"]) as z:
            want = to_source_grid(z["attribution"], source.Rows, source.Columns)
        got = np.frombuffer(pm.FloatPixelData, dtype=np.float32).reshape(source.Rows, source.Columns)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()))


def test_class_codes_snomed_where_dicom_has_one():
    assert (class_code("NORMAL", 0).value, class_code("NORMAL", 0).scheme_designator) == ("17621005", "SCT")
    assert class_code("malignant", 1).value == "21594007" and class_code("Benign", 0).meaning == "Benign"
    private = class_code("spiculated", 1)
    assert (private.value, private.scheme_designator, private.meaning) == ("spiculated", "99MEDATTN", "spiculated")
    long = class_code("ground glass opacity, bilateral", 3)
    assert long.value == "CLASS3" and long.meaning == "ground glass opacity, bilateral"
    assert class_code("NORMAL", 0) is not class_code("NORMAL", 0)  # a dataset: never shared between reports


def holding(calibration=None, conformal=None):
    """A Predictor's calibration and conformal thresholds (as load_run checks them) without a model."""
    from types import SimpleNamespace

    from medattn.evidence import conformal as conformal_module
    from medattn.inference.predictor import Predictor

    out = SimpleNamespace(calibration=calibration, conformal=conformal_module.check(conformal, 3, "meta.conformal"))
    out.sets = lambda scores: Predictor.sets(out, scores)
    return out


def test_uncertainty_of_the_predictor_or_skipped():
    p = np.array([0.1, 0.6, 0.3])  # as the Predictor gives them: calibrated when the model file calibrates
    assert model_uncertainty(holding(), p).calibrated is None and model_uncertainty(holding(), p).conformal_set is None
    cal = {"method": "temperature", "output": "softmax", "weight": [0.5], "bias": [0.0], "temperature": 2.0}
    calibrated = model_uncertainty(holding(cal), p)
    assert calibrated.calibrated is not None and calibrated.conformal_set is None and calibrated.alpha is None
    lac = model_uncertainty(holding(conformal={"alpha": 0.2, "score": "lac", "thresholds": [0.75] * 3}), p)
    assert lac.conformal_set == [1, 2] and lac.alpha == 0.2 and lac.calibrated is None
    per_class = model_uncertainty(holding(conformal={"score": "lac", "thresholds": [0.95, 0.3, 0.5]}), p)
    assert per_class.conformal_set == [0]
    aps = model_uncertainty(holding(conformal={"score": "aps", "thresholds": [0.85] * 3}), p)
    assert aps.conformal_set == [1]  # mass 0.6 for class 1, 0.9 with class 2, 1.0 with class 0


def test_dicom_options_that_do_not_go_together(model, cli, tmp_path):
    mg = study(tmp_path / "mg", 1)
    (tmp_path / "afile").write_text("")
    for args, message in [(["--store"], "--store: only with --dicomweb"),
                          (["--study", "1.2.3"], "--study: only with --dicomweb"),
                          (["--dicom-out", tmp_path / "afile"], "is a file; give a folder")]:
        code, _, err = cli("predict", model, *mg, "-o", tmp_path / "p.csv", *args)
        assert code == 2 and message in err and "Traceback" not in err
    code, _, err = cli("predict", model, "-o", tmp_path / "p.csv")
    assert code == 2 and "no INPUT" in err
    code, _, err = cli("predict", model, "--dicomweb", "http://pacs:8042/dicom-web", "--study", "1.2.3", "--tta",
                       "flips", "--mc-dropout", "2", "--uncertainty", "-o", tmp_path / "p.csv")
    assert code == 2 and "--tta, --mc-dropout, --uncertainty: not with --dicomweb" in err


def test_file_names_stay_in_the_folder_and_do_not_collide(model, tmp_path):
    from medattn.inference.dicom_out import DicomWriter, dicom_header

    (source,) = study(tmp_path / "ct", 1, grid=True)
    out = tmp_path / "nested" / "dicom"
    writer = DicomWriter(load_run(model), out)
    probs = np.array([0.3, 0.7], dtype=np.float32)
    files = [writer.write(dicom_header(source), probs, 1).files[0] for _ in range(2)]  # the same input twice
    hostile = dicom_header(source)
    hostile.SOPInstanceUID = "../../evil"
    written = writer.write(hostile, probs, 1)
    files += written.files
    assert len(set(files)) == 3 and all(f.parent == out and f.is_file() for f in files)
    assert files[1].name == files[0].name.replace(".sr.dcm", "-2.sr.dcm")
    assert files[2].name == f"{written.sr.SOPInstanceUID}.sr.dcm"  # named after the SR, not the hostile UID
    assert not (tmp_path / "evil.sr.dcm").exists() and not list(tmp_path.glob("*.sr.dcm"))


def test_malformed_dicomweb_urls_before_the_model_loads(cli, tmp_path):
    missing = tmp_path / "no-such-run"  # the URL is checked first: no error about the run
    for url in ("http://", "http://:80/x", "http://pacs:port/dicom-web", "pacs:8042/dicom-web"):
        code, _, err = cli("predict", missing, "--dicomweb", url, "--study", "1.2.3", "-o", tmp_path / "p.csv")
        assert code == 2 and f"--dicomweb {url}:" in err and "no-such-run" not in err and "Traceback" not in err
