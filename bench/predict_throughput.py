"""``medattn predict`` on a folder of PNG files against a hand-written PyTorch loop: same model, batch size, images.

A model file (the core's model, untrained: the numbers do not depend on the weights) sits in a run directory;
256 greyscale 8-bit PNGs (512 x 512, like exported X-rays) sit in a folder. Both sides are timed end to end:
- predict: ``medattn predict RUN_DIR FOLDER --output preds.csv`` in-process (the CLI's code path: load the
  model file, list the folder, decode, resize, normalise, batched forward, the CSV written atomically);
- handloop: what a user writes by hand with PIL and torchvision: load the same model file, list the folder,
  open each PNG, to tensor, resize (bilinear, antialiased), grey to 3 channels, normalise, batched forward,
  probabilities, a CSV.
Runs alternate, best of ``--repeats`` each after one untimed warm-up; both must give the same probabilities.
Final line: ``predict_img_s=... handloop_img_s=... predict_vs_handloop=...``.

    python bench/predict_throughput.py [--images 256] [--backbone resnet18] [--size 224] [--batch-size 32]
"""
from __future__ import annotations

import argparse
import csv
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medattn.cli import main as medattn_main
from medattn.components.model import build_model
from medattn.config import load_experiment
from medattn.store import checkpoints
from medattn.store.rundir import RunDir

EXPERIMENT = """\
name: bench_predict
seed: 1
device: cpu
dataset: {{name: synthetic_lesions, image_size: {size}}}
model:
  backbone: {{name: {backbone}, params: {{pretrained: false}}}}
  attention: {{name: none}}
"""


def make_model_file(tmp: Path, backbone: str, size: int) -> RunDir:
    """runs/bench_predict/default/checkpoints/best_val_loss.pt: the model as built, with the train job's meta."""
    file = tmp / "bench.yaml"
    file.write_text(textwrap.dedent(EXPERIMENT.format(backbone=backbone, size=size)))
    exp = load_experiment(file)
    config = exp.variants[0].config.data
    classes = ["NORMAL", "PNEUMONIA"]
    model = build_model(exp.registry, config, classes)
    meta = checkpoints.model_meta(config, classes, model.backbone, exp.registry, None)
    meta["threshold"] = {"value": 0.5, "rule": "fixed", "source": "test.threshold"}
    run = RunDir(tmp / "runs" / "bench_predict" / "default")
    checkpoints.save({"format": checkpoints.FORMAT, "model": model.state_dict(), "epoch": 1, "monitor": "val_loss",
                      "value": 1.0, "meta": meta}, run.checkpoint("best_val_loss"))
    return run


def make_images(folder: Path, n: int, side: int = 512) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side] / side
    for i in range(n):
        img = 0.5 + 0.3 * np.sin(6 * xx + i) * np.cos(4 * yy) + 0.1 * rng.standard_normal((side, side))
        Image.fromarray(np.clip(img * 255, 0, 255).astype(np.uint8)).save(folder / f"img_{i:04d}.png")


def predict_cli(run: RunDir, folder: Path, out: Path, batch_size: int) -> list[float]:
    code = medattn_main(["predict", str(run.root), str(folder), "--output", str(out), "--batch-size",
                         str(batch_size), "--device", "cpu"])
    assert code == 0, code
    with open(out, newline="") as fh:
        return [float(r["prob_PNEUMONIA"]) for r in csv.DictReader(fh)]


def handloop(run: RunDir, folder: Path, out: Path, batch_size: int) -> list[float]:
    from torchvision.transforms.v2 import functional as F

    model = checkpoints.load_model(run.checkpoint("best_val_loss"))
    meta = model.meta
    size = list(meta["image_size"])
    mean, std = torch.tensor(meta["mean"]).view(-1, 1, 1), torch.tensor(meta["std"]).view(-1, 1, 1)
    files = sorted(folder.glob("*.png"))
    probs: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(files), batch_size):
            batch = []
            for f in files[start:start + batch_size]:
                with Image.open(f) as im:
                    x = F.pil_to_tensor(im.convert("L")).float() / 255.0
                x = F.resize(x, size, interpolation=F.InterpolationMode.BILINEAR, antialias=True).clamp_(0, 1)
                batch.append((x.expand(3, -1, -1) - mean) / std)
            probs += torch.sigmoid(model(torch.stack(batch)).reshape(-1)).tolist()
    with open(out, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "prob_PNEUMONIA"])
        writer.writerows(zip(map(str, files), probs))
    return probs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        run = make_model_file(tmp, args.backbone, args.size)
        folder = tmp / "images"
        make_images(folder, args.images)
        sides = {"predict": predict_cli, "handloop": handloop}
        best = {k: float("inf") for k in sides}
        probs = {}
        for rep in range(args.repeats + 1):  # the first round warms caches and is not counted
            for side, fn in sides.items():
                t0 = time.perf_counter()
                probs[side] = fn(run, folder, tmp / f"{side}.csv", args.batch_size)
                if rep:
                    best[side] = min(best[side], time.perf_counter() - t0)
    same = np.allclose(probs["predict"], probs["handloop"], atol=1e-5)
    p, h = args.images / best["predict"], args.images / best["handloop"]
    print(f"images={args.images} png=512x512 grey backbone={args.backbone} size={args.size} "
          f"batch={args.batch_size} threads={torch.get_num_threads()} same_probabilities={same} "
          f"predict_s={best['predict']:.2f} handloop_s={best['handloop']:.2f}")
    print(f"predict_img_s={p:.1f} handloop_img_s={h:.1f} predict_vs_handloop={p / h:.2f}")


if __name__ == "__main__":
    main()
