"""Image reading: 8/16-bit PNG, JPEG, DICOM (rescale, window, MONOCHROME1), corrupt files, resizing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from medattn_plugins.datasets.cache import DiskCache
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medattn.image_io import BadImage, read_image, to_tensor


def write_dicom(path: Path, arr: np.ndarray, photometric: str = "MONOCHROME2", **tags: object) -> Path:
    """A single-frame uint16 greyscale DICOM at ``path`` with extra ``tags``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = arr.astype(np.uint16).tobytes()
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_png_8_and_16_bit_and_rgb(tmp_path: Path) -> None:
    a8 = np.array([[0, 128], [255, 64]], dtype=np.uint8)
    Image.fromarray(a8).save(tmp_path / "g8.png")
    assert np.allclose(read_image(tmp_path / "g8.png"), a8 / 255.0)
    a16 = np.array([[0, 1000], [65535, 30000]], dtype=np.uint16)
    Image.fromarray(a16).save(tmp_path / "g16.png")
    got = read_image(tmp_path / "g16.png")
    assert got.shape == (2, 2) and np.allclose(got, a16 / 65535.0, atol=1e-6)
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=100)
    got = read_image(tmp_path / "c.jpg")
    assert got.shape == (4, 4, 3) and got[..., 0].mean() > 0.9
    grey_rgb = np.repeat(a8[..., None], 3, axis=2)
    Image.fromarray(grey_rgb).save(tmp_path / "gr.png")
    assert read_image(tmp_path / "gr.png").shape == (2, 2)


def test_dicom_modality_window_and_monochrome1(tmp_path: Path) -> None:
    arr = np.array([[0, 100], [200, 300]], dtype=np.uint16)
    plain = read_image(write_dicom(tmp_path / "a.dcm", arr))
    assert np.allclose(plain, arr / 300.0)
    inv = read_image(write_dicom(tmp_path / "b.dcm", arr, photometric="MONOCHROME1"))
    assert np.allclose(inv, 1 - arr / 300.0)
    # rescale slope/intercept then a window 100..300 (centre 200, width 200): 0 and 100 -> 0
    win = read_image(write_dicom(tmp_path / "c.dcm", arr, RescaleSlope=2, RescaleIntercept=-100,
                                 WindowCenter=300, WindowWidth=400))
    # modality values: -100, 100, 300, 500; window [100, 500] -> 0, 0, .5, 1 (approximately)
    assert win[0, 0] == 0 and win[1, 1] == pytest.approx(1.0, abs=0.01)
    assert win[1, 0] == pytest.approx(0.5, abs=0.02) and win[0, 1] <= 0.01
    no_voi = read_image(tmp_path / "c.dcm", dicom_voi=False)
    assert np.allclose(no_voi, arr / 300.0)
    # detected without suffix via the DICM preamble
    (tmp_path / "c.dcm").rename(tmp_path / "c.bin")
    assert read_image(tmp_path / "c.bin").shape == (2, 2)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(BadImage, match="not found"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(BadImage, match="cannot decode"):
        read_image(tmp_path / "bad.png")
    (tmp_path / "bad.dcm").write_bytes(b"garbage" * 10)
    with pytest.raises(BadImage):
        read_image(tmp_path / "bad.dcm")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImage):
        read_image(tmp_path / "t.png")


def test_to_tensor_resizes_and_sets_channels() -> None:
    g = np.random.default_rng(0).random((30, 40)).astype(np.float32)
    t3 = to_tensor(g, (16, 16), 3)
    assert tuple(t3.shape) == (3, 16, 16) and bool((t3[0] == t3[2]).all())
    assert tuple(to_tensor(np.stack([g] * 3, -1), (8, 8), 1).shape) == (1, 8, 8)
    assert 0 <= float(t3.min()) and float(t3.max()) <= 1


def test_disk_cache_roundtrip_and_key(tmp_path: Path) -> None:
    f = tmp_path / "x.png"
    f.write_bytes(b"1")
    c = DiskCache(tmp_path / "cache", "size=8")
    k = c.key([str(f)])
    assert c.get(k) is None
    arr = np.random.default_rng(0).random((1, 8, 8)).astype(np.float32)
    c.put(k, arr)
    assert np.allclose(c.get(k), arr, atol=1e-4)
    assert DiskCache(tmp_path / "cache", "size=16").key([str(f)]) != k
    f.write_bytes(b"22")
    assert c.key([str(f)]) != k
