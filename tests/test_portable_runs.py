"""A run made with a plugin file opens on another machine: the file is copied into the run with its sha256 and
loaded from there; a missing plugin is named with how to get it; a changed plugin file is refused (it is a different
model) unless changed plugins are allowed."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

import medattn
from medattn.errors import UserError
from medattn.store.plugin_copies import ChangedPluginWarning, registry_for
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
    with pytest.raises(UserError, match=r"needs the plugin file gate\.py \(sha256 [0-9a-f]{64}\), which is "
                                        r"neither in the run .* copy the file the model was trained with to "
                                        r".*plugins/gate\.py"):
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


CHANGED = GATE.replace("a gate from a plugin file", "a changed gate")


def _hashes(path):
    """(sha256 recorded in the run's model file, sha256 of the run's plugin copy now)."""
    import hashlib

    return hashlib.sha256(GATE.encode()).hexdigest(), hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_changed_plugin_copy_is_refused_by_load_run_unless_allowed(trained):
    _, moved = trained
    copy = moved / "plugins" / "gate.py"
    copy.write_text(CHANGED)
    recorded, found = _hashes(copy)
    with pytest.raises(UserError) as info:
        medattn.load_run(moved)
    message = str(info.value)
    assert message.startswith(f"{copy}: this plugin file differs from the one {moved / 'checkpoints'}")
    assert f"recorded in the model file {recorded}" in message and f"this file's {found}" in message
    assert "--allow-changed-plugins" in message and "allow_changed_plugins=True" in message
    with pytest.warns(ChangedPluginWarning, match=f"{recorded}.*{found}.*loading it anyway"):
        predictor = medattn.load_run(moved, allow_changed_plugins=True)
        explainers = predictor.registry  # the explainers' registry is allowed the same
    assert explainers.get("attention", "file_gate").description == "a changed gate"  # the changed code ran
    assert predictor.predict(np.zeros((32, 32, 3), dtype=np.uint8)).probabilities.shape == (1, 2)


def test_a_changed_plugin_refuses_predict_and_export_on_the_command_line(trained, tmp_path, cli):
    _, moved = trained
    copy = moved / "plugins" / "gate.py"
    copy.write_text(CHANGED)
    recorded, found = _hashes(copy)
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "p.csv"
    for args in (("predict", moved, image, "-o", out), ("export", moved, "--format", "torchscript", "-o", tmp_path / "m.pt")):
        code, _, err = cli(*args)
        assert code == 2, err
        assert err.startswith(f"medattn: error: {copy}: this plugin file differs") and err.count("\n") == 1
        assert recorded in err and found in err and "--allow-changed-plugins" in err
    assert not out.exists() and not (tmp_path / "m.pt").exists()
    for args in (("predict", moved, image, "-o", out), ("export", moved, "--format", "torchscript", "-o", tmp_path / "m.pt")):
        code, _, err = cli(*args, "--allow-changed-plugins")
        assert code == 0, err
        [line] = err.splitlines()
        assert line.startswith(f"medattn: warning: {copy}: this plugin file differs") and found in line
    assert out.is_file() and (tmp_path / "m.pt").is_file()


def test_without_its_copy_the_plugin_file_where_it_was_trained_counts_only_unchanged(trained, tmp_path):
    run, _ = trained
    (run / "plugins" / "gate.py").unlink()
    source = tmp_path / "src" / "gate.py"
    source.parent.mkdir()
    source.write_text(GATE)
    assert medattn.load_run(run).registry.get("attention", "file_gate").plugin == str(source)
    source.write_text(CHANGED)
    with pytest.raises(UserError, match=f"{source}: this plugin file differs"):
        medattn.load_run(run)
