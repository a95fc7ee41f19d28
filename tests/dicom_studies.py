"""DICOM test studies written on the fly: small mammograms (no frame of reference, as most are) and CT-like
slices (a patient coordinate system, so a parametric map can be written on their grid), optionally compressed
by pydicom's encoders, and the bundled pydicom test files for the decoders."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def instance(arr: np.ndarray, *, study: str, series: str, number: int = 1, grid: bool = False,
             patient: str = "MEDATTN^TEST", patient_id: str = "P0001", syntax: str | None = None,
             **tags: object) -> FileDataset:
    """A greyscale 12-bit instance of ``arr``: a mammogram (MG, for presentation, no frame of reference) or, with
    ``grid``, a CT slice with a frame of reference; compressed to ``syntax`` when given."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE if grid else MG_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient, patient_id, "19600101", "F"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20240102", "101500", "ACC0001", "1"
    ds.ReferringPhysicianName = ""
    ds.SeriesNumber, ds.InstanceNumber = 1, number
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if grid:
        ds.Modality = "CT"
        ds.FrameOfReferenceUID = generate_uid(prefix=None, entropy_srcs=[study, "frame"])
        ds.PositionReferenceIndicator = ""
        ds.ImagePositionPatient = [0.0, 0.0, float(number)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [0.5, 0.5], 1.0
        ds.RescaleIntercept, ds.RescaleSlope, ds.ImageType = 0, 1, ["ORIGINAL", "PRIMARY", "AXIAL"]
    else:
        ds.Modality, ds.PresentationIntentType = "MG", "FOR PRESENTATION"
        ds.ImagerPixelSpacing = [0.1, 0.1]
    for key, value in tags.items():
        setattr(ds, key, value)
    pixels = np.asarray(arr, dtype=np.uint16)
    ds.PixelData = pixels.tobytes()
    if syntax is not None:
        ds.compress(syntax, pixels)
    return ds


def blob(rng: np.random.Generator, size: int, sigma: float | None = None) -> np.ndarray:
    """A ``size`` x ``size`` 12-bit mammogram-like image: a Gaussian lesion (``sigma`` px, default size / 6) at a
    random place in its middle half, over a background with noise; ``rng`` draws the place, then the noise."""
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
    sigma = size / 6 if sigma is None else sigma
    lesion = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma ** 2))
    return np.clip(800 + 2500 * lesion + rng.normal(0, 60, (size, size)), 0, 4095)


def study(folder: Path, n: int = 3, *, size: int = 24, grid: bool = False, seed: int = 0, **tags: object
          ) -> list[Path]:
    """``n`` instances of one new study and series written as ``folder/<k>.dcm`` (random lesion-like blobs)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    study_uid, series_uid = generate_uid(), generate_uid()
    out = []
    for k in range(n):
        path = folder / f"{k:03d}.dcm"
        instance(blob(rng, size), study=study_uid, series=series_uid, number=k + 1, grid=grid, **tags).save_as(
            path, enforce_file_format=True)
        out.append(path)
    return out


def bundled(name: str) -> Path:
    """A DICOM file bundled with pydicom (never downloaded)."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    assert path is not None, f"pydicom's bundled test file {name} is missing"
    return Path(path)


def dciodvfy(path: Path) -> list[str]:
    """The lines dciodvfy (dicom3tools) prints for a file: errors start with ``Error``, warnings with ``Warning``;
    the test is skipped, with the reason, where dciodvfy is not installed."""
    import shutil
    import subprocess

    import pytest

    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy not installed (apt-get install dicom3tools; .ci/run does)")
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]


def dciodvfy_errors(path: Path) -> list[str]:
    return [line for line in dciodvfy(path) if line.startswith("Error")]


# ---------------------------------------------------------------------------------------------------------------
# a real PACS: Orthanc with its DICOMweb plugin (tests/conftest.py's session fixture and bench/dicomweb_predict.py)
# ---------------------------------------------------------------------------------------------------------------
ORTHANC_PLUGINS = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so")
# the "reader" account may read but not write: its STOW-RS requests are refused (403), a rejection to test
ORTHANC_LUA = """
function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)
  if username == 'reader' and method ~= 'GET' then
    return false
  end
  return true
end
"""
ORTHANC_USERS = {"medattn": "secret", "reader": "secret"}


class OrthancMissing(Exception):
    """Orthanc or its DICOMweb plugin is not installed (str(e) says how to get them)."""


@contextlib.contextmanager
def orthanc_server(folder: Path, start_timeout: float = 30.0) -> Iterator[SimpleNamespace]:
    """Orthanc on a free loopback port, HTTP only, no remote access, its storage and config in ``folder``, the
    DICOMweb plugin at ``.url``; users ``medattn`` (read and write) and ``reader`` (read only), password
    ``secret``. Stopped on exit."""
    import base64
    import json
    import shutil
    import socket
    import subprocess
    import time
    import urllib.request

    exe = shutil.which("Orthanc")
    plugin = next((p for p in ORTHANC_PLUGINS if Path(p).exists()), None)
    if exe is None or plugin is None:
        raise OrthancMissing("Orthanc or its DICOMweb plugin is not installed (apt-get install orthanc "
                             "orthanc-dicomweb; .ci/run does)")
    folder.mkdir(parents=True, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (folder / "filter.lua").write_text(ORTHANC_LUA)
    config = {"Name": "medattn-tests", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
              "HttpPort": port, "DicomServerEnabled": False, "RemoteAccessAllowed": False, "SslEnabled": False,
              "AuthenticationEnabled": True, "RegisteredUsers": ORTHANC_USERS, "Plugins": [plugin],
              "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
              "LuaScripts": [str(folder / "filter.lua")], "HttpTimeout": 30}
    (folder / "orthanc.json").write_text(json.dumps(config))
    root = f"http://127.0.0.1:{port}"
    auth = base64.b64encode(b"medattn:secret").decode()
    with open(folder / "orthanc.log", "wb") as log:
        proc = subprocess.Popen([exe, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + start_timeout
            while True:
                try:
                    request = urllib.request.Request(f"{root}/system", headers={"Authorization": f"Basic {auth}"})
                    urllib.request.urlopen(request, timeout=1).read()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("Orthanc did not start: "
                                           + (folder / "orthanc.log").read_text(errors="replace")[-2000:]) from None
                    time.sleep(0.1)
            yield SimpleNamespace(url=f"{root}/dicom-web", root=root, port=port, log=folder / "orthanc.log")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
