"""``medattn predict --dicomweb`` against a real Orthanc: a study uploaded with STOW-RS is fetched with WADO-RS
(compressed instances too), predicted, its SRs and maps stored back and queried again; each bad instance is one
message and the rest are processed; a server that refuses, is missing or is down is one clear error; credentials
come from the environment and never show."""
from __future__ import annotations

import csv
import http.server
import threading
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, generate_uid

from medattn.errors import UserError
from medattn.inference import dicomweb
from medattn.inference.dicom_sr import read_finding
from medattn.inference.predictor import load_run

from .dicom_studies import blob, bundled, dciodvfy_errors, instance
from .test_export import model_file

ADMIN = {"MEDATTN_DICOMWEB_USER": "medattn", "MEDATTN_DICOMWEB_PASSWORD": "secret"}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return model_file(tmp_path_factory.mktemp("model"))


def image(seed: int, size: int = 64) -> np.ndarray:
    return blob(np.random.default_rng(seed), size, sigma=5.0)


def same_study(ds: pydicom.Dataset, study: str) -> pydicom.Dataset:
    """A bundled file moved into ``study`` (new series and instance UIDs, the fixture patient)."""
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientID, ds.PatientName = "P0001", "MEDATTN^TEST"
    return ds


@pytest.fixture(scope="module")
def uploaded(orthanc):
    """One study on the server: 4 mammograms (plain, JPEG 2000, JPEG-LS), a CT slice (a grid for a map), and 5
    instances a model must not be given: an SR, a palette-colour image, an undecodable JPEG, a 2-frame image and
    a FOR PROCESSING mammogram. Returns (study UID, {SOP instance UID: what it is}, the mammograms' series UID)."""
    study, mg, ct = generate_uid(), generate_uid(), generate_uid()
    good = [instance(image(0), study=study, series=mg, number=1), instance(image(1), study=study, series=mg, number=2),
            instance(image(2), study=study, series=mg, number=3, syntax=JPEG2000Lossless),
            instance(image(3), study=study, series=mg, number=4, syntax=JPEGLSLossless),
            instance(image(4, 32), study=study, series=ct, number=1, grid=True)]
    frames = instance(image(5), study=study, series=generate_uid(), NumberOfFrames=2)
    frames.PixelData = frames.PixelData * 2
    bad = {"not an image": same_study(pydicom.dcmread(bundled("test-SR.dcm")), study),
           "unsupported pixels": same_study(pydicom.dcmread(bundled("examples_palette.dcm")), study),
           "undecodable": same_study(pydicom.dcmread(bundled("JPEG-lossy.dcm")), study),
           "multi-frame": frames,
           "for processing": instance(image(6), study=study, series=generate_uid(),
                                      PresentationIntentType="FOR PROCESSING")}
    client = dicomweb.connect(orthanc.url, env=ADMIN)
    answer = client.store_instances([*good, *bad.values()])
    assert len(answer.ReferencedSOPSequence) == 10
    kinds = {str(ds.SOPInstanceUID): "image" for ds in good} | {str(ds.SOPInstanceUID): k for k, ds in bad.items()}
    return study, kinds, mg


def rows_of(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_predict_a_study_and_store_the_results_back(orthanc, uploaded, model, cli, tmp_path, monkeypatch):
    study, kinds, _ = uploaded
    for key, value in ADMIN.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "sr"
    code, stdout, err = cli("predict", model, "--dicomweb", orthanc.url, "--study", study, "--store", "--explain",
                            "saliency", "--dicom-out", out, "-o", tmp_path / "p.csv", "--device", "cpu",
                            "--workers", "3", "--batch-size", "2")
    assert code == 0, err
    assert f"5 of 10 instance(s) predicted from {orthanc.url}" in stdout
    for kind in ("not an image", "unsupported pixels", "undecodable", "multi-frame", "for processing"):
        assert f"{kind}: 1" in stdout
    assert "SR stored: 5" in stdout and "map stored: 1" in stdout and "no parametric map: 4" in stdout
    problems = [line for line in err.splitlines() if line.startswith("medattn: ")]
    assert len(problems) == 9  # one per bad instance, one per mammogram without a map
    for sop, kind in kinds.items():
        if kind != "image":
            assert sum(sop in line and f": {kind}:" in line for line in problems) == 1, kind
    assert "secret" not in stdout + err
    rows = rows_of(tmp_path / "p.csv")
    assert len(rows) == 10 and sum(r["predicted"] != "" for r in rows) == 5
    assert "secret" not in (tmp_path / "p.csv").read_text()

    client = dicomweb.connect(orthanc.url, env=ADMIN)
    stored = client.search_for_instances(study_instance_uid=study, search_filters={"Modality": "SR"})
    srs = [pydicom.Dataset.from_json(x) for x in stored]
    assert len(srs) == 6  # the fixture's SR and the 5 medattn wrote
    by_source = {}
    for item in srs:
        if item.SOPInstanceUID in kinds:
            continue
        sr = client.retrieve_instance(study, item.SeriesInstanceUID, item.SOPInstanceUID)
        got = read_finding(sr)
        by_source[got["source"][0]] = got
    assert set(by_source) == {sop for sop, kind in kinds.items() if kind == "image"}
    for row in rows:
        sop = row["path"].rsplit("/", 1)[1]
        if sop in by_source:
            assert by_source[sop]["label"] == row["predicted"]
            assert by_source[sop]["probability"] == pytest.approx(float(row[f"prob_{row['predicted']}"]), abs=1e-6)
            assert row["stored"].startswith("SR")
    assert len(client.search_for_instances(study_instance_uid=study, search_filters={"Modality": "OT"})) == 1
    for path in sorted(out.iterdir()):  # what was stored was written here first
        assert dciodvfy_errors(path) == [], path.name


def test_python_api_query_and_one_missing_instance(orthanc, uploaded, model, monkeypatch):
    study, kinds, _ = uploaded
    for key, value in ADMIN.items():
        monkeypatch.setenv(key, value)
    predictor = load_run(model)
    predictor.conformal = {"alpha": 0.1, "score": "lac", "thresholds": [0.9, 0.9]}  # sets as the file path has them
    real = dicomweb.find_instances

    def with_a_ghost(*args, **kwargs):  # an instance the search names but the server no longer has
        found = real(*args, **kwargs)
        return [*found, dicomweb.Instance(found[0].study, found[0].series, generate_uid())]

    monkeypatch.setattr(dicomweb, "find_instances", with_a_ghost)
    result = predictor.predict_dicomweb(orthanc.url, query=f"StudyInstanceUID={study}&Modality=CT", retries=1)
    assert result.tally["predicted"] == 1 and result.tally["not found"] == 1
    assert len(result.messages) == 1 and "cannot fetch: HTTP 404" in result.messages[0]
    assert result.predictions.labels[0] in predictor.class_names and result.predictions.labels[1] is None
    p = result.predictions.probabilities[0]
    assert result.rows[0]["set"] == "|".join(c for k, c in enumerate(predictor.class_names) if 1 - p[k] <= 0.9)
    assert result.rows[0]["set"] and result.rows[1]["set"] == "" and not result.predictions.sets[1].any()
    with pytest.raises(UserError, match=r"'Modalty' is not a DICOM attribute keyword \(did you mean 'Modality'\?\)"):
        predictor.predict_dicomweb(orthanc.url, query="Modalty=MG")


def test_servers_that_refuse(orthanc, uploaded, model, cli, tmp_path, monkeypatch):
    study, _, mammograms = uploaded
    args = ["predict", model, "--series", mammograms, "-o", tmp_path / "p.csv", "--retries", "2", "--timeout", "5"]
    code, _, err = cli(*args[:2], "--dicomweb", orthanc.url, *args[2:])  # no credentials in the environment
    assert code == 2 and "HTTP 401" in err and "MEDATTN_DICOMWEB_USER" in err and "Traceback" not in err
    for key, value in ADMIN.items():
        monkeypatch.setenv(key, value)
    code, _, err = cli(*args[:2], "--dicomweb", orthanc.root + "/no-such-root", *args[2:])
    assert code == 2 and "HTTP 404" in err
    code, _, err = cli(*args[:2], "--dicomweb", "http://127.0.0.1:9", *args[2:])  # nothing listens on port 9
    assert code == 2 and "cannot connect to http://127.0.0.1:9" in err

    monkeypatch.setenv("MEDATTN_DICOMWEB_USER", "reader")  # may read, may not store
    out = tmp_path / "kept"
    code, stdout, err = cli(*args[:2], "--dicomweb", orthanc.url, *args[2:], "--store", "--dicom-out", out)
    assert code == 0, err
    assert "STOW rejected: 4" in stdout and "4 of 4 instance(s) predicted" in stdout
    assert sum("not stored: STOW-RS rejected: HTTP 403" in line for line in err.splitlines()) == 4
    assert len(list(out.glob("*.sr.dcm"))) == 4  # nothing lost: the SRs are in --dicom-out


class Stub(http.server.BaseHTTPRequestHandler):
    """A DICOMweb server that fails: ``/down500`` answers 500, ``/slow`` answers after 2 s, ``/stow`` refuses one
    of the instances it is sent (409 and a Failed SOP Sequence); it records each request's Authorization."""

    hits: list[tuple[str, str]] = []
    reason: int | None = 0xA700  # the FailureReason of the refused instance (None: the item has none)

    def log_message(self, *args):
        pass

    def do_GET(self):
        Stub.hits.append((self.path, self.headers.get("Authorization", "")))
        if self.path.startswith("/slow"):
            threading.Event().wait(2)
        self.send_response(500)
        self.end_headers()

    def do_POST(self):
        Stub.hits.append((self.path, self.headers.get("Authorization", "")))
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        failed = pydicom.Dataset()
        failed.ReferencedSOPInstanceUID = Stub.refuse
        if Stub.reason is not None:
            failed.FailureReason = Stub.reason
        answer = pydicom.Dataset()
        answer.FailedSOPSequence = [failed]
        body = answer.to_json().encode()
        self.send_response(409)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def stub():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Stub.hits = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_bounded_retries_timeout_bearer_token_and_a_stow_failure(stub):
    token = {"MEDATTN_DICOMWEB_TOKEN": "t0ken"}
    client = dicomweb.connect(stub + "/down500", retries=3, env=token)
    with pytest.raises(Exception) as info:
        dicomweb.find_instances(client, study="1.2.3")
    assert dicomweb.http_problem(info.value, stub)[0] == "server error"
    assert len(Stub.hits) == 3 and {auth for _, auth in Stub.hits} == {"Bearer t0ken"}  # tried 3 times, no more
    slow = dicomweb.connect(stub + "/slow", timeout=0.3, retries=1)
    with pytest.raises(Exception) as info:
        dicomweb.find_instances(slow, study="1.2.3")
    assert dicomweb.http_problem(info.value, stub, 0.3) == ("timeout", f"no answer from {stub} within 0.3 s")

    a, b = (instance(np.ones((4, 4)), study="1.2.3", series="1.2.3.4", number=k) for k in (1, 2))
    Stub.refuse = str(b.SOPInstanceUID)
    answers = dicomweb.store(dicomweb.connect(stub, retries=1), [a, b])
    assert answers == {str(a.SOPInstanceUID): None,
                       str(b.SOPInstanceUID): "STOW-RS rejected: failure reason 0xA700"}
    Stub.reason = None  # failed all the same: not counted as stored
    try:
        answers = dicomweb.store(dicomweb.connect(stub, retries=1), [a, b])
    finally:
        Stub.reason = 0xA700
    assert answers == {str(a.SOPInstanceUID): None,
                       str(b.SOPInstanceUID): "STOW-RS rejected: failure reason not given"}


def test_fetch_keeps_a_bounded_number_of_instances_in_flight():
    import time
    from types import SimpleNamespace

    calls = []

    def retrieve_instance(study, series, sop, media_types=None):
        calls.append(sop)
        return pydicom.Dataset()

    client = SimpleNamespace(retrieve_instance=retrieve_instance, base_url="http://x")
    instances = [dicomweb.Instance("1", "2", str(k)) for k in range(20)]
    fetched = dicomweb.fetch(client, instances, lambda ds: np.zeros(1), workers=2, ahead=3)
    first = next(fetched)
    time.sleep(0.2)
    assert first.instance.sop == "0" and len(calls) == 4  # the one yielded and 3 ahead, not all 20
    assert [f.instance.sop for f in fetched] == [str(k) for k in range(1, 20)] and len(calls) == 20
