"""Full-resolution data path: aspect-preserving resize with padding, 16-bit depth kept through the decode cache."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from medattn_plugins.datasets.file_dataset import FileDataset, LoadOptions, Sample, SkipLog
from PIL import Image

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


def test_the_cache_keeps_one_channel_of_a_grey_image_and_reads_old_three_channel_entries(tmp_path: Path):
    ramp = np.linspace(0, 65535, 64 * 48).reshape(64, 48).astype(np.uint16)
    path = write_dicom(tmp_path / "mg.dcm", ramp)
    mask = tmp_path / "mask.png"
    Image.fromarray(np.pad(np.full((16, 16), 255, np.uint8), ((0, 48), (0, 32)))).save(mask)
    sample = Sample(path=str(path), label=1, id="a", group="p", mask_paths=[str(mask)])
    opts = LoadOptions((32, 32), 3, True, "error", str(tmp_path / "cache"))
    plain = FileDataset([sample], LoadOptions((32, 32), 3, True, "error", None), SkipLog(None), True, "t")[0]
    ds = FileDataset([sample], opts, SkipLog(None), has_masks=True, dataset="t")
    first = ds[0]
    [entry] = (tmp_path / "cache").rglob("*.npy")
    assert np.load(entry).shape == (2, 32, 32)  # one grey channel and the mask, not three copies of the grey
    for got in (first, ds[0]):  # decoded, then expanded from the cache at load
        assert got["image"].shape == (3, 32, 32) and got["mask"].shape == (1, 32, 32)
        torch.testing.assert_close(got["image"], plain["image"], atol=1 / 65535, rtol=0)
        torch.testing.assert_close(got["mask"], plain["mask"], atol=1 / 65535, rtol=0)
    cached = ds[0]["image"]
    old = np.concatenate([np.repeat(np.load(entry)[:1], 3, axis=0), np.load(entry)[1:]])  # as caches were written
    np.save(entry, old)
    assert torch.equal(ds[0]["image"], cached)  # read as it is, no error
    np.save(entry, old[:2, :, :5])  # an entry of another shape is decoded again and rewritten
    assert torch.equal(ds[0]["image"], first["image"])
    assert np.load(entry).shape == (2, 32, 32)


def test_colour_images_keep_their_three_channels_in_the_cache(tmp_path: Path):
    rgb = np.random.default_rng(0).integers(0, 255, (20, 20, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    ds = FileDataset([Sample(path=str(tmp_path / "c.png"), label=0, id="c", group="c")],
                     LoadOptions((16, 16), 3, False, "error", str(tmp_path / "cache")), SkipLog(None), dataset="t")
    first = ds[0]["image"]
    [entry] = (tmp_path / "cache").rglob("*.npy")
    assert np.load(entry).shape == (3, 16, 16)
    torch.testing.assert_close(ds[0]["image"], first, atol=1 / 65535, rtol=0)
    assert not torch.equal(first[0], first[1])
