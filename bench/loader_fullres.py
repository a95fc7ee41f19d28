"""Does the loader keep up with training on full-resolution 16-bit mammograms?

Writes ``--images`` synthetic 16-bit DICOMs of ``--dicom-size`` (default 4000x3000, a mammogram's size) with
pydicom, then measures, at ``--size`` px (default 2048) with ``resize: pad``:
- cold: images/s decoding each DICOM and writing the 16-bit cache entry (the first epoch);
- loader: images/s of a DataLoader (``--workers`` processes, batch ``--batch``) over the warm cache (later epochs);
- train: images/s of training steps (forward, loss, backward, Adam) of MLDAM goncalves2021 on densenet121 with
  attention_impl sdpa, checkpointing and the pooled mlp head (the cbis_ddsm_fullres preset's model), on
  ``--device``, batch ``--batch``, bf16 and channels_last on CUDA.
Last line: ``loader_vs_train_<size>=...`` (loader images/s over training images/s; >= 2 keeps the GPU fed
with room to spare). ``--quick``: 4 images of 600x400 at 256 px, 1 worker, 1 timed step.

Full run: ``python bench/loader_fullres.py`` (CPU training at 2048 px is slow: a few minutes a step), and on a
GPU machine ``python bench/loader_fullres.py --device cuda --workers 8 --batch 4``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attention_memory import _imports, build, train_step  # noqa: E402


def write_dicoms(folder: Path, n: int, shape: tuple[int, int]) -> list[Path]:
    """``n`` 16-bit MONOCHROME2 mammogram-sized DICOMs (a smooth blob plus noise, all 16 bits used)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    paths = []
    for i in range(n):
        blob = np.exp(-(((yy - shape[0] / 2) / (shape[0] / 3)) ** 2 + ((xx - shape[1] * 0.3) / (shape[1] / 3)) ** 2))
        arr = np.clip(blob * 60000 + rng.normal(0, 500, shape), 0, 65535).astype(np.uint16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = pydicom.uid.SecondaryCaptureImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"mg{i}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.Rows, ds.Columns, ds.SamplesPerPixel = "MG", shape[0], shape[1], 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = arr.tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def loader_rates(paths: list[Path], cache: Path, size: int, workers: int, batch: int) -> tuple[float, float]:
    """(cold images/s: decode + cache write, warm images/s through a DataLoader over the cache)."""
    import torch
    from medattn_plugins.datasets.file_dataset import FileDataset, LoadOptions, Sample, SkipLog

    opts = LoadOptions((size, size), 3, True, "error", str(cache), resize="pad")
    ds = FileDataset([Sample(path=str(p), label=i % 2, id=str(i), group=str(i)) for i, p in enumerate(paths)],
                     opts, SkipLog(None), dataset="bench")
    t = time.perf_counter()
    for i in range(len(ds)):
        ds[i]
    cold = len(ds) / (time.perf_counter() - t)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers, shuffle=True,
                                         persistent_workers=workers > 0)
    for _ in loader:  # workers started
        break
    t, seen = time.perf_counter(), 0
    for _ in range(2):
        for b in loader:
            seen += len(b["image"])
    return cold, seen / (time.perf_counter() - t)


def train_rate(size: int, device: str, batch: int, steps: int) -> float:
    import torch

    cfg = {"size": size, "arch": "densenet121", "attention": "mldam-goncalves2021", "impl": "sdpa",
           "checkpointing": True}
    torch.manual_seed(0)
    model = build(cfg).to(device).train()
    x = torch.randn(batch, 3, size, size, device=device)
    if device == "cuda":
        model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    train_step(model, x, opt, device == "cuda")  # warm-up
    times = []
    for _ in range(steps):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        train_step(model, x, opt, device == "cuda")
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return batch / float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--dicom-size", type=int, nargs=2, default=[4000, 3000], metavar=("ROWS", "COLS"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.size, args.images, args.dicom_size, args.workers, args.steps = 256, 4, [600, 400], 1, 1
    _imports()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_dicoms(Path(tmp), args.images, tuple(args.dicom_size))
        cold, warm = loader_rates(paths, Path(tmp) / "cache", args.size, args.workers, args.batch)
    train = train_rate(args.size, args.device, args.batch, args.steps)
    print(f"{args.size} px from {args.dicom_size[0]}x{args.dicom_size[1]} 16-bit DICOM: decode+cache {cold:.2f} img/s, "
          f"loader (cache, {args.workers} workers) {warm:.2f} img/s, train ({args.device}) {train:.2f} img/s")
    print(f"loader_vs_train_{args.size}={warm / train:.2f}")


if __name__ == "__main__":
    main()
