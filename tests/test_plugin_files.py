"""Plugins an experiment lists under ``plugins:`` (files and modules) get the checks installed plugins get; a
failure is a FILE:LINE:COL error of ``validate`` and ``run``, and a name such a plugin would have provided says
that the plugin failed. The single-file route: a plugin file whose factory is the function itself."""
from __future__ import annotations

import numpy as np
import pytest

from medattn.config import load_experiment
from medattn.registry import Registry

from .conftest import BASE, TINY, problems

GATE = """
from medattn.api import Component, hookimpl


def build_gate(params, ctx):
    import torch
    from torch import nn

    channels = ctx.backbone.feature_info[-1].channels
    last = ctx.backbone.feature_info[-1].name

    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.score = nn.Conv2d(channels, 1, 1)
            self.last_map = None

        def forward(self, levels):
            x = levels[last]
            self.last_map = torch.sigmoid(self.score(x))
            return x * self.last_map * params["scale"]

    return Gate()


@hookimpl
def {hook}():
    return [Component("attention", "file_gate", build_gate, "a spatial gate from one file",
                      {{"type": "object", "additionalProperties": False,
                        "properties": {{"scale": {{"type": "number", "default": 1.0}}}}}})]
"""

USES_GATE = "plugins:\n  - typo.py\n" + BASE.replace("{name: none}", "{name: file_gate}")


def test_a_misspelled_hook_in_a_plugin_file_is_an_error_at_its_plugins_line(write):
    write("typo.py", GATE.format(hook="medattn_componentz"))
    path = write("exp.yaml", USES_GATE)
    lines = problems(path)
    assert lines[0] == (f"{path}:2:5 plugins.0: plugin 'typo.py' failed to load: unknown hook 'medattn_componentz' "
                        f"(did you mean 'medattn_components'?): a @hookimpl must be named after a medattn hook "
                        f"(medattn_components)")
    (name_line,) = [line for line in lines if "model.attention.name" in line]
    assert name_line.startswith(f"{path}:7:21 model.attention.name: ") and "'file_gate' is not one of [" in name_line
    assert name_line.endswith("; note: plugin 'typo.py' failed to load: unknown hook 'medattn_componentz' "
                              "(did you mean 'medattn_components'?): a @hookimpl must be named after a medattn "
                              "hook (medattn_components)")


def test_validate_and_run_exit_2_naming_the_file_and_line(write, cli):
    write("typo.py", GATE.format(hook="medattn_componentz"))
    path = write("exp.yaml", USES_GATE)
    for command in ("validate", "run"):
        code, out, err = cli(command, path)
        assert code == 2 and "valid" not in out
        assert f"{path}:2:5 plugins.0: plugin 'typo.py' failed to load: unknown hook 'medattn_componentz'" in err
        assert "Traceback" not in err


def test_a_plugin_file_without_the_hook_and_a_bad_record_are_errors(write):
    write("nohook.py", GATE.format(hook="medattn_components").replace("@hookimpl\n", ""))
    write("badfactory.py", "from medattn.api import Component, hookimpl\n\n@hookimpl\ndef medattn_components():\n"
                           "    return [Component('head', 'h', 'not a factory', 'd')]\n")
    path = write("exp.yaml", "plugins: [nohook.py, badfactory.py]\n" + BASE)
    lines = problems(path)
    assert lines[0].startswith(f"{path}:1:11 plugins.0: plugin 'nohook.py' failed to load: provides no "
                               f"medattn_components hook")
    assert lines[1] == (f"{path}:1:22 plugins.1: plugin 'badfactory.py' failed to load: head 'h': factory "
                        f"'not a factory' is not 'package.module:function'")


def test_a_plugin_module_gets_the_same_checks(write, tmp_path, monkeypatch):
    write("typo_module_x.py", GATE.format(hook="medattn_component"))
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write("exp.yaml", "plugins: [typo_module_x]\n" + BASE)
    (line,) = problems(path)
    assert line.startswith(f"{path}:1:11 plugins.0: plugin 'typo_module_x' failed to load: unknown hook "
                           f"'medattn_component' (did you mean 'medattn_components'?)")


def test_an_unknown_name_in_code_names_the_plugin_that_failed(write, tmp_path):
    write("typo.py", GATE.format(hook="medattn_componentz"))
    reg = Registry()
    (err,) = reg.load_plugin("typo.py", tmp_path)
    assert err.message.startswith("plugin 'typo.py' failed to load: unknown hook 'medattn_componentz'")
    with pytest.raises(Exception, match=r"^no attention named 'file_gate'; known: none; note: plugin 'typo.py' "
                                        r"failed to load: unknown hook"):
        reg.get("attention", "file_gate")


def test_a_single_file_plugin_with_a_callable_factory_trains_and_reloads(write, tmp_path, cli):
    import medattn

    write("gate.py", GATE.format(hook="medattn_components"))
    text = TINY.replace("{name: none}", "{name: file_gate, params: {scale: 0.5}}")
    text = text.replace("jobs: [train, test, explain, figure]", "jobs: [train, test]")
    path = write("gate.yaml", "plugins: [gate.py]\n" + text + f"output_dir: {tmp_path / 'runs'}\n")
    code, out, err = cli("validate", path)
    assert code == 0, err
    exp = load_experiment(path)
    assert exp.registry.get("attention", "file_gate").plugin == str(tmp_path / "gate.py")
    assert cli("run", path)[0] == 0
    predictor = medattn.load_run(tmp_path / "runs" / "tiny" / "default")
    assert type(predictor.model.attention).__name__ == "Gate"
    out = predictor.predict(np.zeros((32, 32), dtype=np.float32))
    assert out.probabilities.shape == (1, 2)


def test_the_documented_single_file_plugin_builds(tmp_path):
    """docs/plugins.md's my_gate.py, as printed, registers and builds into a model."""
    import re
    from pathlib import Path

    from medattn.components.model import build_model
    from medattn.registry import default_registry

    text = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if b.startswith("# my_gate.py")]
    (tmp_path / "my_gate.py").write_text(code)
    reg = default_registry(["my_gate.py"], tmp_path)
    config = {"dataset": {"image_size": 32}, "model": {"backbone": {"name": "resnet18", "params": {}},
                                                       "attention": {"name": "spatial_gate", "params": {"hidden": 4}},
                                                       "output": "auto"}}
    model = build_model(reg, config, ["a", "b"])
    assert type(model.attention).__name__ == "Gate" and model.attention.score[0].out_channels == 4
