"""The train and test jobs and the engine: exact resume, atomic checkpoints, NaN stop, training options, test outputs."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

from medattn.config import load_experiment
from medattn.config.schema import fill_defaults
from medattn.jobs.train import PARAMS
from medattn.runs.runner import run_experiment
from medattn.store import checkpoints
from medattn.train import engine as E

# a seconds-long experiment with timm's tiny test network
FAST = """\
name: fast
seed: 5
device: cpu
dataset:
  name: synthetic_lesions
  image_size: 32
  params: {{n_train: 16, n_val: 8, n_test: 8}}
model:
  backbone: {{name: timm, params: {{model_name: test_resnet, pretrained: false}}}}
  attention: {{name: none}}
train:
  epochs: {epochs}
  batch_size: 4
  optimizer: {{name: adamw, lr: 1.0e-3, weight_decay: 0.01}}
  scheduler: {{name: cosine}}
  augment: goncalves2021
  progress: false
test: {{checkpoints: [best_val_loss], bootstrap: {{resamples: 50}}}}
jobs: [train]
output_dir: {out}
"""
QUIET = {"log": lambda *_: None}


def fast(write, tmp_path, name="fast.yaml", epochs=2, out="runs", extra=""):
    return write(name, FAST.format(epochs=epochs, out=tmp_path / out) + extra)


def history(run_dir):
    with open(run_dir / "metrics" / "history.csv") as fh:
        return list(csv.DictReader(fh))


def test_resume_after_interrupt_is_bit_identical(write, tmp_path, monkeypatch):
    straight = fast(write, tmp_path, "a.yaml", out="a")
    run_experiment(load_experiment(straight), **QUIET)

    resumed = fast(write, tmp_path, "b.yaml", out="b")
    real = E.train_epoch
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # Ctrl-C in the middle of the second epoch
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(E, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(load_experiment(resumed), **QUIET)
    b = tmp_path / "b" / "fast" / "default"
    assert checkpoints.load(b / "checkpoints" / "last.pt")["epoch"] == 1
    monkeypatch.setattr(E, "train_epoch", real)
    lines = []
    run_experiment(load_experiment(resumed), log=lines.append)
    assert any("resuming from epoch 1" in line for line in lines)

    a = tmp_path / "a" / "fast" / "default"
    for name in ("last", "best_val_loss", "best_train_loss"):
        sa, sb = checkpoints.load(a / "checkpoints" / f"{name}.pt"), checkpoints.load(b / "checkpoints" / f"{name}.pt")
        assert sa["epoch"] == sb["epoch"]
        assert sa["model"].keys() == sb["model"].keys()
        for key in sa["model"]:
            assert torch.equal(sa["model"][key], sb["model"][key]), (name, key)
    timing = {"seconds", "train_img_s"}
    ha, hb = history(a), history(b)
    assert len(ha) == len(hb) == 2
    assert [{k: v for k, v in r.items() if k not in timing} for r in ha] == \
           [{k: v for k, v in r.items() if k not in timing} for r in hb]
    assert float(ha[1]["lr"]) < float(ha[0]["lr"])  # cosine schedule restored, not restarted


def test_failure_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.pt"
    checkpoints.save({"epoch": 1, "w": torch.ones(3)}, path)
    real = torch.save

    def torn(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")  # the first bytes land, then the process is "killed"
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", torn)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.setattr(torch, "save", real)
    state = checkpoints.load(path)
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(write, tmp_path, cli, monkeypatch):
    exp = fast(write, tmp_path, epochs=3)
    real = E.compute_loss
    calls = []

    def diverging(model, loss_fn, logits, labels):
        loss = real(model, loss_fn, logits, labels)
        calls.append(model.training)
        n_train_batches = 4  # 16 images / batch 4
        return loss * float("nan") if sum(calls) > n_train_batches and model.training else loss

    monkeypatch.setattr(E, "compute_loss", diverging)
    code, _, err = cli("run", exp)
    assert code == 2
    assert "the loss became nan at batch 1/4" in err and "Last good checkpoint" in err and "(epoch 1)" in err
    assert "Traceback" not in err
    run = tmp_path / "runs" / "fast" / "default"
    assert checkpoints.load(run / "checkpoints" / "last.pt")["epoch"] == 1
    assert len(history(run)) == 1


def test_schedule_accumulation_best_metric_checkpoint_and_early_stopping(write, tmp_path):
    extra = """\
      optimizer: {name: sgd, lr: 0.01, momentum: 0.9, nesterov: true}
      scheduler: {name: step, step_size: 1, gamma: 0.5}
      accumulate: 2
      clip_grad_norm: 1.0
      class_weights: balanced
      checkpoints: [best_val_loss, best_val_roc_auc, best_train_f1]
      early_stopping: {patience: 1, monitor: val_loss, min_delta: 100.0}
    """
    text = FAST.format(epochs=5, out=tmp_path / "runs").replace(
        "  optimizer: {name: adamw, lr: 1.0e-3, weight_decay: 0.01}\n  scheduler: {name: cosine}\n",
        "".join("  " + line.strip() + "\n" for line in extra.strip().splitlines()))
    lines = []
    run_experiment(load_experiment(write("opts.yaml", text)), log=lines.append)
    run = tmp_path / "runs" / "fast" / "default"
    rows = history(run)
    assert len(rows) == 2  # no val_loss improvement of 100 after epoch 1: stopped after epoch 2
    assert any("early stop after epoch 2" in line for line in lines)
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.01, 0.005])
    best = checkpoints.load(run / "checkpoints" / "best_val_roc_auc.pt")
    aucs = [float(r["val_roc_auc"]) for r in rows]
    assert best["monitor"] == "val_roc_auc" and best["value"] == pytest.approx(max(aucs))
    assert best["epoch"] == aucs.index(max(aucs)) + 1
    assert (run / "checkpoints" / "best_train_f1.pt").is_file()
    # an early-stopped run counts as finished
    again = []
    run_experiment(load_experiment(write("opts.yaml", text)), log=again.append, force=["train"])
    assert any("already trained" in line for line in again)


class Toy(nn.Module):
    """A linear softmax classifier with the attributes the engine reads."""

    output = "softmax"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(x.flatten(1))

    def probabilities(self, logits):
        return logits.softmax(1)


def toy_batches(x, y, size):
    return [{"image": x[i:i + size], "label": y[i:i + size]} for i in range(0, len(x), size)]


def test_gradient_accumulation_equals_the_large_batch():
    torch.manual_seed(1)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    big, small = Toy(), Toy()
    ob = torch.optim.SGD(big.parameters(), lr=0.1)
    osm = torch.optim.SGD(small.parameters(), lr=0.1)
    E.train_epoch(big, toy_batches(x, y, 8), ob, torch.device("cpu"), progress=False)
    E.train_epoch(small, toy_batches(x, y, 4), osm, torch.device("cpu"), accumulate=2, progress=False)
    assert torch.allclose(big.fc.weight, small.fc.weight, atol=1e-6)
    plain = Toy()
    E.train_epoch(plain, toy_batches(x, y, 4), torch.optim.SGD(plain.parameters(), lr=0.1), torch.device("cpu"),
                  progress=False)
    assert not torch.allclose(plain.fc.weight, small.fc.weight, atol=1e-6)  # two steps differ from one


def section(key, **values):
    """A train.<key> section as validation leaves it: the given values and every default."""
    return fill_defaults(PARAMS["properties"][key], values)


def test_plateau_follows_keras_reduce_lr_on_plateau():
    opt = torch.optim.SGD(Toy().parameters(), lr=1e-3)
    spec = section("scheduler", name="plateau", monitor="train_loss", factor=0.1, patience=2, min_delta=1e-4)
    sched = E.make_scheduler(opt, spec, epochs=10)
    lrs = []
    for loss in (1.0, 0.99995, 0.99995, 0.99995, 0.5):  # improvements below min_delta do not count
        E.scheduler_step(sched, spec, {"train_loss": loss})
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-3, 1e-4, 1e-4])


def test_class_weights_and_optimisers():
    from sklearn.utils.class_weight import compute_class_weight

    labels = [0, 0, 0, 1]
    w = E.class_weights_for("balanced", labels, 2)
    assert w == pytest.approx(list(compute_class_weight("balanced", classes=np.array([0, 1]), y=np.array(labels))))
    model = Toy()
    model.output = "sigmoid"
    assert E.loss_function(model, w).pos_weight.item() == pytest.approx(3.0)
    with pytest.raises(E.UserError, match="3 weights for 2 classes"):
        E.class_weights_for([1, 2, 3], labels, 2)
    sgd = E.make_optimizer(Toy(), section("optimizer", name="sgd", lr=0.1, momentum=0.9, nesterov=True,
                                          weight_decay=1e-4))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["weight_decay"] == 1e-4
    assert isinstance(E.make_optimizer(Toy(), section("optimizer", name="adamw")), torch.optim.AdamW)
    with pytest.raises(E.UserError, match="nesterov"):
        E.make_optimizer(Toy(), section("optimizer", name="sgd", nesterov=True))


def test_test_job_threshold_from_validation_ci_and_pad(write, tmp_path):
    text = FAST.format(epochs=1, out=tmp_path / "runs").replace(
        "test: {checkpoints: [best_val_loss], bootstrap: {resamples: 50}}",
        "test:\n  checkpoints: [best_val_loss, best_train_loss]\n  threshold_method: youden\n"
        "  bootstrap: {resamples: 50}\n  pad: {enabled: true, fdr: 0.2}").replace("jobs: [train]", "jobs: [train, test]")
    run_experiment(load_experiment(write("t.yaml", text)), **QUIET)
    run = tmp_path / "runs" / "fast" / "default"
    m = json.loads((run / "metrics" / "test_best_val_loss.json").read_text())
    for key in ("accuracy", "precision", "recall", "f1", "n", "specificity", "balanced_accuracy", "brier", "ece",
                "apcer", "bpcer", "acer", "tdr_at_20pct_fdr", "threshold"):
        assert key in m, key
    assert m["n"] == 8
    assert m["operating_point"]["method"] == "youden" and m["operating_point"]["source"].startswith("validation")
    assert m["at_fixed_threshold"]["n"] == 8  # both operating points recorded
    assert m["ci"]["resamples"] == 50 and m["ci"]["unit"] == "group"
    assert len(m["confusion_matrix"]["matrix"]) == 2 and sum(map(sum, m["confusion_matrix"]["matrix"])) == 8
    assert sum(m["reliability"]["count"]) == 8
    with open(run / "metrics" / "predictions_best_val_loss.csv") as fh:
        preds = list(csv.DictReader(fh))
    assert len(preds) == 8 and {"id", "group", "label", "prediction", "score"} <= set(preds[0])
    assert all(int(p["prediction"]) == (float(p["score"]) >= m["threshold"]) for p in preds)
    assert (run / "metrics" / "pad_roc_best_val_loss.csv").is_file()


class Recorded(nn.Module):
    """The cross-entropy loss, recording each batch's value as the engine used to read it (``.item()``)."""

    def __init__(self):
        super().__init__()
        self.values: list[float] = []

    def forward(self, logits, labels):
        loss = nn.functional.cross_entropy(logits, labels)
        self.values.append(loss.item())
        return loss


def summed_the_old_way(values: list[float], sizes: list[int]) -> float:
    total = 0.0
    for value, n in zip(values, sizes):
        total += value * n
    return total / sum(sizes)


@pytest.mark.parametrize("with_terms", [False, True])
def test_losses_stay_on_the_device_and_the_history_keeps_its_digits(monkeypatch, with_terms):
    """The train and validation losses equal, bit for bit, the per-step ``.item()`` sums the engine used to take,
    while the pass reads values back from the device a few times, not once per batch."""
    from medattn_plugins.losses.terms import Classification

    from medattn.components.losses import LossTerms

    monkeypatch.setattr(E, "SYNC_EVERY", 8)
    torch.manual_seed(3)
    x, y = torch.randn(118, 6) * 3, torch.randint(0, 3, (118,))
    batches = [{**b, "id": [str(i) for i in range(len(b["label"]))]} for b in toy_batches(x, y, 3)]  # the last: 1
    sizes = [len(b["label"]) for b in batches]
    terms = LossTerms([("classification", 1.0, Classification())]) if with_terms else None

    def epoch(loss_fn=None):
        model = Toy()
        return model, E.train_epoch(model, batches, torch.optim.SGD(model.parameters(), lr=0.5), torch.device("cpu"),
                                    loss_fn=loss_fn, progress=False, terms=terms)

    recorded = Recorded()
    model, want = epoch(recorded)
    reads = []
    for name in ("item", "tolist", "__float__", "cpu", "numpy", "__bool__"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _real=real, _n=name, **k: (reads.append(_n),
                                                                                             _real(self, *a, **k))[1])
    _, got = epoch()
    monkeypatch.undo()
    assert got.loss == summed_the_old_way(recorded.values, sizes) == want.loss
    assert len(reads) < len(batches) / 2, reads  # 40 batches: 5 reads of the losses, and the labels and scores once
    if with_terms:
        assert got.terms["classification"] == pytest.approx(got.loss, rel=1e-6)
    recorded.values.clear()
    val = E.collect(model, batches, torch.device("cpu"), progress=False, loss_fn=recorded)
    assert val.loss == summed_the_old_way(recorded.values, sizes) and val.images == len(x)


def test_a_non_finite_loss_is_named_by_its_batch_even_when_it_breaks_a_later_step(monkeypatch):
    monkeypatch.setattr(E, "SYNC_EVERY", 100)
    torch.manual_seed(4)
    x, y = torch.randn(15, 6), torch.randint(0, 3, (15,))
    calls = []

    def diverging(model, loss_fn, logits, labels):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("all elements of input should be between 0 and 1")  # what a NaN does to BCE
        loss = nn.functional.cross_entropy(logits, labels)
        return loss * float("nan") if len(calls) == 2 else loss

    monkeypatch.setattr(E, "compute_loss", diverging)
    model = Toy()
    with pytest.raises(E.NonFiniteLoss, match=r"^train: the loss became nan at batch 2/5$"):
        E.train_epoch(model, toy_batches(x, y, 3), torch.optim.SGD(model.parameters(), lr=0.1), torch.device("cpu"),
                      progress=False)
