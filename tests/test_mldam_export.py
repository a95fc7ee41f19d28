"""MLDAM exports to ONNX (issue 15 item 11): its q/k pooling kernels are constants from the levels' reductions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medattn.export import export_run
from medattn.predict import load_run
from tests.test_export import batch, model_file

# test_resnet's layer2 (stride 8, 48 ch) and layer4 (stride 32, 96 ch): q is pooled 4x and tiled 2x
GONCALVES = "{name: mldam, params: {variant: goncalves2021, taps: {q: layer2, k: layer4, v: layer4, x: layer4}}}"
MISHRA = "{name: mldam, params: {variant: mishra2019, taps: {q: layer3, k: layer3, v: layer4, x: layer4}}}"


@pytest.mark.parametrize("attention", [GONCALVES, MISHRA])
def test_mldam_exports_to_onnx_with_parity(tmp_path, attention):
    file = model_file(tmp_path, attention=attention)
    out = tmp_path / "m.onnx"
    export_run(file, "onnx", output=out)
    import onnxruntime as ort

    x = batch(2)
    with torch.no_grad():
        want = load_run(file).model(x).numpy()
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(["logits"], {"image": x.numpy()})[0]
    assert np.max(np.abs(got - want)) <= 1e-4
