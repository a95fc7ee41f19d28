"""A run made with a plugin file opens on another machine: the file is copied into the run with its sha256 and
loaded from there; a missing plugin is named with how to get it."""
from __future__ import annotations

import json
import shutil

import pytest

import medattn
from medattn.errors import UserError
from medattn.store.plugin_copies import registry_for
from tests.test_engine import FAST

GATE = '''\
import torch
from torch import nn

from medattn.api import Component, hookimpl


class Gate(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)

    def forward(self, features):
        x = list(features.values())[-1]
        return x * torch.sigmoid(self.conv(x))


def build(params, ctx):
    return Gate(ctx.backbone.feature_info[-1].channels)


@hookimpl
def medattn_components():
    return [Component("attention", "file_gate", build, "a gate from a plugin file")]
'''


@pytest.fixture
def trained(write, tmp_path, cli):
    """A run trained with the plugin file src/gate.py, then copied elsewhere and the source file deleted."""
    write("src/gate.py", GATE)
    text = FAST.format(epochs=1, out=tmp_path / "runs").replace("attention: {name: none}", "attention: {name: file_gate}")
    exp = write("exp/p.yaml", text + "plugins: [../src/gate.py]\n")
    code, _, err = cli("run", exp)
    assert code == 0, err
    run = tmp_path / "runs" / "fast" / "default"
    moved = tmp_path / "elsewhere" / "default"
    shutil.copytree(run, moved)
    shutil.rmtree(tmp_path / "src")
    return run, moved


def test_a_plugin_file_is_copied_into_the_run_and_loaded_from_there(trained, tmp_path, cli):
    run, moved = trained
    copy = run / "plugins" / "gate.py"
    assert copy.read_text() == GATE
    [record] = json.loads((run / "manifest.json").read_text())["plugins"]
    assert record["file"] == "gate.py" and record["source"] == str(tmp_path / "src" / "gate.py")
    import hashlib

    assert record["sha256"] == hashlib.sha256(GATE.encode()).hexdigest()
    predictor = medattn.load_run(moved)  # the source file is gone: the run's copy is loaded
    assert predictor.model.meta["plugins"] == [record]
    assert predictor.registry.get("attention", "file_gate").plugin == str(moved / "plugins" / "gate.py")
    code, _, err = cli("export", moved, "--format", "torchscript", "--output", tmp_path / "m.pt")
    assert code == 0, err


def test_a_missing_plugin_file_says_which_and_where_to_put_it(trained):
    _, moved = trained
    shutil.rmtree(moved / "plugins")
    with pytest.raises(UserError, match=r"needs the plugin file gate\.py \(sha256 [0-9a-f]{12}\.\.\.\), which is "
                                        r"neither in the run .* copy the file to .*plugins/gate\.py"):
        medattn.load_run(moved)


def test_a_missing_plugin_module_or_distribution_says_how_to_install_it(tmp_path):
    model = tmp_path / "run" / "checkpoints" / "best_val_loss.pt"
    meta = {"config": {"plugins": ["medattn_no_such_plugin"]},
            "plugins": [{"module": "medattn_no_such_plugin", "distribution": "medattn-no-such", "version": "1.2"}]}
    with pytest.raises(UserError, match="plugin module 'medattn_no_such_plugin', which is not installed here; "
                                        "install it with: pip install 'medattn-no-such==1.2'"):
        registry_for(model, meta)
    meta = {"config": {}, "plugins": [], "components": {"attention": {
        "name": "spatial_gate", "plugin": "medattn-example-attention:spatial_gate", "version": "0.1.0"}}}
    with pytest.raises(UserError, match="attention 'spatial_gate' from plugin medattn-example-attention:spatial_gate "
                                        "0.1.0, which is not installed here; install it with: pip install "
                                        "'medattn-example-attention==0.1.0'"):
        registry_for(model, meta)
