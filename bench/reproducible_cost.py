"""What the reproducible mode costs: a training step and an inference pass of the demo's backbone (a bare timm
ResNet-18), in the mode and out of it, each side in its own fresh process (the mode must be set before torch
loads), alternating, best of ``--repeats``.

Final line: ``plain_step_ms=... reproducible_step_ms=... reproducible_step_slowdown=...x
reproducible_forward_slowdown=...x``.

    python bench/reproducible_cost.py [--size 48] [--batch-size 32] [--steps 6] [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

# runs in the child process: times a bare timm ResNet-18 (the demo's backbone, without medattn's attention and head)
# on random images, after medattn has applied the mode and resolve_device has configured torch
CHILD = """
import json, sys, time
import medattn  # applies the mode when MEDATTN_REPRODUCIBLE=1, before torch loads
from medattn.device import resolve_device
import torch, timm
size, batch, steps = (int(a) for a in sys.argv[1:4])
resolve_device("cpu")
torch.manual_seed(0)
model = timm.create_model("resnet18", num_classes=1)
opt = torch.optim.AdamW(model.parameters(), 3e-4, weight_decay=0.05)
x, y = torch.randn(batch, 3, size, size), torch.rand(batch, 1)
def step():
    opt.zero_grad()
    torch.nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
    opt.step()
def forward():
    with torch.no_grad():
        model(x)
out = {}
for name, fn in (("step", step), ("forward", forward)):
    fn()
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    out[name] = (time.perf_counter() - t) / steps * 1000
print(json.dumps(out))
"""


def measure(mode: bool, size: int, batch: int, steps: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "MEDATTN_REPRODUCIBLE"}
    env["MEDATTN_REPRODUCIBLE"] = "1" if mode else "0"
    res = subprocess.run([sys.executable, "-c", CHILD, str(size), str(batch), str(steps)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    best: dict[bool, dict[str, float]] = {}
    for _ in range(args.repeats):
        for mode in (False, True):
            got = measure(mode, args.size, args.batch_size, args.steps)
            best[mode] = {k: min(v, best.get(mode, {}).get(k, v)) for k, v in got.items()}
            print(f"{'reproducible' if mode else 'plain':>12}: step {got['step']:.0f} ms, "
                  f"forward {got['forward']:.0f} ms", flush=True)
    plain, repro = best[False], best[True]
    print(f"plain_step_ms={plain['step']:.0f} reproducible_step_ms={repro['step']:.0f} "
          f"reproducible_step_slowdown={repro['step'] / plain['step']:.1f}x "
          f"reproducible_forward_slowdown={repro['forward'] / plain['forward']:.1f}x")


if __name__ == "__main__":
    main()
