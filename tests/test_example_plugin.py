"""The stranger's plugin in examples/: found as an installed distribution, selected by an experiment."""
from __future__ import annotations

import configparser
import importlib
import shutil
import sys
from pathlib import Path

import pytest

from medattn.config import load_experiment
from medattn.registry import default_registry
from medattn.runs.runner import run_experiment

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "medattn-example-attention"


@pytest.fixture
def installed_example(tmp_path, monkeypatch):
    """Register the example the way pip does: its package on sys.path plus a dist-info with entry points."""
    site = tmp_path / "site"
    shutil.copytree(EXAMPLE / "medattn_example_attention", site / "medattn_example_attention")
    info = site / "medattn_example_attention-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: medattn-example-attention\nVersion: 0.1.0\n")
    cfg = configparser.ConfigParser()
    cfg.read(EXAMPLE / "setup.cfg")
    lines = cfg["options.entry_points"]["medattn"].strip().splitlines()  # as setuptools writes it on install
    (info / "entry_points.txt").write_text("[medattn]\n" + "\n".join(line.strip() for line in lines) + "\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield
    for name in [m for m in sys.modules if m.startswith("medattn_example_attention")]:
        del sys.modules[name]


def test_example_plugin_is_listed_and_runs(installed_example, write, tmp_path):
    comp = default_registry().get("attention", "spatial_gate")
    assert comp.plugin == "medattn-example-attention:spatial_gate" and comp.version == "0.1.0"
    from tests.conftest import TINY

    text = TINY.replace("attention: {name: none}", "attention: {name: spatial_gate, params: {hidden: 4}}")
    exp = load_experiment(write("gate.yaml", text + f"output_dir: {tmp_path / 'runs'}\n"), ["jobs=[train, test]"])
    rows = run_experiment(exp, log=lambda *_: None)
    assert rows and rows[0]["variant"] == "default" and 0.0 <= rows[0]["accuracy"] <= 1.0
