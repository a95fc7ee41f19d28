"""The reproducible mode: its digits do not move when the process's instruction set and thread count are set
differently underneath it (they do move without it), and how it refuses to act too late."""
from __future__ import annotations

import json
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


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything the mode sets, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in reproducible.ENVIRONMENT and k != reproducible.VARIABLE}
    return {**env, **extra}


def train_probe(tmp_path: Path, name: str, machine: dict[str, str], mode: str) -> dict[str, torch.Tensor]:
    """Train the probe in a fresh process whose environment is ``machine``, with the mode off (``""``), on by
    the variable (``"env"``) or by the flag (``"flag"``); its last weights."""
    out = tmp_path / name
    out.mkdir()
    (out / "probe.yaml").write_text(PROBE + f"output_dir: {out / 'runs'}\n")
    env = clean_env(**machine, **({reproducible.VARIABLE: "1"} if mode == "env" else {}))
    flag = ["--reproducible"] if mode == "flag" else []
    res = subprocess.run([sys.executable, "-m", "medattn.cli", *flag, "run", str(out / "probe.yaml")], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    run = out / "runs" / "probe" / "default"
    kernels = json.loads((run / "manifest.json").read_text())["kernels"]
    assert kernels["reproducible"] is bool(mode)
    if mode:
        assert kernels["cpu_capability"] == "AVX2" and kernels["threads"] == reproducible.THREADS
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


def same_bits(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"),
                    reason="the reproducible mode needs an x86-64 CPU with AVX2")
def test_the_modes_digits_do_not_depend_on_the_cpu_underneath(tmp_path):
    plain = [train_probe(tmp_path, f"plain-{i}", m, mode="") for i, m in enumerate((NARROW, WIDE))]
    assert not same_bits(*plain)  # the variation is real: without the mode it changes the weights
    pinned = [train_probe(tmp_path, f"mode-{i}", m, mode=how) for i, (m, how) in enumerate(((NARROW, "env"),
                                                                                           (WIDE, "flag")))]
    assert same_bits(*pinned)


TOO_LATE = """\
import os, warnings
import torch
os.environ["MEDATTN_REPRODUCIBLE"] = "1"
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import medattn
print("WARNED:", " ".join(str(w.message) for w in caught))
from medattn.device import resolve_device
from medattn.errors import UserError
try:
    resolve_device("cpu")
except UserError as exc:
    print("REFUSED:", exc)
"""


def test_the_mode_set_after_torch_loaded_warns_and_refuses_to_run():
    res = subprocess.run([sys.executable, "-c", TOO_LATE], env=clean_env(), cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    warned, refused = res.stdout.split("REFUSED:")
    assert "came after torch" in warned and "before Python starts" in warned
    assert "came after torch" in refused and "import medattn before torch" in refused


def test_a_bad_value_of_the_variable_is_refused_by_the_cli(cli, monkeypatch):
    monkeypatch.setenv(reproducible.VARIABLE, "maybe")
    code, _, err = cli("plugins", "--kind", "dataset")
    assert code == 2 and "MEDATTN_REPRODUCIBLE='maybe'" in err and "Traceback" not in err
    assert not reproducible.active()


def test_a_bad_value_is_one_error_from_the_command_and_a_warning_on_import(tmp_path):
    """The medattn command says it once (its error, exit 2), not also as the import's warning; ``import medattn``
    in other code warns."""
    import shutil

    command = shutil.which("medattn", path=str(Path(sys.executable).parent)) or shutil.which("medattn")
    if command is None:
        pytest.skip("the medattn console script is not installed beside this Python")
    env = {**clean_env(), reproducible.VARIABLE: "maybe"}
    done = subprocess.run([command, "plugins", "--kind", "dataset"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr
    assert [line for line in done.stderr.splitlines() if "MEDATTN_REPRODUCIBLE" in line] == [
        "medattn: error: MEDATTN_REPRODUCIBLE='maybe': expected 1 (the reproducible mode) or 0; see "
        "docs/reproducibility.md"]
    done = subprocess.run([sys.executable, "-c", "import medattn"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0 and "MedattnWarning: MEDATTN_REPRODUCIBLE='maybe'" in done.stderr


def test_bare_overrides_after_the_global_flag_still_become_set_options():
    from medattn.cli import hydra_overrides

    assert hydra_overrides(["--reproducible", "run", "x.yaml", "train.epochs=2"]) == [
        "--reproducible", "run", "x.yaml", "--set", "train.epochs=2"]
