"""The trainer and its callbacks: more epochs continue a finished run, fewer are refused, an interrupt says
whether running again resumes, and logs get plain per-epoch lines instead of progress bars."""
from __future__ import annotations

import io

import pytest
import torch

from medattn import distributed
from medattn.config import load_experiment
from medattn.runs.runner import run_experiment
from medattn.store import checkpoints
from medattn.store.rundir import RunDir
from medattn.train import engine as E
from medattn.train.callbacks import Callback
from medattn.train.trainer import Trainer, TrainingInterrupted
from tests.test_engine import FAST, QUIET, Toy, fast, history, toy_batches


def test_more_epochs_continue_a_finished_run_and_fewer_are_refused(write, tmp_path, cli):
    exp = fast(write, tmp_path, epochs=2)
    run_experiment(load_experiment(exp), **QUIET)
    lines = []
    run_experiment(load_experiment(exp, ["train.epochs=4"]), log=lines.append)
    assert any("continuing from epoch 2 to 4 (train.epochs was 2" in line for line in lines), lines
    run = RunDir(tmp_path / "runs" / "fast" / "default")
    assert checkpoints.load(run.last)["epoch"] == 4 and len(history(run.root)) == 4
    # the cosine schedule takes the new length: half the lr in epoch 3, not a restart and not a stall at 0
    lrs = [float(r["lr"]) for r in history(run.root)]
    assert lrs == pytest.approx([1e-3, 5e-4, 5e-4, 1e-3 * (1 + torch.cos(torch.tensor(0.75 * torch.pi)).item()) / 2])
    assert checkpoints.read_meta(run.last)["config"]["train"]["epochs"] == 4
    code, _, err = cli("run", exp, "--set", "train.epochs=3")
    assert code == 2 and "train.epochs: 3 is fewer than the 4 epochs this run has already trained" in err
    assert "Traceback" not in err


def interrupt_in_epoch(monkeypatch, n):
    real, calls = E.train_epoch, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(E, "train_epoch", interrupted)


def test_an_interrupt_says_resume_only_when_there_is_a_checkpoint(write, tmp_path, monkeypatch, cli):
    exp = fast(write, tmp_path, epochs=2)
    interrupt_in_epoch(monkeypatch, 1)
    with pytest.raises(TrainingInterrupted) as first:
        run_experiment(load_experiment(exp), **QUIET)
    assert first.value.checkpoint is None
    assert first.value.message == ("training interrupted in epoch 1; nothing to resume, since no checkpoint was "
                                   "written yet: running the same command again starts training over")
    interrupt_in_epoch(monkeypatch, 2)
    with pytest.raises(TrainingInterrupted) as second:
        run_experiment(load_experiment(exp), **QUIET)
    last = RunDir(tmp_path / "runs" / "fast" / "default").last
    assert second.value.checkpoint == last
    assert second.value.resume_hint == f"{last} holds epoch 1: run the same command again to resume from there"
    assert second.value.message.startswith("training interrupted in epoch 2; ")
    assert isinstance(second.value, KeyboardInterrupt)  # whoever catches Ctrl-C still does
    interrupt_in_epoch(monkeypatch, 1)  # the CLI words it from the hint
    code, _, err = cli("run", exp)
    assert code == 130 and f"{last} holds epoch 1: run the same command again to resume" in err


def test_logs_get_one_plain_line_per_epoch_and_no_carriage_returns(write, tmp_path, capsys):
    exp = write("p.yaml", FAST.format(epochs=2, out=tmp_path / "runs").replace("progress: false", "progress: true"))
    run_experiment(load_experiment(exp))  # stderr is captured: not a terminal
    out, err = capsys.readouterr()
    assert "\r" not in out + err
    assert "train: epoch 1/2: train_loss" in out and "train: epoch 2/2: train_loss" in out


def test_progress_bars_only_on_a_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert E.bar(range(3), "x", True).disable
    monkeypatch.setattr("sys.stderr", Terminal())
    assert not E.bar(range(3), "x", True).disable
    assert E.bar(range(3), "x", False).disable  # train.progress: false


class Recorder(Callback):
    def __init__(self, fail_in=None):
        self.events, self.fail_in = [], fail_in

    def on_train_start(self, trainer):
        self.events.append("start")

    def on_epoch_end(self, trainer, result):
        self.events.append(f"epoch {result.epoch}: {result.row['train_loss']:.3f}")
        if result.epoch == self.fail_in:
            raise RuntimeError("boom")

    def on_train_end(self, trainer):
        self.events.append("end")


def toy_trainer(tmp_path, callbacks, epochs=2):
    torch.manual_seed(0)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    batches = [dict(b, id=[str(i) for i in range(len(b["label"]))]) for b in toy_batches(x, y, 4)]
    model = Toy()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return Trainer(model=model, optimizer=optimizer, scheduler=None, schedule={"name": "none"},
                   precision=E.Precision(), loss_fn=E.loss_function(model), train_loader=lambda epoch: batches,
                   val_loader=batches, val_sampler=None, dist=distributed.Dist(0, 1, torch.device("cpu")),
                   epochs=epochs, accumulate=1, clip_grad_norm=0.0, last=tmp_path / "last.pt", callbacks=callbacks)


def test_the_trainer_calls_its_callbacks_in_order_and_always_ends(tmp_path):
    recorder = Recorder()
    trainer = toy_trainer(tmp_path, [recorder])
    assert trainer.resume()  # no last.pt: start from epoch 0
    trainer.fit()
    assert recorder.events[0] == "start" and recorder.events[-1] == "end" and len(recorder.events) == 4
    assert [r["epoch"] for r in trainer.state.history] == [1, 2] and trainer.state.epoch == 2
    failing = Recorder(fail_in=1)
    with pytest.raises(RuntimeError, match="boom"):
        toy_trainer(tmp_path, [failing]).fit()
    assert failing.events[-1] == "end"  # resources are released on errors too
