"""The README is the user's manual: its commands and its generated plugin reference stay current."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _update_readme():
    spec = importlib.util.spec_from_file_location("update_readme", ROOT / "docs" / "update_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_shows_setup_demo_and_test_commands():
    text = (ROOT / "README.md").read_text()
    first_screen = "\n".join(text.splitlines()[:40])
    assert "pip install -e . && medattn run experiments/demo.yaml" in first_screen
    assert "\n    tox\n" in first_screen


def test_plugin_reference_is_current():
    text = (ROOT / "README.md").read_text()
    assert _update_readme().reference() in text, "run: python docs/update_readme.py"


def test_every_seed_flag_is_mapped():
    text = (ROOT / "README.md").read_text()
    for flag in ("--data_dir", "--dataset", "--backbone", "--use_attention", "--nr_classes", "--gpu_id",
                 "--batchsize", "--epochs", "--use_daug"):
        assert f"| `{flag}" in text, flag
