"""Loss terms (train.loss): the default is today's loss bit for bit; each mask term trains the attention module,
is zero for an uninformative mask, and is refused on a data set without masks."""
from __future__ import annotations

import copy
import csv

import pytest
import torch
from medattn_plugins.losses import terms as T
from torch import nn

from medattn.components.losses import LossTerms
from medattn.components.model import MedAttnModel
from medattn.train import engine as E

from .conftest import TINY
from .conftest_models import backbone, build

SIZE = 48
CBAM = {"type": "cbam", "levels": ["layer2", "layer3"]}


def cbam_model() -> nn.Module:
    torch.manual_seed(0)
    return build("resnet18", "timm_attn", size=SIZE, att_params=CBAM)


def batch_data(n: int = 4, full_masks: bool = False) -> dict:
    g = torch.Generator().manual_seed(1)
    masks = torch.zeros(n, 1, SIZE, SIZE)
    masks[:, :, 8:24, 16:40] = 1.0
    if full_masks:
        masks = torch.ones_like(masks)
    return {"image": torch.randn(n, 3, SIZE, SIZE, generator=g), "label": torch.tensor([0, 1] * (n // 2)),
            "mask": masks, "id": [f"img-{i}" for i in range(n)]}


def term_value(model: nn.Module, term: nn.Module, data: dict) -> torch.Tensor:
    terms = LossTerms([("t", 1.0, term)])
    model.train()
    loss_fn = E.loss_function(model)
    _, loss, _ = E._terms_loss(model, model, terms, data, data["image"], data["label"], loss_fn)
    return loss


GAIN = {"mining_weight": 1.0, "mask_weight": 1.0, "mask_penalty": "energy", "sigma": 0.5, "omega": 10.0}
MASK_TERMS = {
    "attention_mask": lambda: T.AttentionMask("energy", []),
    "attention_mask_bce": lambda: T.AttentionMask("bce", []),
    "rrr": lambda: T.RightReasons("l2", "log_probabilities"),
    "rrr_fraction": lambda: T.RightReasons("fraction", "log_probabilities"),
    "gain": lambda: T.AttentionMining(GAIN),
    "mask_fraction": lambda: T.MaskFraction(T.AttentionMask("energy", []), 1.0),
}


@pytest.mark.parametrize("name", sorted(MASK_TERMS))
def test_each_mask_term_sends_gradient_into_the_attention_module(name):
    model = cbam_model()
    loss = term_value(model, MASK_TERMS[name](), batch_data())
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    grads = [p.grad for p in model.attention.parameters()]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", ["attention_mask", "rrr", "rrr_fraction", "mask_fraction"])
def test_an_all_ones_mask_gives_zero_penalty(name):
    model = cbam_model()
    assert term_value(model, MASK_TERMS[name](), batch_data()).item() > 0  # a real mask costs something
    assert term_value(model, MASK_TERMS[name](), batch_data(full_masks=True)).item() == 0.0


def test_gain_mask_term_is_zero_for_an_all_ones_mask_and_mining_penalises_what_is_left():
    model = cbam_model()
    mask_only = T.AttentionMining({**GAIN, "mining_weight": 0.0})
    assert term_value(model, mask_only, batch_data(full_masks=True)).item() == 0.0
    mining = T.AttentionMining({**GAIN, "mask_weight": 0.0})
    value = term_value(model, mining, batch_data()).item()
    assert 0 < value < 1  # a probability left after erasing


def test_mining_leaves_batchnorm_running_statistics_as_the_forward_left_them():
    model = cbam_model()
    data = batch_data()
    reference = copy.deepcopy(model)
    term_value(reference, T.Classification(), data)
    term_value(model, T.AttentionMining({**GAIN, "mask_weight": 0.0}), data)
    stats = {k: v for k, v in model.state_dict().items() if "running" in k}
    ref = {k: v for k, v in reference.state_dict().items() if "running" in k}
    assert stats and all(torch.equal(stats[k], ref[k]) for k in stats)


def test_mask_fraction_uses_a_fixed_share_of_images_chosen_by_id():
    ids = [f"train-{i:05d}" for i in range(2000)]
    share = sum(T.annotated(i, 0.25) for i in ids) / len(ids)
    assert 0.2 < share < 0.3
    assert [T.annotated(i, 0.25) for i in ids] == [T.annotated(i, 0.25) for i in ids]
    model = cbam_model()
    assert term_value(model, T.MaskFraction(T.AttentionMask("energy", []), 0.0), batch_data()).item() == 0.0


class Stranger(nn.Module):
    """Somebody else's attention: a 1x1-conv spatial gate on the deepest map, exposing it by attention_maps()."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)
        self.last: torch.Tensor | None = None

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        x = features["layer3"]
        self.last = torch.sigmoid(self.conv(x))
        return x * self.last

    def attention_maps(self) -> dict[str, torch.Tensor]:
        return {"gate": self.last}


def test_a_strangers_attention_module_with_attention_maps_is_supervised_unchanged():
    torch.manual_seed(0)
    bb = backbone("resnet18", SIZE)
    model = MedAttnModel(bb, Stranger(256), nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 1)),
                         "sigmoid", 1, ["a", "b"])
    loss = term_value(model, T.AttentionMask("energy", []), batch_data())
    loss.backward()
    assert model.attention.conv.weight.grad.abs().sum() > 0


def test_attention_mask_on_a_module_without_spatial_maps_is_one_clear_error():
    from medattn.errors import UserError

    torch.manual_seed(0)
    model = build("resnet18", "none", size=SIZE)
    with pytest.raises(UserError, match="no spatial map"):
        term_value(model, T.AttentionMask("energy", []), batch_data())


def test_the_default_loss_is_todays_loss_bit_for_bit():
    torch.manual_seed(0)
    a = build("resnet18", "none", size=32)
    b = copy.deepcopy(a)
    g = torch.Generator().manual_seed(2)
    batches = [{"image": torch.randn(4, 3, 32, 32, generator=g), "label": torch.tensor([0, 1, 1, 0]),
                "id": [str(i) for i in range(4)]} for _ in range(3)]
    out_a = E.train_epoch(a, batches, torch.optim.Adam(a.parameters(), 1e-3), torch.device("cpu"), progress=False)
    terms = LossTerms([("classification", 1.0, T.build_classification({}, None))])
    out_b = E.train_epoch(b, batches, torch.optim.Adam(b.parameters(), 1e-3), torch.device("cpu"), progress=False,
                          terms=terms)
    assert out_a.loss == out_b.loss and out_b.terms["classification"] == pytest.approx(out_a.loss)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_guided_run_logs_every_term_and_the_default_config_is_the_classification_loss(write, tmp_path, cli):
    from medattn.config import load_experiment

    text = TINY.replace("attention: {name: none}", "attention: {name: timm_attn, params: {type: cbam, levels: "
                        "[layer2, layer3]}}")
    text = text.replace("train: {epochs: 1,", "train: {loss: [{name: classification}, {name: attention_mask, "
                        "weight: 0.5}], epochs: 1,")
    text = text.replace("jobs: [train, test, explain, figure]", "jobs: [train]")
    exp = write("guided.yaml", text + f"output_dir: {tmp_path / 'runs'}\n")
    plain = load_experiment(write("plain.yaml", TINY)).variants[0].config.data
    assert plain["train"]["loss"] == [{"name": "classification", "params": {}, "weight": 1.0}]
    code, _, err = cli("run", exp)
    assert code == 0, err
    with open(tmp_path / "runs" / "tiny" / "default" / "metrics" / "history.csv") as f:
        row = next(csv.DictReader(f))
    total = float(row["loss_classification"]) + 0.5 * float(row["loss_attention_mask"])
    assert float(row["train_loss"]) == pytest.approx(total, rel=1e-5)
    assert 0 < float(row["loss_attention_mask"]) < 1


def test_a_mask_term_on_a_data_set_without_masks_is_refused_at_validate(write, cli):
    exp = write("nomask.yaml", """\
        name: nomask
        dataset: {name: cxr16, image_size: 32}
        model: {backbone: {name: resnet18, params: {pretrained: false}}}
        train: {loss: [{name: classification}, {name: rrr, weight: 10}]}
        jobs: [train]
        """)
    code, _, err = cli("validate", exp)
    assert code != 0
    assert "train.loss.1.name" in err and "'rrr'" in err and "'cxr16'" in err and "masks" in err
    assert "Traceback" not in err


def test_mask_fraction_checks_the_params_of_the_term_it_wraps():
    from medattn.errors import UserError
    from medattn.params import component_params
    from medattn.registry import default_registry

    reg = default_registry()
    ok = component_params(reg, "loss", {"name": "mask_fraction", "params": {"term": "rrr", "fraction": 0.3,
                                                                            "params": {"penalty": "fraction"}}})
    assert ok["fraction"] == 0.3 and ok["params"] == {"penalty": "fraction"}
    with pytest.raises(UserError, match="penalty"):
        component_params(reg, "loss", {"name": "mask_fraction", "params": {"term": "rrr",
                                                                           "params": {"penalty": "energy"}}})
    with pytest.raises(UserError, match="penalty"):  # the default term, attention_mask
        component_params(reg, "loss", {"name": "mask_fraction", "params": {"params": {"penalty": "l2"}}})
    term = T.build_mask_fraction(ok, None)
    assert isinstance(term.inner, T.RightReasons) and term.needs_input_gradients and term.fraction == 0.3
