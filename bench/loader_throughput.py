"""Data-loader images/s (configured workers, without and with the decoded-image cache) against the
images/s of a densenet121 training step at 224 px, measured side by side in one run on this machine.

    python bench/loader_throughput.py [--workers 2] [--images 192] [--source-size 1024] [--format png16|dicom|jpeg]

Final line: ``loader_img_s=... train_img_s=... loader_vs_train=...x`` where loader_img_s is the slower of
the two loader measurements (no cache: first epoch decoding; cache: later epochs).
"""
from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from medattn_plugins.datasets import csv_list
from PIL import Image
from torch.utils.data import DataLoader

from medattn.hookspecs import DataContext
from medattn.params import component_params
from medattn.registry import default_registry


def make_images(root: Path, n: int, side: int, fmt: str) -> None:
    """n synthetic greyscale mammogram-sized files and a labels.csv."""
    rng = np.random.default_rng(0)
    rows = []
    base = rng.integers(0, 65535, (side, side), dtype=np.uint16)
    for i in range(n):
        arr = np.roll(base, i * 7, axis=0)
        if fmt == "dicom":
            from pydicom.dataset import FileDataset, FileMetaDataset
            from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
            meta.MediaStorageSOPInstanceUID = generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = FileDataset("x", {}, file_meta=meta, preamble=b"\0" * 128)
            ds.Rows, ds.Columns, ds.SamplesPerPixel = side, side, 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
            ds.WindowCenter, ds.WindowWidth = 30000, 40000
            ds.PixelData = arr.tobytes()
            name = f"{i}.dcm"
            ds.save_as(root / name, enforce_file_format=True)
        elif fmt == "jpeg":
            name = f"{i}.jpg"
            Image.fromarray((arr >> 8).astype(np.uint8)).save(root / name, quality=90)
        else:
            name = f"{i}.png"
            Image.fromarray(arr).save(root / name)
        rows.append([name, i % 2])
    with open(root / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        w.writerows(rows)


def loader_rate(ds: torch.utils.data.Dataset, workers: int, batch: int) -> float:
    """Images/s of one full pass of a DataLoader over ds."""
    dl = DataLoader(ds, batch_size=batch, num_workers=workers, shuffle=True,
                    persistent_workers=False)
    t = time.perf_counter()
    n = 0
    for b in dl:
        n += b["image"].shape[0]
    return n / (time.perf_counter() - t)


def train_rate(batch: int, steps: int) -> float:
    """Images/s of densenet121 (random init) forward + backward + Adam step at 224 px."""
    import torchvision

    model = torchvision.models.densenet121(weights=None, num_classes=1)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    x = torch.rand(batch, 3, 224, 224)
    y = torch.rand(batch, 1).round()
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    for i in range(steps + 1):
        if i == 1:  # the first step warms up allocators
            t = time.perf_counter()
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    return batch * steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--source-size", type=int, default=1024)
    ap.add_argument("--format", choices=["png16", "dicom", "jpeg"], default="png16")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--train-steps", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        root.mkdir()
        make_images(root, args.images, args.source_size, args.format)
        params = {"root": str(root)}

        def train_split(cache: bool) -> torch.utils.data.Dataset:
            ctx = DataContext(seed=0, image_size=(224, 224), channels=3, cache_dir=Path(tmp) / "cache",
                              log=lambda m: None)
            given = {**params, "cache": cache, "val_fraction": 0.02, "test_fraction": 0.02}
            filled = component_params(default_registry(), "dataset", {"name": "csv", "params": given})
            return csv_list.build(filled, ctx).splits["train"]

        nocache = loader_rate(train_split(False), args.workers, args.batch)
        ds = train_split(True)
        loader_rate(ds, args.workers, args.batch)  # first epoch fills the cache
        cached = loader_rate(ds, args.workers, args.batch)
    train = train_rate(args.train_batch, args.train_steps)
    print(f"format={args.format} source={args.source_size}px images={args.images} workers={args.workers} "
          f"torch_threads={torch.get_num_threads()}")
    print(f"loader_nocache_img_s={nocache:.1f} loader_cache_img_s={cached:.1f} train_img_s={train:.1f}")
    loader = min(nocache, cached)
    print(f"loader_img_s={loader:.1f} train_img_s={train:.1f} loader_vs_train={loader / train:.1f}x")


if __name__ == "__main__":
    main()
