"""medattn's train job against a plain hand-written PyTorch loop: same model, data, batch size and epochs.

Both sides are timed end to end (model construction, every epoch's training and validation pass, and a
checkpoint per epoch: what a hand-written script does too), alternating runs, best of ``--repeats``.
Final line: ``runner_img_s=... handloop_img_s=... runner_vs_handloop=...`` (training images per second);
on CUDA also ``amp_vs_fp32=...x`` (the train job with bf16 AMP + channels_last against fp32).

    python bench/runner_overhead.py [--backbone test_resnet] [--size 64] [--n-train 256] [--epochs 2] [--batch-size 32] [--repeats 2]
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from medattn.config import load_experiment
from medattn.runs.plan import plan
from medattn.runs.runner import run_experiment

CLOCK = time.perf_counter  # --clock cpu: this process's CPU time (steadier on a shared, oversubscribed machine)

EXPERIMENT = """\
name: bench
seed: 1
device: {device}
dataset:
  name: synthetic_lesions
  image_size: {size}
  params: {{n_train: {n_train}, n_val: {n_val}, n_test: 8}}
model:
  backbone: {backbone}
  attention: {{name: none}}
train:
  epochs: {epochs}
  batch_size: {batch_size}
  optimizer: {{name: adam, lr: 1.0e-4}}
  checkpoints: [best_val_loss]
  amp: {amp}
  channels_last: {channels_last}
  progress: false
jobs: [train]
"""


BACKBONES = {"resnet18": "{name: resnet18, params: {pretrained: false}}",
             "test_resnet": "{name: timm, params: {model_name: test_resnet, pretrained: false}}"}


def experiment(args, workdir: Path, amp: str = "none", channels_last: bool = False):
    """The experiment file for one side, written under ``workdir``."""
    file = workdir / f"bench_{amp}_{channels_last}.yaml"
    file.write_text(EXPERIMENT.format(device=args.device, size=args.size, n_train=args.n_train, n_val=args.n_val,
                                      epochs=args.epochs, batch_size=args.batch_size, amp=amp,
                                      backbone=BACKBONES[args.backbone],
                                      channels_last=str(channels_last).lower()))
    return load_experiment(file)


def runner_side(args, workdir: Path, out: str, amp: str = "none", channels_last: bool = False) -> float:
    """Seconds for medattn's train job (fresh run directory)."""
    exp = experiment(args, workdir, amp, channels_last)
    shutil.rmtree(workdir / out, ignore_errors=True)
    start = CLOCK()
    run_experiment(exp, output_dir=str(workdir / out), log=lambda *_: None)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return CLOCK() - start


def hand_side(args, workdir: Path, out: str) -> float:
    """Seconds for a plain loop over the same prepared splits and the same model."""
    (run, _), = plan(experiment(args, workdir), output_dir=str(workdir / out))
    device = run.device
    ckpt = workdir / out / "hand_last.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    start = CLOCK()
    _, splits = run.data()  # the same datasets and model, built inside the timing as the train job does
    model = run.new_model().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = nn.BCEWithLogitsLoss()
    g = torch.Generator()
    g.manual_seed(1)
    train = torch.utils.data.DataLoader(splits["train"], batch_size=args.batch_size, shuffle=True, generator=g,
                                        pin_memory=device.type == "cuda")
    val = torch.utils.data.DataLoader(splits["val"], batch_size=args.batch_size)
    for _ in range(args.epochs):
        model.train()
        for batch in train:
            x, y = batch["image"].to(device, non_blocking=True), batch["label"].to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x).reshape(-1), y.float())
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for batch in val:
                model(batch["image"].to(device))
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, ckpt)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return CLOCK() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", choices=sorted(BACKBONES), default="test_resnet",
                    help="test_resnet (timm's tiny ResNet: minutes on 2 CPU cores) or resnet18")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--n-train", type=int, default=256)
    ap.add_argument("--n-val", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: elapsed time; cpu: process CPU time (use with --threads 1 on a busy machine)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    args = ap.parse_args()
    global CLOCK
    if args.clock == "cpu":
        CLOCK = time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    images = args.n_train * args.epochs
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        hand_side(args, workdir, "warm")  # first-touch costs (allocator, kernels, imports) paid by neither side
        runner_s, hand_s = [], []
        for r in range(args.repeats):
            runner_s.append(runner_side(args, workdir, f"runner{r}"))
            hand_s.append(hand_side(args, workdir, f"hand{r}"))
            print(f"repeat {r + 1}: runner {runner_s[-1]:.2f}s  handloop {hand_s[-1]:.2f}s", flush=True)
        runner_ips, hand_ips = images / min(runner_s), images / min(hand_s)
        line = (f"runner_img_s={runner_ips:.1f} handloop_img_s={hand_ips:.1f} "
                f"runner_vs_handloop={runner_ips / hand_ips:.3f}")
        if torch.cuda.is_available() and args.device.startswith("cuda"):
            fp32 = min(runner_side(args, workdir, f"fp32_{r}") for r in range(args.repeats))
            amp = min(runner_side(args, workdir, f"amp_{r}", "bf16" if torch.cuda.is_bf16_supported() else "fp16",
                                  True) for r in range(args.repeats))
            line += f" amp_vs_fp32={fp32 / amp:.2f}x"
    print(line)


if __name__ == "__main__":
    main()
