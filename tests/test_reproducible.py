"""The reproducible mode: its digits do not move when the process's instruction set and thread count are set
differently underneath it (they do move without it), and how it refuses to act too late."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medattn import reproducible

ROOT = Path(__file__).resolve().parents[1]

# a training of a few seconds that goes through convolutions, batch norm, Adam and a loss reduction
PROBE = """\
name: probe
seed: 5
device: cpu
dataset:
  name: synthetic_lesions
  image_size: 32
  params: {n_train: 32, n_val: 8, n_test: 8}
model:
  backbone: {name: resnet18, params: {pretrained: false}}
  attention: {name: timm_attn, params: {type: cbam}}
train: {epochs: 1, batch_size: 16, optimizer: {name: adam, lr: 1.0e-3}}
jobs: [train]
"""

# what a machine may set before medattn starts: two CPUs that differ in every knob the mode pins
NARROW = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "AUTO",
          "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NPY_DISABLE_CPU_FEATURES": "X86_V3 AVX2 FMA3"}
WIDE = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "ALL", "MKL_CBWR": "AUTO",
        "OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3", "NPY_DISABLE_CPU_FEATURES": ""}


def train_probe(tmp_path: Path, name: str, machine: dict[str, str], mode: bool) -> dict[str, torch.Tensor]:
    """Train the probe in a fresh process whose environment is ``machine``; its last weights."""
    out = tmp_path / name
    out.mkdir()
    (out / "probe.yaml").write_text(PROBE + f"output_dir: {out / 'runs'}\n")
    env = {k: v for k, v in os.environ.items() if k not in reproducible.ENVIRONMENT and k != reproducible.VARIABLE}
    env.update(machine, **({reproducible.VARIABLE: "1"} if mode else {}))
    res = subprocess.run([sys.executable, "-m", "medattn.cli", "run", str(out / "probe.yaml")], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    state = torch.load(out / "runs" / "probe" / "default" / "checkpoints" / "last.pt", weights_only=True)
    return state["model"]


def same_bits(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_modes_digits_do_not_depend_on_the_cpu_underneath(tmp_path):
    plain = [train_probe(tmp_path, f"plain-{i}", m, mode=False) for i, m in enumerate((NARROW, WIDE))]
    assert not same_bits(*plain)  # the variation is real: without the mode it changes the weights
    pinned = [train_probe(tmp_path, f"mode-{i}", m, mode=True) for i, m in enumerate((NARROW, WIDE))]
    assert same_bits(*pinned)
