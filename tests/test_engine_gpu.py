"""CUDA paths of the engine: AMP (bf16 / fp16 + GradScaler), channels_last, resume with a scaler. Skipped on CPU."""
from __future__ import annotations

import pytest
import torch

from medattn.config import load_experiment
from medattn.runs.runner import run_experiment
from medattn.store import checkpoints
from tests.test_engine import FAST

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_channels_last_train_and_resume_on_cuda(write, tmp_path, amp):
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("no bf16 on this GPU")
    text = FAST.format(epochs=2, out=tmp_path / "runs").replace("device: cpu", "device: cuda").replace(
        "  progress: false\n", f"  progress: false\n  amp: {amp}\n  channels_last: true\n")
    run_experiment(load_experiment(write("gpu.yaml", text)), log=lambda *_: None)
    last = checkpoints.load(tmp_path / "runs" / "fast" / "default" / "checkpoints" / "last.pt")
    assert last["epoch"] == 2
    assert bool(last["scaler"]) == (amp == "fp16")  # a disabled GradScaler saves an empty state
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
