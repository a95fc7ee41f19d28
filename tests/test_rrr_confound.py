"""RRR as published: region confound (the shortcut annotated) learns away a decoy in 30 steps, Grad-CAM RRR, weight
schedules, and the bad inputs (no confound masks, a schedule longer than training, empty confound masks)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from medattn_plugins.datasets.synthetic_lesions import build as build_lesions
from medattn_plugins.losses import common as C
from medattn_plugins.losses import terms as T
from torch import nn

from medattn.components.losses import LossTerms, mask_problems, weight_at
from medattn.components.model import MedAttnModel
from medattn.errors import UserError
from medattn.hookspecs import DataContext, LossBatch
from medattn.jobs.test import confound_reliance
from medattn.registry import default_registry
from medattn.train import engine as E

from .conftest import TINY
from .conftest_models import GAIN, Linear, batch_data, pooled_model, term_value

DECOY = {"n_train": 256, "n_val": 8, "n_test": 64, "difficulty": 0.8, "lesion_size": 0.12, "decoys": 0.0,
         "seed_offset": 0, "shortcut": {"agree": 1.0, "strength": 0.8}}


class Convs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"x": self.net(x)}


class Level(nn.Module):
    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return features["x"]


def small_cnn() -> MedAttnModel:
    torch.manual_seed(0)
    head = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(16, 1))
    return MedAttnModel(Convs(), Level(), head, "sigmoid", 1, ["round", "spiculated"])


def decoy_batches(split, steps: int = 30, size: int = 32) -> list[dict]:
    rng = np.random.default_rng(0)
    items = [split[i] for i in range(len(split))]
    out = []
    for _ in range(steps):
        chosen = [items[i] for i in rng.choice(len(items), size, replace=False)]
        out.append({k: torch.stack([it[k] for it in chosen]) for k in ("image", "mask", "confound_mask")}
                   | {"label": torch.tensor([it["label"] for it in chosen]), "id": [it["id"] for it in chosen]})
    return out


def test_thirty_steps_of_rrr_on_the_confound_cut_the_reliance_on_a_decoy_where_the_plain_loss_does_not():
    ctx = DataContext(seed=3, image_size=(32, 32), channels=1, cache_dir=None, run_dir=None, log=print)
    data = build_lesions(DECOY, ctx)  # the marker in every class-1 image, in no class-0 one
    batches = decoy_batches(data.splits["train"])
    rrr = T.RightReasons("l2", "log_probabilities", "confound")
    probe = small_cnn().train()
    both = LossTerms([("classification", 1.0, T.Classification()), ("rrr", 1.0, rrr)])
    _, _, parts = E._terms_loss(probe, probe, both, batches[0], batches[0]["image"], batches[0]["label"],
                                E.loss_function(probe))
    weight = parts["classification"].item() / parts["rrr"].item()  # Ross's rule: weight x penalty = the CE at start
    reliance = {}
    for name, terms in (("plain", [("classification", 1.0, T.Classification())]),
                        ("rrr", [("classification", 1.0, T.Classification()), ("rrr", weight, rrr)])):
        model = small_cnn()
        E.train_epoch(model, batches, torch.optim.Adam(model.parameters(), 1e-2), torch.device("cpu"),
                      progress=False, terms=LossTerms(terms))
        reliance[name] = float(confound_reliance(model, data.splits["test"], torch.device("cpu"), 64)["reliance"].mean())
    assert reliance["plain"] > 0.2  # the plain model took the shortcut
    assert reliance["rrr"] <= 0.5 * reliance["plain"]


def test_rrr_on_the_confound_of_a_linear_model_penalises_the_weights_in_the_box():
    model = Linear()
    lin = model.lin
    data = batch_data(8, channels=1)
    box = torch.zeros(4, 1, 8, 8)
    box[:, :, :2, :2] = 1
    data["confound_mask"] = box
    value = term_value(model, T.RightReasons("l2", "class_logit", "confound"), data)
    torch.testing.assert_close(value, (lin.weight.detach().view(8, 8)[:2, :2] ** 2).sum())
    data["confound_mask"] = torch.zeros_like(box)  # empty confound masks: every image skipped, nothing to learn
    assert term_value(model, T.RightReasons("l2", "class_logit", "confound"), data).item() == 0.0


def test_grad_cam_rrr_penalises_the_scaled_map_in_the_region():
    model = pooled_model()
    data = batch_data(16, channels=1)
    box = torch.zeros(4, 1, 16, 16)
    box[:, :, :6, :6] = 1
    data["confound_mask"] = box
    got = term_value(model, T.GradCamReasons("confound", "attended", "l2"), data)
    a = model.backbone(data["image"])["x"]
    sign = (2 * data["label"].float() - 1).view(-1, 1, 1, 1)
    cam = F.relu((sign * model.head[2].weight.view(1, 3, 1, 1) / 16 * a).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=(16, 16), mode="bilinear", align_corners=False)
    peak = cam.flatten(1).amax(1).view(-1, 1, 1, 1)
    scaled = torch.where(peak > 0, cam / peak, torch.ones_like(cam))
    torch.testing.assert_close(got, ((scaled * box) ** 2).flatten(1).mean(1).mean())
    got.backward()
    assert model.head[2].weight.grad.abs().sum() > 0  # through the Grad-CAM's weights
    assert T.GradCamReasons("confound", "layer9", "l2").model_problems(model) == [
        (("level",), "'layer9' is not a level of this model; levels: attended")]


def test_a_weight_schedule_warms_up_linearly_and_stays():
    schedule = {"start": 0.0, "end": 2.0, "epochs": 4}
    assert [weight_at(schedule, e) for e in range(6)] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0]
    assert weight_at(3, 7) == 3.0
    terms = LossTerms([("c", 1.0, lambda b: torch.tensor(1.0)), ("m", schedule, lambda b: torch.tensor(10.0))])
    assert terms(None)[0].item() == 1.0
    terms.set_epoch(2)
    assert terms(None)[0].item() == 11.0  # 1 x 1 + 1.0 x 10: the schedule's weight in epoch 2 is 1.0


def test_a_confound_term_without_confound_masks_and_a_schedule_past_the_training_are_validate_errors(write, cli):
    text = TINY.replace("train: {epochs: 1,", "train: {loss: [{name: classification}, {name: rrr, weight: {start: 0, "
                        "end: 1, epochs: 3}, params: {region: confound}}], epochs: 1,")
    path = write("bad.yaml", text)
    code, _, err = cli("validate", path)
    assert code != 0 and "Traceback" not in err
    assert "train.loss.1.weight.epochs" in err and "train.epochs is 1" in err and f"{path}:11:" in err
    code, _, err = cli("validate", write("bad.yaml", text.replace("epochs: 3}", "epochs: 1}")))
    assert code != 0 and "Traceback" not in err
    assert "train.loss.1.name" in err and "confound masks" in err and "'synthetic_lesions'" in err


def test_region_confound_needs_confound_masks_instead_of_lesion_masks():
    reg = default_registry()
    config = {"dataset": {"name": "csv"}, "train": {"loss": [
        {"name": "rrr", "params": {"region": "confound"}},
        {"name": "mask_fraction", "params": {"term": "rrr", "params": {"region": "confound"}}},
        {"name": "rrr", "params": {}}]}}
    found = mask_problems(reg, config, has_masks=False, has_confound_masks=True)
    assert [path for path, _ in found] == [("train", "loss", 2, "name")]
    found = mask_problems(reg, config, has_masks=True, has_confound_masks=False)
    assert [path for path, _ in found] == [("train", "loss", 0, "name"), ("train", "loss", 1, "name")]


def test_the_penalised_region_skips_images_whose_confound_mask_is_empty_or_everything():
    masks = torch.zeros(3, 1, 4, 4)
    masks[0, :, :1, :1] = 1
    masks[2] = 1
    batch = LossBatch(images=torch.zeros(3, 1, 4, 4), labels=torch.zeros(3), logits=torch.zeros(3, 1), model=None,
                      ids=["a", "b", "c"], confound_masks=masks)
    region, w = C.penalised_region(batch, "confound", "rrr")
    assert torch.equal(region, masks) and w.tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(UserError, match="confound masks"):
        C.penalised_region(LossBatch(images=batch.images, labels=batch.labels, logits=batch.logits, model=None,
                                     ids=batch.ids), "confound", "rrr")


class Relu(nn.Module):
    """A non-linear attention: the Grad-CAM on its output differs from the one on the level it reads."""

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return features["x"].relu()


def test_gain_takes_its_grad_cam_at_the_level_asked_for():
    pooled = pooled_model()
    model = MedAttnModel(pooled.backbone, Relu(), pooled.head, "sigmoid", 1, ["a", "b"])
    data = batch_data(16, channels=1)
    at_level = term_value(model, T.AttentionMining({**GAIN, "mining_weight": 0.0, "level": "x"}), data)
    attended = term_value(model, T.AttentionMining({**GAIN, "mining_weight": 0.0}), data)

    def by_hand(level: str) -> float:  # the mask term (energy) of a Grad-CAM of each image's own class at level
        x = model.backbone(data["image"])["x"]
        a = x.relu() if level == "attended" else x
        z = model.head(a.relu() if level == "x" else a).reshape(-1)
        sign = 2 * data["label"].float() - 1
        grads = torch.autograd.grad((sign * z).sum(), a)[0]
        cam = F.relu((grads.mean(dim=(2, 3), keepdim=True) * a).sum(1, keepdim=True))
        cam = F.interpolate(cam, size=(16, 16), mode="bilinear", align_corners=False)
        return C.outside_fraction(cam, data["mask"]).mean().item()

    assert at_level.item() == pytest.approx(by_hand("x"), rel=1e-5)
    assert attended.item() == pytest.approx(by_hand("attended"), rel=1e-5)
    assert at_level.item() != pytest.approx(attended.item(), rel=1e-3)
    with pytest.raises(UserError, match="level 'layer9'"):
        term_value(model, T.AttentionMining({**GAIN, "level": "layer9"}), data)
