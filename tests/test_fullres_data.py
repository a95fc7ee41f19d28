"""Full-resolution data path: aspect-preserving resize with padding, 16-bit depth kept through the decode cache."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from medattn_plugins.datasets.file_dataset import FileDataset, LoadOptions, Sample, SkipLog

from medattn.image_io import fit, mask_to_tensor, to_tensor
from tests.test_image_io import write_dicom


def test_pad_keeps_the_aspect_ratio_and_pads_bottom_right():
    img = np.ones((40, 20), dtype=np.float32)  # portrait, like a mammogram
    t = to_tensor(img, (16, 16), 1, "pad")
    assert t.shape == (1, 16, 16)
    assert torch.allclose(t[0, :, :8], torch.ones(16, 8)) and torch.all(t[0, :, 8:] == 0)  # 16x8, then black
    wide = fit(torch.ones(1, 10, 30), (12, 12), "pad")
    assert torch.allclose(wide[0, :4], torch.ones(4, 12)) and torch.all(wide[0, 4:] == 0)
    stretched = to_tensor(img, (16, 16), 1)
    assert torch.allclose(stretched, torch.ones(1, 16, 16))  # the default is unchanged


def test_masks_are_padded_like_their_images():
    mask = np.zeros((40, 20), dtype=np.uint8)
    mask[:20, :10] = 1  # the top-left quarter
    m = mask_to_tensor(mask, (16, 16), "pad")
    assert m.shape == (1, 16, 16) and m[0, :8, :4].min() == 1 and m.sum() == 32


def test_16_bit_dicom_keeps_its_depth_through_the_cache(tmp_path: Path):
    ramp = np.linspace(0, 65535, 64 * 48).reshape(64, 48).astype(np.uint16)
    path = write_dicom(tmp_path / "mg.dcm", ramp)
    opts = LoadOptions(size=(32, 32), channels=3, dicom_voi=True, on_bad_sample="error",
                       cache_dir=str(tmp_path / "cache"), resize="pad")
    ds = FileDataset([Sample(path=str(path), label=1, id="a", group="p")], opts, SkipLog(None), dataset="t")
    first, second = ds[0]["image"], ds[0]["image"]  # decoded, then read back from the cache
    files = list((tmp_path / "cache").rglob("*.npy"))
    assert len(files) == 1 and np.load(files[0]).dtype == np.uint16
    torch.testing.assert_close(second, first, atol=1 / 65535, rtol=0)
    levels = torch.unique(second[0, :, :24])
    assert levels.numel() > 256  # more grey levels than 8 bits hold
    assert torch.all(second[:, :, 24:] == 0)  # 64x48 -> 32x24, padded
    stretch = FileDataset(ds.samples, LoadOptions((32, 32), 3, True, "error", str(tmp_path / "cache")),
                          SkipLog(None), dataset="t")
    assert stretch[0]["image"][0, :, 24:].max() > 0  # another cache entry: the settings are part of the key
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 2
