"""The guided loss terms against reference values and their defects fixed: channel maps are never read as
spatial, an empty map costs the full penalty, fp16 scaling of the terms' own gradients, GAIN's mining on a
one-logit model, a linear model's input gradient, a hand-computed Grad-CAM that trains through its weights."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from medattn_plugins.losses import common as C
from medattn_plugins.losses import terms as T
from torch import nn

from medattn.components.losses import LossTerms
from medattn.components.model import MedAttnModel
from medattn.errors import UserError
from medattn.hookspecs import LossBatch
from medattn.train import engine as E

from .conftest import TINY
from .conftest_models import GAIN, Linear, batch_data, build, pooled_model, term_value


# --- attention maps: kinds, keys, empty maps -----------------------------------------------------------------------
def test_channel_attention_is_never_supervised_as_a_spatial_map():
    # dual at layer3 of a 64 px resnet18: 16 positions, 256 channels; cam (B, 256, 256) is square like a 16 x 16 map
    torch.manual_seed(0)
    model = build("resnet18", "dual", size=64, att_params={"level": "layer3"})
    data = batch_data(64)
    every = term_value(model, T.AttentionMask("energy", []), data).item()
    pam = term_value(model, T.AttentionMask("energy", ["pam"]), data).item()
    assert every == pam and 0 < pam < 1
    with pytest.raises(UserError, match="'cam' is a channel map"):
        term_value(model, T.AttentionMask("energy", ["cam"]), data)


def test_a_mistyped_maps_key_is_an_error_naming_the_keys_there_are():
    torch.manual_seed(0)
    model = build("resnet18", "timm_attn", size=32, att_params={"type": "cbam", "levels": ["layer2", "layer3"]})
    with pytest.raises(UserError, match="did you mean 'layer2/spatial.gate'"):
        term_value(model, T.AttentionMask("energy", ["layer2/spatial.gate", "layer2/spatial.gat"]), batch_data(32))


def test_validate_refuses_an_unknown_maps_key_at_its_line_with_a_did_you_mean(write, cli):
    text = TINY.replace("attention: {name: none}", "attention: {name: timm_attn, params: {type: cbam, levels: "
                        "[layer2, layer3]}}")
    text = text.replace("train: {epochs: 1,", "train: {loss: [{name: classification}, {name: attention_mask, "
                        "params: {maps: [layer2/spatial.gat]}}], epochs: 1,")
    code, _, err = cli("validate", write("maps.yaml", text))
    assert code != 0 and "Traceback" not in err
    assert "maps.yaml:" in err and "train.loss.1.params.maps.0" in err
    assert "did you mean 'layer2/spatial.gate'" in err


class ZeroGate(nn.Module):
    """A spatial gate that is all zero (a ReLU of a negative response): it points nowhere."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)
        nn.init.zeros_(self.conv.weight)
        nn.init.constant_(self.conv.bias, -1.0)
        self.last: torch.Tensor | None = None

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        x = features["layer3"]
        self.last = F.relu(self.conv(x))
        return x * (1 + self.last)

    def attention_maps(self) -> dict[str, torch.Tensor]:
        return {"gate": self.last}


def test_an_empty_map_costs_the_full_penalty():
    masks = torch.zeros(2, 1, 8, 8)
    masks[:, :, 2:5, 2:5] = 1
    assert C.outside_fraction(torch.zeros(2, 1, 8, 8), masks).tolist() == [1.0, 1.0]
    inside = masks.clone()
    assert C.outside_fraction(inside, masks).tolist() == [0.0, 0.0]
    torch.manual_seed(0)
    bb = build("resnet18", "none", size=32).backbone
    model = MedAttnModel(bb, ZeroGate(256), nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 1)),
                         "sigmoid", 1, ["a", "b"])
    assert term_value(model, T.AttentionMask("energy", []), batch_data(32)).item() == 1.0


# --- precision ---------------------------------------------------------------------------------------------------
class TwoLinear(nn.Module):
    """x -> 1e-4 * sum(x) -> 1e-4 * h: the input gradient (1e-8 per pixel) underflows in a float16 backward."""

    output = "sigmoid"

    def __init__(self, n: int) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(n, 1, bias=False), nn.Linear(1, 1, bias=False)
        nn.init.constant_(self.a.weight, 1e-4)
        nn.init.constant_(self.b.weight, 1e-4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x.flatten(1)))


def test_input_gradients_are_scaled_under_fp16_autocast_so_they_do_not_underflow():
    data = batch_data(8, channels=1)
    model = TwoLinear(64)
    term = T.RightReasons("l2", "class_logit")
    want = term_value(model, term, data).item()  # float32: 52 pixels outside the mask, (1e-8)^2 each
    assert want == pytest.approx(52e-16, rel=1e-3)
    with torch.autocast("cpu", dtype=torch.float16):
        unscaled = term_value(model, term, data).item()
        scaled = term_value(model, term, data, grad_scale=2.0 ** 14).item()
    assert unscaled == 0.0  # what an unscaled float16 backward gives: the gradient underflowed
    assert scaled == pytest.approx(want, rel=1e-2)


def test_the_training_loop_hands_the_scalers_scale_to_the_terms():
    seen = []

    class Recorder(nn.Module):
        needs_input_gradients = True

        def forward(self, batch: LossBatch) -> torch.Tensor:
            seen.append(batch.grad_scale)
            return batch.classification(batch.logits)

    torch.manual_seed(0)
    model = build("resnet18", "none", size=32)
    data = batch_data(32)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    E.train_epoch(model, [data], torch.optim.SGD(model.parameters(), 1e-3), torch.device("cpu"), progress=False,
                  precision=E.Precision(torch.float16, scaler), terms=LossTerms([("r", 1.0, Recorder())]))
    assert seen == [1024.0]


def test_bce_and_gradient_terms_run_under_autocast():
    torch.manual_seed(0)
    model = build("resnet18", "timm_attn", size=32, att_params={"type": "cbam", "levels": ["layer2", "layer3"]})
    data = batch_data(32)
    for term in (T.AttentionMask("bce", []), T.RightReasons("fraction", "log_probabilities"), T.AttentionMining(GAIN)):
        full = term_value(model, term, data).item()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = term_value(model, term, data, grad_scale=256.0)
        assert torch.isfinite(half) and half.item() == pytest.approx(full, rel=0.1, abs=0.02)


# --- GAIN ----------------------------------------------------------------------------------------------------------
def test_grad_cam_equals_the_hand_computed_map():
    model = pooled_model()
    data = batch_data(16, channels=1)
    a = model.backbone(data["image"])["x"]
    batch = LossBatch(images=data["image"], labels=data["label"], logits=model.head(a), model=model, ids=data["id"])
    cam = T.grad_cam(batch, a)
    w = torch.tensor([0.5, -1.0, 2.0])
    sign = (2 * data["label"].float() - 1).view(-1, 1, 1, 1)  # the label's own logit: -z for class 0
    alpha = sign * w.view(1, 3, 1, 1) / 16  # d z / d a_c is w_c / (h w) at every one of the 16 cells
    want = F.relu((alpha * a).sum(1, keepdim=True))
    torch.testing.assert_close(cam, want)


def test_gains_mask_term_trains_the_head_through_the_grad_cams_weights():
    """The Grad-CAM's alpha_c = w_c / (h w) depends on the head's weights: only a gradient taken with its graph
    (create_graph) lets the mask term reach them, and then exactly as the hand-written map's does."""
    model = pooled_model()
    data = batch_data(16, channels=1)
    term_value(model, T.AttentionMining({**GAIN, "mining_weight": 0.0}), data).backward()
    got = model.head[2].weight.grad.clone()
    assert got.abs().sum() > 0
    model.zero_grad()
    a = model.backbone(data["image"])["x"]
    w = model.head[2].weight.view(1, 3, 1, 1)
    sign = (2 * data["label"].float() - 1).view(-1, 1, 1, 1)
    cam = F.interpolate(F.relu((sign * w / 16 * a).sum(1, keepdim=True)), size=(16, 16), mode="bilinear",
                        align_corners=False)
    C.outside_fraction(cam, data["mask"]).mean().backward()
    torch.testing.assert_close(got, model.head[2].weight.grad)


def test_gain_mining_on_a_one_logit_model_never_rewards_predicting_the_other_class():
    # a constant model: logit -1 for every image (P(class 1) = 0.27); its Grad-CAM is empty, so nothing is erased
    model = pooled_model(bias=-1.0)
    with torch.no_grad():
        model.head[2].weight.zero_()
    data = batch_data(16, channels=1)
    mining = T.AttentionMining({**GAIN, "mask_weight": 0.0})
    p0 = 1 - torch.sigmoid(torch.tensor(-1.0)).item()  # the probability of label 0
    value = term_value(model, mining, data).item()
    # label 0 images keep 2 p0 - 1 of evidence above chance; label 1 images (p = 0.27, below chance) cost nothing
    assert value == pytest.approx((2 * p0 - 1) / 2, rel=1e-4)


# --- RRR: a linear model's input gradient is its weight ------------------------------------------------------------
def test_rrr_on_a_linear_model_penalises_the_weights_outside_the_mask():
    model = Linear()
    lin = model.lin
    data = batch_data(8, channels=1)
    x = data["image"].clone().requires_grad_(True)
    batch = LossBatch(images=x, labels=data["label"], logits=model(x), model=model, ids=data["id"],
                      masks=data["mask"])
    grads = batch.input_gradients(batch.class_logit())
    w = lin.weight.detach().view(1, 1, 8, 8)
    sign = (2 * data["label"].float() - 1).view(-1, 1, 1, 1)
    torch.testing.assert_close(grads, sign * w.expand_as(grads))
    want = ((w * (1 - data["mask"][:1])) ** 2).sum()
    value = term_value(model, T.RightReasons("l2", "class_logit"), data)
    torch.testing.assert_close(value, want)


# --- validate ------------------------------------------------------------------------------------------------------
def test_best_val_explanation_without_an_explanation_score_is_a_validate_error(write, cli):
    text = TINY.replace("train: {epochs: 1,", "train: {checkpoints: [best_val_loss, best_val_explanation], "
                        "epochs: 1,")
    path = write("noscore.yaml", text)
    code, _, err = cli("validate", path)
    assert code != 0 and "Traceback" not in err
    line = next(x for x in err.splitlines() if "train.checkpoints.1" in x)
    assert f"{path}:11:" in line and "best_val_explanation needs train.explanation_score" in line
