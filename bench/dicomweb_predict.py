"""``medattn predict`` from a real PACS over DICOMweb, storing the SRs back, against predict from the same files on
disk writing the same SRs into a folder.

64 mammogram-like instances (12-bit, ``--size`` px, JPEG 2000 lossless, as archives keep them) are written to a
folder and uploaded to a fresh Orthanc (its DICOMweb plugin, loopback) started for the run. Both sides run the
CLI's code path in-process with the same model file (the core's model, untrained: the numbers do not depend on
its weights), batch size and SR writer:

- files: ``medattn predict RUN FOLDER --dicom-out DIR`` (read, decode, predict, an SR per file into DIR);
- dicomweb: ``medattn predict RUN --dicomweb URL --series UID --store --dicom-out DIR`` (QIDO-RS, WADO-RS fetched
  and decoded by ``--workers`` threads, predict, an SR per instance, STOW-RS back).

Runs alternate, best of ``--repeats`` each after one untimed warm-up; both must give the same probabilities.
``sr_valid`` counts the last dicomweb run's SRs that dciodvfy passes without errors, that highdicom reads back to
the CSV's class and probability, and that the server holds. Final line:
``dicomweb_vs_files=<files time / dicomweb time> sr_valid=N/64 files_img_s=... dicomweb_img_s=...``.

    python bench/dicomweb_predict.py [--instances 64] [--size 256] [--backbone resnet18] [--workers 4]
"""
from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/dicom_studies.py: the fixture instances and the Orthanc launcher

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from predict_throughput import make_model_file  # noqa: E402
from pydicom.uid import JPEG2000Lossless, generate_uid  # noqa: E402

from medattn.cli import main as medattn_main  # noqa: E402
from medattn.inference import dicomweb  # noqa: E402
from medattn.inference.dicom_sr import read_finding  # noqa: E402
from tests.dicom_studies import blob, dciodvfy, instance, orthanc_server  # noqa: E402

ADMIN = {"MEDATTN_DICOMWEB_USER": "medattn", "MEDATTN_DICOMWEB_PASSWORD": "secret"}


def write_instances(folder: Path, n: int, size: int) -> tuple[str, str, list[Path]]:
    folder.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    rng = np.random.default_rng(0)
    paths = []
    for k in range(n):
        path = folder / f"{k:03d}.dcm"
        instance(blob(rng, size, size / 8), study=study, series=series, number=k + 1, syntax=JPEG2000Lossless).save_as(
            path, enforce_file_format=True)
        paths.append(path)
    return study, series, paths


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def run(args: list[str]) -> float:
    start = time.perf_counter()
    code = medattn_main([str(a) for a in args])
    took = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"medattn {' '.join(map(str, args[:3]))}... exited {code}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, default=64)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--model-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    import os

    os.environ.update(ADMIN)
    with tempfile.TemporaryDirectory() as tmp_name, orthanc_server(Path(tmp_name) / "orthanc") as server:
        tmp = Path(tmp_name)
        rd = make_model_file(tmp, a.backbone, a.model_size)
        study, series, paths = write_instances(tmp / "files", a.instances, a.size)
        client = dicomweb.connect(server.url)
        refused = {uid: why for uid, why in dicomweb.store(client, [pydicom.dcmread(p) for p in paths]).items() if why}
        if refused:
            raise SystemExit(f"the upload to {server.url} failed for {len(refused)} of {len(paths)} instance(s); "
                             f"first: {next(iter(refused.items()))}")
        common = ["--batch-size", a.batch_size, "--device", "cpu"]
        files_args = ["predict", rd.root, tmp / "files", "-o", tmp / "files.csv", "--dicom-out", tmp / "out_files",
                      *common]
        web_args = ["predict", rd.root, "--dicomweb", server.url, "--series", series, "--store", "--workers",
                    a.workers, "-o", tmp / "web.csv", "--dicom-out", tmp / "out_web", *common]
        times: dict[str, list[float]] = {"files": [], "dicomweb": []}
        for repeat in range(a.repeats + 1):
            for name, argv in (("files", files_args), ("dicomweb", web_args)):
                shutil.rmtree(tmp / f"out_{'files' if name == 'files' else 'web'}", ignore_errors=True)
                took = run(argv)
                if repeat:  # the first round warms up
                    times[name].append(took)
        by_files = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: r
                    for p, r in zip(paths, rows(tmp / "files.csv"))}
        web_rows = rows(tmp / "web.csv")
        for r in web_rows:
            other = by_files[r["path"].rsplit("/", 1)[1]]
            for key in r:
                if key.startswith("prob_"):
                    assert abs(float(r[key]) - float(other[key])) < 1e-5, (key, r[key], other[key])
        valid = 0
        for r in web_rows:
            sr = Path(r["sr"])
            if not sr.is_file() or any(line.startswith("Error") for line in dciodvfy(sr)):
                continue
            got = read_finding(sr)
            held = client.search_for_instances(study_instance_uid=study, search_filters={
                "SOPInstanceUID": pydicom.dcmread(sr, stop_before_pixels=True).SOPInstanceUID})
            if (got["label"] == r["predicted"] and abs(got["probability"] - float(r[f"prob_{r['predicted']}"])) < 1e-6
                    and len(held) == 1):
                valid += 1
    best_files, best_web = min(times["files"]), min(times["dicomweb"])
    print(f"files: {', '.join(f'{t:.2f}' for t in times['files'])} s; dicomweb: "
          f"{', '.join(f'{t:.2f}' for t in times['dicomweb'])} s ({a.instances} instances, {a.size} px J2K, "
          f"{a.backbone} at {a.model_size} px, batch {a.batch_size}, {a.workers} workers)")
    print(f"dicomweb_vs_files={best_files / best_web:.2f} sr_valid={valid}/{a.instances} "
          f"files_img_s={a.instances / best_files:.1f} dicomweb_img_s={a.instances / best_web:.1f}")


if __name__ == "__main__":
    main()
