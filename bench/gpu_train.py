"""GPU training throughput: medattn's train job against a hand-written AMP loop, on the same model and data.

Cases (``--cases``): resnet50 and densenet121 at 512 px, and densenet121 with MLDAM (goncalves2021, as the
full-resolution preset: a pooled head, ``attention_impl: auto``) at 1024 px. For each case three runs, one after
the other, on the same images (grey PNGs written once to a temporary folder, decoded into medattn's cache in the
first epoch, so that the loader does not limit either side):

- the train job (``medattn.run``), ``train.amp: bf16`` and ``train.channels_last: true``;
- a hand-written loop: the same model (``Run.new_model()``), the same datasets (``Run.data()``) and DataLoaders
  (workers, pinned memory, prefetch), Adam, BCE-with-logits, ``torch.autocast(bfloat16)``, channels_last, no
  host sync inside the epoch: what a careful PyTorch script does;
- the train job in fp32 without channels_last.

Each side trains ``--epochs`` epochs (default 2; the first warms the cache, the kernels and the allocator) and
its images/s is that of its last training pass, loading included (the train job's ``train_img_s`` in
history.csv, the hand loop timed the same way, with a CUDA synchronize at the end). Neither side changes cuDNN's
flags (torch's defaults). The loader alone over the same epoch is also timed: where it is slower than training,
both sides wait on it and the comparison says nothing about the step.

Lines per case, then the last line ``gpu_train_vs_handloop=... amp_channels_last_speedup=...``: the train job's
images/s over the hand loop's, and the train job's bf16 + channels_last images/s over its fp32 images/s, each
the smallest over the cases (the weakest case).

Without CUDA it says so and ends with ``=na`` values (exit status 0). ``--smoke`` runs the whole script on the
CPU at 64 and 128 px with a few images, to check it works (AMP and channels_last are off on the CPU, so its
speedup is ``na``).

    python bench/gpu_train.py [--cases resnet50 densenet121 mldam] [--images 256] [--epochs 2] [--workers 8]
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
import tempfile
import time
from pathlib import Path

CASES = {  # name: (image size, model section, batch size)
    "resnet50": (512, "{backbone: {name: resnet50, params: {pretrained: false}}, attention: {name: none}}", 32),
    "densenet121": (512, "{backbone: {name: densenet121, params: {pretrained: false}}, attention: {name: none}}",
                    32),
    "mldam": (1024, "{backbone: {name: densenet121, params: {pretrained: false}}, attention: {name: mldam, "
                    "params: {variant: goncalves2021, attention_impl: auto}}, head: {name: mlp, params: "
                    "{hidden: [C, C/2], dropout: 0.25, pool: avg}}}", 8),
}
SMOKE_SIZE = {512: 64, 1024: 128}

EXPERIMENT = """\
name: {name}
seed: 1
device: {device}
dataset:
  name: image_folder
  image_size: {size}
  num_workers: {workers}
  params: {{root: {root}, cache: true}}
model: {model}
train:
  epochs: {epochs}
  batch_size: {batch}
  optimizer: {{name: adam, lr: 1.0e-4}}
  checkpoints: [best_val_loss]
  amp: {amp}
  channels_last: {channels_last}
  progress: false
jobs: [train]
"""


def write_images(root: Path, size: int, n_train: int, n_val: int) -> None:
    """Grey 8-bit PNGs in class folders under train/ val/ test/ (two classes, a bright square for class 1)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val), ("test", 4)):
        for i in range(n):
            label = i % 2
            img = rng.integers(0, 128, (size, size), dtype=np.uint8)
            if label:
                img[size // 4: size // 2, size // 4: size // 2] += 100
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{split}{i:04d}.png", compress_level=1)


def experiment_file(workdir: Path, case: str, size: int, args, amp: str, channels_last: bool) -> Path:
    _, model, batch = CASES[case]
    name = f"{case}_{amp}_{'cl' if channels_last else 'nchw'}"
    file = workdir / f"{name}.yaml"
    file.write_text(EXPERIMENT.format(name=name, device=args.device, size=size, workers=args.workers,
                                      root=workdir / f"images{size}", model=model, epochs=args.epochs,
                                      batch=args.batch or batch, amp=amp, channels_last=str(channels_last).lower()))
    return file


def train_job(file: Path, out: Path) -> float:
    """The train job's images/s in its last epoch (history.csv's train_img_s)."""
    from medattn.config import load_experiment
    from medattn.runs.runner import run_experiment

    run_experiment(load_experiment(file), output_dir=str(out), log=lambda *_: None)
    [history] = out.rglob("history.csv")
    with open(history) as fh:
        return float(list(csv.DictReader(fh))[-1]["train_img_s"])


def hand_loop(file: Path, out: Path, args) -> tuple[float, float]:
    """(images/s of the last training pass, images/s of the loader alone over one epoch) of a hand-written loop:
    autocast (bf16, or fp16 with a GradScaler) and channels_last on CUDA, nothing read back from the device inside
    the epoch."""
    import torch
    from torch import nn

    from medattn.config import load_experiment
    from medattn.runs.plan import plan
    from medattn.train import engine as E

    (run, _), = plan(load_experiment(file), output_dir=str(out))
    cfg, device = run.config, run.device
    cuda = device.type == "cuda"
    _, splits = run.data()
    torch.manual_seed(cfg["seed"])
    model = run.new_model().to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = nn.BCEWithLogitsLoss()
    dtype = torch.bfloat16 if cfg["train"]["amp"] == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and dtype is torch.float16)
    settings = E.LoaderSettings(cfg["dataset"]["num_workers"], **cfg["train"]["loader"])
    batch_size = cfg["train"]["batch_size"]
    ips = 0.0
    for epoch in range(args.epochs):
        loader = E.make_loader(splits["train"], batch_size, True, 1000 * cfg["seed"] + epoch, device, settings)
        model.train()
        if cuda:
            torch.cuda.synchronize()
        start, images = time.perf_counter(), 0
        for batch in loader:
            x = batch["image"].to(device, non_blocking=True)
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            y = batch["label"].to(device, non_blocking=True).float()
            with torch.autocast(device.type, dtype=dtype, enabled=cuda):
                logits = model(x)
            loss = loss_fn(logits.reshape(-1).float(), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            images += len(y)
        if cuda:
            torch.cuda.synchronize()
        ips = images / (time.perf_counter() - start)
    loader = E.make_loader(splits["train"], batch_size, True, 0, device, settings)
    start, images = time.perf_counter(), 0
    for batch in loader:
        batch["image"].to(device, non_blocking=True)
        images += len(batch["label"])
    if cuda:
        torch.cuda.synchronize()
    return ips, images / (time.perf_counter() - start)


def fmt(value: float | None, digits: int = 2) -> str:
    return "na" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    ap.add_argument("--images", type=int, default=256, help="training images per epoch")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per side (the last one is timed)")
    ap.add_argument("--workers", type=int, default=8, help="dataset.num_workers of both sides")
    ap.add_argument("--batch", type=int, default=0, help="batch size of every case (0: each case's own)")
    ap.add_argument("--smoke", action="store_true", help="CPU, 64 and 128 px, 8 images: checks the script runs")
    args = ap.parse_args()
    import torch

    if args.smoke:
        args.device, args.images, args.workers, args.batch = "cpu", 8, 0, 4
    elif not torch.cuda.is_available():
        print("gpu_train: no CUDA device here, so there is no GPU training to measure; run it on a machine with an "
              "NVIDIA GPU (or --smoke to check the script on the CPU)", file=sys.stderr)
        print("gpu_train_vs_handloop=na amp_channels_last_speedup=na")
        return 0
    else:
        args.device = "cuda"
    amp = "bf16" if args.device == "cuda" and torch.cuda.is_bf16_supported() else "fp16"
    if args.device == "cuda":
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, train.amp {amp}", flush=True)
    vs_hand, speedup = [], []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for case in args.cases:
            size = CASES[case][0]
            size = SMOKE_SIZE[size] if args.smoke else size
            if not (workdir / f"images{size}").is_dir():
                write_images(workdir / f"images{size}", size, args.images, max(8, args.images // 8))
            job = train_job(experiment_file(workdir, case, size, args, amp, True), workdir / f"{case}_job")
            hand, loader = hand_loop(experiment_file(workdir, case, size, args, amp, True), workdir / f"{case}_hand",
                                     args)
            fp32 = train_job(experiment_file(workdir, case, size, args, "none", False), workdir / f"{case}_fp32")
            vs_hand.append(job / hand)
            speedup.append(job / fp32 if args.device == "cuda" else math.nan)
            print(f"{case} {size} px: train job {job:.1f} img/s, hand loop {hand:.1f} img/s "
                  f"(ratio {job / hand:.3f}), train job fp32 {fp32:.1f} img/s (amp + channels_last: "
                  f"{fmt(speedup[-1])}), loader alone {loader:.1f} img/s"
                  f"{' (slower than training: both sides wait on it)' if loader < max(job, hand) else ''}",
                  flush=True)
    print(f"gpu_train_vs_handloop={fmt(min(vs_hand), 3)} amp_channels_last_speedup={fmt(min(speedup))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
