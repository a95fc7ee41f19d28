"""The guided loss terms under CUDA fp16 autocast with a GradScaler: bce is not refused, and the terms' own
gradients (RRR's input gradients, GAIN's Grad-CAM) are scaled. Skipped without CUDA."""
from __future__ import annotations

import math

import pytest
import torch
from medattn_plugins.losses import terms as T

from medattn.components.losses import LossTerms
from medattn.train import engine as E

from .conftest_models import build
from .test_guided_terms import GAIN, TwoLinear, batch_data

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
CUDA = torch.device("cuda")


@pytest.mark.parametrize("name", ["bce", "rrr", "gain"])
def test_a_guided_epoch_under_fp16_autocast_with_a_grad_scaler(name):
    term = {"bce": T.AttentionMask("bce", []), "rrr": T.RightReasons("l2", "log_probabilities"),
            "gain": T.AttentionMining(GAIN)}[name]
    torch.manual_seed(0)
    model = build("resnet18", "timm_attn", size=32, att_params={"type": "cbam", "levels": ["layer2", "layer3"]})
    model = model.to(CUDA)
    data = {k: v.to(CUDA) if torch.is_tensor(v) else v for k, v in batch_data(32, n=8).items()}
    precision = E.Precision(torch.float16, torch.amp.GradScaler("cuda"))
    terms = LossTerms([("classification", 1.0, T.Classification()), (name, 1.0, term)])
    out = E.train_epoch(model, [data, data, data], torch.optim.Adam(model.parameters(), 1e-3), CUDA,
                        precision=precision, progress=False, terms=terms)
    assert out.images > 0 and math.isfinite(out.loss) and math.isfinite(out.terms[name])
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_input_gradients_do_not_underflow_under_cuda_fp16():
    data = {k: v.to(CUDA) if torch.is_tensor(v) else v for k, v in batch_data(8, channels=1).items()}
    model = TwoLinear(64).to(CUDA).train()
    term = LossTerms([("t", 1.0, T.RightReasons("l2", "class_logit"))])
    loss_fn = E.loss_function(model)
    _, want, _ = E._terms_loss(model, model, term, data, data["image"], data["label"], loss_fn)
    with torch.autocast("cuda", dtype=torch.float16):
        _, got, _ = E._terms_loss(model, model, term, data, data["image"], data["label"], loss_fn, 2.0 ** 14)
    assert want.item() > 0 and got.item() == pytest.approx(want.item(), rel=1e-2)
