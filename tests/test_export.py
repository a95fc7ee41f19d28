"""``medattn export``: TorchScript and ONNX files whose logits match eager PyTorch, a JSON contract beside them,
and a clear error naming the module that cannot be exported."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from medattn.components.model import build_model
from medattn.config import load_experiment
from medattn.errors import UserError
from medattn.inference.export import EXPORTERS, OnnxExporter, TorchScriptExporter, export_run, exporter
from medattn.inference.predictor import load_run
from medattn.store import checkpoints
from medattn.store.rundir import RunDir

# a model file needs no training: the model as built, with the meta the train job records
DIRECT = """\
name: direct
seed: 1
device: cpu
dataset: {{name: synthetic_lesions, image_size: 32}}
model:
  backbone: {{name: timm, params: {{model_name: test_resnet, pretrained: false}}}}
  attention: {attention}
  output: {output}
plugins: {plugins}
output_dir: {out}
"""

# two attention modules the exporters refuse: an operator ONNX lacks, a Python function TorchScript cannot save
UNEXPORTABLE = '''
import torch
from torch import nn

from medattn.api import Component, hookimpl


class Doubled(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        return grad * 2


class InverseScale(nn.Module):
    def forward(self, features):
        x = next(reversed(features.values()))
        return x * torch.linalg.inv(torch.eye(2) * (1 + x.mean() * 0)).trace() / 2


class PythonFunction(nn.Module):
    def forward(self, features):
        return Doubled.apply(next(reversed(features.values())))


HEAD = {"head": {"name": "linear", "params": {}}}


@hookimpl
def medattn_components():
    return [Component("attention", "inverse_scale", lambda params, ctx: InverseScale(), "uses linalg.inv",
                      {"type": "object", "properties": {}}, HEAD),
            Component("attention", "python_function", lambda params, ctx: PythonFunction(), "autograd.Function",
                      {"type": "object", "properties": {}}, HEAD)]
'''


def model_file(tmp_path: Path, classes: tuple[str, ...] = ("round", "spiculated"), output: str = "auto",
               threshold: dict | None = None, attention: str = "none", plugins: list[str] | None = None,
               variant: str = "default") -> Path:
    """``runs/direct/<variant>/checkpoints/best_val_loss.pt`` holding a freshly built model and its meta."""
    file = tmp_path / f"direct_{variant}.yaml"
    file.write_text(textwrap.dedent(DIRECT.format(attention=attention, output=output, out=tmp_path / "runs",
                                                  plugins=json.dumps(plugins or []))))
    exp = load_experiment(file)
    config = exp.variants[0].config.data
    torch.manual_seed(0)
    model = build_model(exp.registry, config, list(classes))
    meta = checkpoints.model_meta(config, list(classes), model.backbone, exp.registry, None)
    meta["threshold"] = threshold
    path = RunDir(tmp_path / "runs" / "direct" / variant).checkpoint("best_val_loss")
    checkpoints.save({"format": checkpoints.FORMAT, "model": model.state_dict(), "epoch": 1, "monitor": "val_loss",
                      "value": 1.0, "meta": meta}, path)
    return path


def unexportable(tmp_path: Path, attention: str) -> Path:
    plugin = tmp_path / "unexportable.py"
    plugin.write_text(UNEXPORTABLE)
    return model_file(tmp_path, attention=attention, plugins=[str(plugin)], variant=attention)


def batch(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load is deprecated, still the TorchScript loader
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_eager_logits_and_writes_the_contract(tmp_path, fmt):
    file = model_file(tmp_path, threshold={"value": 0.3, "rule": "youden", "source": "validation (youden)"})
    out, contract_file = export_run(file.parent.parent, fmt, output=tmp_path / "out" / f"model.{fmt}")
    assert out == tmp_path / "out" / f"model.{fmt}" and contract_file == out.with_suffix(".json")
    x = batch(5)  # another batch size than the one exported
    eager = load_run(file).model
    with torch.no_grad():
        want = eager(x).numpy()
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = session.run(["logits"], {"image": x.numpy()})[0]
    else:
        with torch.no_grad():
            got = torch.jit.load(str(out))(x).numpy()
    assert got.shape == want.shape == (5, 1)
    assert np.max(np.abs(got - want)) <= 1e-4
    contract = json.loads(contract_file.read_text())
    assert contract["image_size"] == [32, 32] and contract["channels"] == 3
    assert contract["class_names"] == ["round", "spiculated"]
    assert len(contract["mean"]) == len(contract["std"]) == 3
    assert contract["threshold"]["value"] == 0.3 and contract["threshold"]["rule"] == "youden"
    assert contract["output"]["activation"] == "sigmoid" and contract["input"]["shape"] == ["batch", 3, 32, 32]
    assert contract["parity"]["max_abs_logit_difference"] <= 1e-4


def test_cli_export_default_name_in_the_current_folder(tmp_path, cli, monkeypatch):
    file = model_file(tmp_path, classes=("a", "b", "c"))
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("export", file.parent.parent, "--format", "onnx")
    assert code == 0, err
    assert (tmp_path / "default_best_val_loss.onnx").is_file()
    contract = json.loads((tmp_path / "default_best_val_loss.json").read_text())
    assert contract["threshold"] is None and contract["decision"] == "argmax of softmax(logits)"
    assert contract["output"] == {"name": "logits", "shape": ["batch", 3], "activation": "softmax", "calibrated": False}


@pytest.mark.parametrize(("attention", "fmt", "module"), [("inverse_scale", "onnx", "InverseScale"),
                                                           ("python_function", "torchscript", "PythonFunction")])
def test_a_module_that_cannot_be_exported_is_named(tmp_path, cli, attention, fmt, module):
    file = unexportable(tmp_path, attention)
    out = tmp_path / "model.bin"
    with pytest.raises(UserError) as err:
        export_run(file, fmt, output=out)
    assert f"module 'attention' ({module})" in str(err.value) and f"cannot export to {fmt}" in str(err.value)
    assert not out.exists() and not out.with_suffix(".json").exists()
    code, _, stderr = cli("export", file, "--format", fmt, "--output", out)
    assert code == 2 and f"module 'attention' ({module})" in stderr
    assert "Traceback" not in stderr and "graph" not in stderr  # one line, not the exporter's dump
    assert len(stderr.strip().splitlines()) == 1


def test_export_bad_input(tmp_path, cli):
    code, _, err = cli("export", tmp_path / "nowhere", "--format", "onnx")
    assert code == 2 and "no such run directory" in err
    file = model_file(tmp_path)
    code, _, err = cli("export", file.parent.parent, "--format", "onnx", "--checkpoint", "best_val_auc")
    assert code == 2 and "no checkpoint 'best_val_auc'" in err and "best_val_loss" in err
    with pytest.raises(SystemExit) as exc:
        cli("export", file.parent.parent, "--format", "tflite")
    assert exc.value.code == 2
    with pytest.raises(UserError, match="beside the model"):
        export_run(file, "onnx", output=tmp_path / "model.json")


# MLDAM exports because its q/k pooling kernels are constants from the levels' reductions; test_resnet's layer2
# (stride 8, 48 ch) and layer4 (stride 32, 96 ch): goncalves2021's q is pooled 4x and tiled 2x
MLDAM_GONCALVES = "{name: mldam, params: {variant: goncalves2021, taps: {q: layer2, k: layer4, v: layer4, x: layer4}}}"
MLDAM_MISHRA = "{name: mldam, params: {variant: mishra2019, taps: {q: layer3, k: layer3, v: layer4, x: layer4}}}"


@pytest.mark.parametrize("attention", ["dual", "{name: timm_attn, params: {type: cbam}}",
                                       MLDAM_GONCALVES, MLDAM_MISHRA])
def test_attention_modules_export_to_onnx_with_parity(tmp_path, attention):
    file = model_file(tmp_path, attention=attention)
    out = tmp_path / "m.onnx"
    export_run(file, "onnx", output=out)
    import onnxruntime as ort

    x = batch(2)
    with torch.no_grad():
        want = load_run(file).model(x).numpy()
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(["logits"], {"image": x.numpy()})[0]
    assert np.max(np.abs(got - want)) <= 1e-4



@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load is deprecated, still the TorchScript loader
def test_the_cli_lists_and_takes_the_formats_of_the_one_table(tmp_path, cli, capsys, monkeypatch):
    assert isinstance(EXPORTERS["onnx"], OnnxExporter) and isinstance(EXPORTERS["torchscript"], TorchScriptExporter)
    with pytest.raises(UserError, match=r"^--format 'tflite': expected torchscript or onnx$"):
        exporter("tflite")

    class Traced(TorchScriptExporter):  # a new format is one class in the table
        name, suffix, description = "traced", ".traced", "a format added by this test"

        def contract_fields(self):
            return {"flavour": "test"}

    monkeypatch.setitem(EXPORTERS, "traced", Traced())
    with pytest.raises(SystemExit):
        cli("export", "--help")
    shown = " ".join(capsys.readouterr().out.split())
    assert "{torchscript,onnx,traced}" in shown and "traced: a format added by this test" in shown
    file = model_file(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("export", file.parent.parent, "--format", "traced")
    assert code == 0, err
    contract = json.loads((tmp_path / "default_best_val_loss.json").read_text())
    assert (tmp_path / "default_best_val_loss.traced").is_file()
    assert contract["format"] == "traced" and contract["flavour"] == "test"
    assert contract["parity"]["runtime"].startswith("torch.jit ")
