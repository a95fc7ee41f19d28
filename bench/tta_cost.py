"""What test-time augmentation costs in ``predict``: ``Predictor.sample`` with the 8 views of ``d4`` (all views
stacked into the batch, run in forwards of the batch size) against ``Predictor.scores`` (one forward), on the same normalised batches of
the same model file. Runs alternate, best of ``--repeats`` each after one untimed warm-up.

Target (issue 23): 8 views cost at most 8.5x one forward. Final line:
``plain_img_s=... tta8_img_s=... tta8_vs_plain=...``.

    python bench/tta_cost.py [--backbone resnet18] [--size 64] [--batch-size 32] [--batches 4] [--repeats 3]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from predict_throughput import make_model_file  # noqa: E402  (a model file of the core's model, untrained)

from medattn.inference.predictor import load_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = make_model_file(Path(tmp), args.backbone, args.size)
        predictor = load_run(run.root, "best_val_loss", "cpu")
        gen = torch.Generator().manual_seed(0)
        batches = [torch.randn(args.batch_size, 3, args.size, args.size, generator=gen) for _ in range(args.batches)]
        sides = {"plain": lambda x: predictor.scores(x), "tta8": lambda x: predictor.sample(x, "d4")}
        best = {name: float("inf") for name in sides}
        for repeat in range(args.repeats + 1):
            for name, fn in sides.items():
                t0 = time.perf_counter()
                for x in batches:
                    fn(x)
                if repeat:  # the first round warms up
                    best[name] = min(best[name], time.perf_counter() - t0)
    images = args.batch_size * args.batches
    print(f"{args.backbone} at {args.size} px, {images} images in batches of {args.batch_size}, best of "
          f"{args.repeats}: plain {best['plain']:.3f} s, d4 (8 views) {best['tta8']:.3f} s")
    print(f"plain_img_s={images / best['plain']:.1f} tta8_img_s={images / best['tta8']:.1f} "
          f"tta8_vs_plain={best['tta8'] / best['plain']:.2f}")


if __name__ == "__main__":
    main()
