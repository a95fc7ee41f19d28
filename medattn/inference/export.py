"""Exporting a run's model for use outside medattn: TorchScript or ONNX, with the preprocessing contract beside it.

The exported model takes a normalised float32 batch ``image`` (B, C, H, W) and returns ``logits`` (B, outputs);
the JSON written beside it says how an image becomes that batch (size, channels, mean / std) and how logits
become classes (activation, class names, the threshold frozen on validation). Nothing is written unless the
exported model loads in its runtime (onnxruntime, or torch.jit.load) and its logits match eager PyTorch within
``TOLERANCE`` on a batch of another size than the one exported. When that fails, the error names the innermost
module that fails the same check on its own.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..files import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:  # the CLI lists the formats without importing torch
    import numpy as np
    import torch
    from torch import nn

TOLERANCE = 1e-4  # max |logit difference| allowed, relative to max(1, max |logit|)
OPSET = 17


class Exporter:
    """One export format: how a module is written (:meth:`export`), how the written bytes are run again
    (:meth:`run`), and the parity check of the two (:meth:`check`)."""

    name = ""  # what --format takes
    suffix = ""  # of the model file
    description = ""  # one line, for --help

    def export(self, module: nn.Module, args: tuple, inputs: list[str], outputs: list[str] | None) -> bytes:
        """The module traced on ``args`` as this format's bytes (inputs and outputs named)."""
        raise NotImplementedError

    def run(self, data: bytes, args: tuple, inputs: list[str]) -> list[np.ndarray]:
        """The outputs of the exported bytes on ``args``, in this format's runtime."""
        raise NotImplementedError

    def runtime(self) -> str:
        """The runtime :meth:`run` uses, with its version (recorded in the contract)."""
        raise NotImplementedError

    def contract_fields(self) -> dict[str, Any]:
        """Keys this format adds to the JSON contract."""
        return {}

    def check(self, module: nn.Module, traced: tuple, checked: tuple, inputs: list[str] | None = None,
              outputs: list[str] | None = None) -> tuple[str | None, float, bytes]:
        """(problem or None, max |difference|, bytes): export on ``traced``, run the export on ``checked``, compare
        with PyTorch. Inputs may be tensors or dicts / lists of them (an attention module takes the backbone's
        dict of levels)."""
        import numpy as np
        import torch

        inputs = inputs or [f"input{i}" for i in range(len(_leaves(traced)))]
        try:
            with _quiet():
                data = self.export(module, traced, inputs, outputs)
                got = self.run(data, checked, inputs)
        except Exception as exc:  # the exporters and runtimes raise many types; each becomes the problem's text
            return _reason(exc), float("inf"), b""
        with torch.no_grad():
            want = [w.double() for w in _leaves(module(*checked))]
        if len(got) != len(want) or any(tuple(np.shape(g)) != tuple(w.shape) for g, w in zip(got, want)):
            return "the exported outputs have other shapes than PyTorch's (a shape the tracer froze)", float("inf"), data
        diff = max((float(np.max(np.abs(np.asarray(g, np.float64) - w.numpy()))) for g, w in zip(got, want)
                    if w.numel()), default=0.0)
        scale = max([1.0] + [float(w.abs().max()) for w in want if w.numel()])
        if not diff <= TOLERANCE * scale:
            return (f"the exported outputs differ from PyTorch's by up to {diff:.3g} (more than {TOLERANCE:g}); "
                    "a value the tracer froze (data-dependent Python)?"), diff, data
        return None, diff, data


class OnnxExporter(Exporter):
    name, suffix, description = "onnx", ".onnx", f"ONNX (opset {OPSET}), checked with onnxruntime"

    def export(self, module: nn.Module, args: tuple, inputs: list[str], outputs: list[str] | None) -> bytes:
        import torch

        buf = io.BytesIO()
        # a dict as the last argument would be taken for keyword arguments: an empty dict after it says none
        args = (*args, {}) if args and isinstance(args[-1], dict) else args
        torch.onnx.export(module, args, buf, dynamo=False, opset_version=OPSET, input_names=inputs,
                          output_names=outputs, dynamic_axes={name: {0: "batch"} for name in inputs + (outputs or [])},
                          do_constant_folding=True)
        return buf.getvalue()

    def run(self, data: bytes, args: tuple, inputs: list[str]) -> list[np.ndarray]:
        import numpy as np
        import onnxruntime as ort

        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        wanted = {i.name for i in session.get_inputs()}  # the exporter drops inputs the graph never reads
        feeds = {name: t.numpy() for name, t in zip(inputs, _leaves(args)) if name in wanted}
        return [np.asarray(o) for o in session.run(None, feeds)]

    def runtime(self) -> str:
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}"

    def contract_fields(self) -> dict[str, Any]:
        return {"opset": OPSET}


class TorchScriptExporter(Exporter):
    name, suffix, description = "torchscript", ".pt", "TorchScript (torch.jit.trace), checked with torch.jit.load"

    def export(self, module: nn.Module, args: tuple, inputs: list[str], outputs: list[str] | None) -> bytes:
        import torch

        buf = io.BytesIO()
        torch.jit.save(torch.jit.trace(module, args, check_trace=False, strict=False), buf)
        return buf.getvalue()

    def run(self, data: bytes, args: tuple, inputs: list[str]) -> list[np.ndarray]:
        import torch

        loaded = torch.jit.load(io.BytesIO(data), map_location="cpu")
        with torch.no_grad():
            return [t.float().numpy() for t in _leaves(loaded(*args))]

    def runtime(self) -> str:
        import torch

        return f"torch.jit {torch.__version__}"


EXPORTERS: dict[str, Exporter] = {e.name: e for e in (TorchScriptExporter(), OnnxExporter())}


def exporter(fmt: str) -> Exporter:
    """The exporter of a format name; a UserError listing the formats for another."""
    if fmt not in EXPORTERS:
        raise UserError(f"--format {fmt!r}: expected {' or '.join(EXPORTERS)}")
    return EXPORTERS[fmt]


def export_run(run: str | Path, fmt: str, checkpoint: str = "best_val_loss", output: str | Path | None = None, *,
               allow_changed_plugins: bool = False) -> tuple[Path, Path]:
    """Export a run's checkpoint (or a model file) as ``fmt``; returns (model file, JSON file). A plugin file that
    differs from the model file's sha256 is refused unless ``allow_changed_plugins``."""
    from .predictor import load_run

    fmt_exporter = exporter(fmt)
    out = Path(output) if output else Path.cwd() / f"{_stem(Path(run), checkpoint)}{fmt_exporter.suffix}"
    contract_file = out.with_suffix(".json")
    if out == contract_file:
        raise UserError(f"--output {out}: the contract is written as <name>.json beside the model; choose another name")
    if out.is_dir():  # checked before the export, not after it
        raise UserError(f"--output {out}: is a folder; give the model file's path, e.g. {out / ('model' + fmt_exporter.suffix)}")
    predictor = load_run(run, checkpoint, "cpu", allow_changed_plugins=allow_changed_plugins)
    shape = (predictor.transform.channels, *predictor.transform.image_size)
    try:
        data, diff = export_model(calibrated(predictor), fmt_exporter, shape)
    except UserError as exc:
        raise UserError(f"{predictor.file}: {exc}") from None
    atomic_write_bytes(out, data)
    atomic_write_text(contract_file, json.dumps(contract(predictor, fmt_exporter, out, diff), indent=2) + "\n")
    return out, contract_file


def calibrated(predictor: Any) -> nn.Module:
    """The module to export: the model, followed by the model file's calibration when it has one (so the exported
    logits are the calibrated ones)."""
    from torch import nn

    from ..evidence import calibration

    if predictor.calibration is None:
        return predictor.model

    class Calibrated(nn.Module):
        def __init__(self, model: nn.Module, scaling: nn.Module) -> None:
            super().__init__()
            self.model, self.calibration = model, scaling

        def forward(self, x):
            return self.calibration(self.model(x))

    return Calibrated(predictor.model, calibration.module(predictor.calibration)).eval()


def _stem(run: Path, checkpoint: str) -> str:
    if run.is_file():
        return run.stem
    parts = [run.parent.name, run.name] if run.name.startswith("seed-") else [run.name]
    return "_".join([*parts, checkpoint])


def export_model(model: nn.Module, fmt: Exporter, shape: tuple[int, ...]) -> tuple[bytes, float]:
    """The exported model's bytes and its max |logit difference| from eager PyTorch; a UserError naming the
    module that cannot be exported (or that exports to different numbers)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    traced, checked = torch.randn(2, *shape, generator=gen), torch.randn(3, *shape, generator=gen)
    model = model.cpu().eval()
    problem, diff, data = fmt.check(model, (traced,), (checked,), ["image"], ["logits"])
    if problem is None:
        return data, diff
    name, kind, why = culprit(model, (traced,), (checked,), fmt) or ("", type(model).__name__, problem)
    where = f"module '{name}' ({kind})" if name else f"the model's own forward ({kind})"
    raise UserError(f"cannot export to {fmt.name}: {where}: {why}; export the other format, or replace that module")


def _leaves(value: Any) -> list[torch.Tensor]:
    """The tensors of a value (a tensor, or nested tuples / lists / dicts of them), in order, detached."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value.detach()]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _leaves(v)]
    return []


def culprit(model: nn.Module, traced: tuple, checked: tuple, fmt: Exporter) -> tuple[str, str, str] | None:
    """(dotted name, class, problem) of the innermost module that fails export on its own, or None when no
    sub-module does (the model's own forward is the problem)."""
    seen_a, seen_b = _inputs(model, traced), _inputs(model, checked)
    found, prefix, module = None, "", model
    while True:
        for child, sub in module.named_children():
            name = f"{prefix}.{child}" if prefix else child
            if name not in seen_a or name not in seen_b:
                continue
            problem = fmt.check(sub, seen_a[name], seen_b[name])[0]
            if problem is not None:
                found, prefix, module = (name, type(sub).__name__, problem), name, sub
                break
        else:
            return found


def _inputs(model: nn.Module, args: tuple) -> dict[str, tuple]:
    """Each module's positional inputs on its first call in one forward, when they are tensors or dicts / lists
    of tensors (modules given anything else, or keyword arguments, are left out)."""
    import torch

    seen: dict[str, tuple] = {}

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple, kwargs: dict) -> None:
            if name not in seen and not kwargs and inputs and all(_tensors_only(a) for a in inputs):
                seen[name] = inputs
        return record

    handles = [m.register_forward_pre_hook(hook(n), with_kwargs=True) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model(*args)
    finally:
        for h in handles:
            h.remove()
    return seen


def _tensors_only(value: Any) -> bool:
    """A tensor, or a non-empty dict / list / tuple holding only tensors (at any depth)."""
    import torch

    if isinstance(value, torch.Tensor):
        return True
    items = list(value.values()) if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else None
    return bool(items) and all(_tensors_only(v) for v in items)


def _reason(exc: BaseException) -> str:
    """The first meaningful line of an exporter's error (for a node of the traced graph: why, not the graph)."""
    text = " ".join(str(exc).split())
    if text.startswith("Failed to export a node") and "is not constant" in text:
        text = ("a size computed from a tensor's shape while it runs is used where ONNX needs a constant (e.g. a "
                "pooling kernel size); compute it with int(...) from the fixed input size")
    else:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        text = lines[0].rstrip(":") if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No warnings and no output from the exporters (the ONNX exporter prints its graph on failure, from C++)."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def contract(predictor: Any, fmt: Exporter, file: Path, diff: float) -> dict[str, Any]:
    """The JSON beside an exported model: inputs, outputs, preprocessing, classes, threshold and provenance."""
    pre = predictor.transform
    model = predictor.model
    names = predictor.class_names
    sigmoid = getattr(model, "output", "softmax") == "sigmoid"
    if predictor.threshold is not None:
        decision = ("class 1 when " + ("sigmoid(logits[:, 0])" if sigmoid else "softmax(logits)[:, 1]")
                    + f" >= threshold ({predictor.threshold:.6g}), else class 0")
    else:
        decision = "argmax of softmax(logits)"
    meta = predictor.meta
    from ..evidence import calibration as C

    cal = predictor.calibration
    conformal = predictor.conformal
    return {
        "format": fmt.name, "file": file.name, **fmt.contract_fields(),
        "input": {"name": "image", "shape": ["batch", pre.channels, *pre.image_size], "dtype": "float32",
                  "layout": "NCHW", "normalised": pre.mean is not None},
        "output": {"name": "logits", "shape": ["batch", int(getattr(model, "num_outputs", len(names)))],
                   "activation": "sigmoid" if sigmoid else "softmax", "calibrated": cal is not None},
        "calibration": None if cal is None else {
            **cal, "applied": f"inside the exported model: its logits are the model's logits * weight + bias "
                              f"({C.describe(cal)}); apply the activation to them, nothing else"},
        "conformal": None if conformal is None else {
            **conformal, "rule": "class k is in an image's set when its score for k <= thresholds[k]; score lac: "
                                 "1 - p_k; aps: the sum of the probabilities of the classes at least as probable as "
                                 "k (p: the calibrated class probabilities, [1 - p, p] for one output)"},
        "image_size": list(pre.image_size), "channels": pre.channels,
        "mean": list(pre.mean) if pre.mean is not None else None,
        "std": list(pre.std) if pre.std is not None else None,
        "class_names": names,
        "threshold": None if predictor.threshold is None else {**predictor.threshold_rule,
                                                                "value": predictor.threshold},
        "decision": decision, "preprocessing": pre.to_dict(),
        "parity": {"max_abs_logit_difference": diff, "tolerance": TOLERANCE, "runtime": fmt.runtime()},
        "source": {"model_file": str(predictor.file), "versions": meta.get("versions"),
                   "data_fingerprint": meta.get("data_fingerprint")},
    }

