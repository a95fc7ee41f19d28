"""The training loop: epochs of training and validation; everything around it is a callback.

A :class:`Trainer` trains one epoch, validates, appends a history row, steps the scheduler and hands the
finished epoch to its callbacks (:mod:`medattn.train.callbacks`: best and last checkpoints, early stopping, history,
TensorBoard, progress), the way MONAI's handlers attach to an engine.

Exact resume: ``last.pt`` holds the model, optimiser, scheduler, GradScaler, epoch, history, every RNG state
and the callbacks' state, and the shuffling of each epoch comes from (seed, epoch), so a resumed CPU run ends
with exactly the weights and metrics of an uninterrupted one. A finished run given more epochs continues from
``last.pt`` (an early-stopped one does not: early stopping judged it done); fewer epochs than it has done is
refused.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import distributed
from ..errors import UserError
from ..evidence.metric_specs import metric_names
from ..evidence.metrics import classification_metrics
from ..store import checkpoints
from . import engine as E

# the metrics of each history row, as train_<key> and val_<key>, after the losses
ROW_METRICS = metric_names(history=True, source="test")


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training. ``resume_hint`` says whether running the same command again resumes, and from
    which checkpoint (``checkpoint``, None when there is none yet); ``message`` adds the epoch."""

    def __init__(self, epoch: int, checkpoint: Path | None, saved_epoch: int | None) -> None:
        if checkpoint is None:
            self.resume_hint = ("nothing to resume, since no checkpoint was written yet: running the same command "
                                "again starts training over")
        else:
            self.resume_hint = (f"{checkpoint} holds epoch {saved_epoch}: run the same command again to resume "
                                "from there")
        self.message = f"training interrupted in epoch {epoch}; {self.resume_hint}"
        self.checkpoint = checkpoint
        super().__init__(self.message)


@dataclass
class TrainState:
    """What the loop itself carries across epochs (callbacks keep their own)."""

    epoch: int = 0  # epochs finished
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped: bool = False  # set by early stopping


@dataclass
class EpochResult:
    """One finished epoch: its number (from 1), history row and the training and validation outputs."""

    epoch: int
    row: dict[str, Any]
    train: E.Outputs
    val: E.Outputs


@dataclass
class Trainer:
    """Trains ``model`` for ``epochs`` epochs (``fit``), after ``resume`` restored what ``last`` holds."""

    model: Any
    optimizer: Any
    scheduler: Any
    schedule: dict[str, Any]  # the validated train.scheduler section
    precision: E.Precision
    loss_fn: Any
    train_loader: Callable[[int], Any]  # epoch index -> that epoch's (shuffled) loader
    val_loader: Any
    val_sampler: Any
    dist: distributed.Dist
    epochs: int
    accumulate: int
    clip_grad_norm: float
    last: Path  # the resume checkpoint (written by callbacks.LastCheckpoint)
    callbacks: list[Any] = field(default_factory=list)  # medattn.train.callbacks.Callback instances, called in order
    log: Callable[[str], None] = print
    progress: bool = False  # per-batch bars (shown on a terminal only)
    net: Any = None  # the module that runs forward (DDP / compiled) when it is not the model itself
    terms: Any = None  # medattn.components.losses.LossTerms of train.loss (None: the classification loss alone)
    state: TrainState = field(default_factory=TrainState)
    saved_epoch: int | None = None  # the epoch last.pt holds

    def say(self, line: str) -> None:
        """Log a line once (rank 0 under torchrun)."""
        if self.dist.main:
            self.log(line)

    # -- resume ------------------------------------------------------------------------------------------
    def resume(self) -> bool:
        """Restore ``last.pt`` when there is one; False when the run has nothing left to train."""
        if not self.last.is_file():
            return True
        saved = checkpoints.model_file(self.last)
        done, planned = int(saved["epoch"]), int(saved["meta"]["config"]["train"]["epochs"])
        if done > self.epochs:
            raise UserError(f"train.epochs: {self.epochs} is fewer than the {done} epochs this run has already "
                            f"trained ({self.last}); set train.epochs to {done} or more to keep training, or "
                            f"use another output_dir to train a new run")
        if saved["stopped"] and self.epochs > planned:  # early stopping ended it; more epochs do not undo that
            self.say(f"   train: stopped early after epoch {done} ({self.last}): train.epochs={self.epochs} does "
                     f"not continue it, since early stopping judged it done; its checkpoints are final. To train "
                     f"longer, use another --output-dir (with train.early_stopping.patience raised or 0)")
            return False
        if saved["stopped"] or done == self.epochs:
            stopped = " (stopped early)" if saved["stopped"] else ""
            self.say(f"   train: already trained for {done} epochs{stopped} ({self.last}); skipping")
            return False
        self.restore(saved)
        if done == planned:
            self.say(f"   train: continuing from epoch {done} to {self.epochs} (train.epochs was {planned}; "
                     f"{self.last})")
        else:
            self.say(f"   train: resuming from epoch {done} ({self.last})")
        return True

    def restore(self, saved: dict[str, Any]) -> None:
        """Load every state of a saved ``last.pt``; the RNG states last, so nothing after them draws."""
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        E.restore_scheduler(self.scheduler, saved["scheduler"], self.schedule, self.epochs)
        if self.precision.scaler is not None and saved["scaler"]:
            self.precision.scaler.load_state_dict(saved["scaler"])
        self.state = TrainState(int(saved["epoch"]), list(saved["history"]), bool(saved["stopped"]))
        self.saved_epoch = self.state.epoch
        for callback in self.callbacks:
            callback.load_state_dict(saved)
        E.set_rng_states(saved["rng"])

    def resume_state(self) -> dict[str, Any]:
        """The loop's part of ``last.pt`` (the callbacks add theirs)."""
        scaler = self.precision.scaler
        return {"optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "scaler": scaler.state_dict() if scaler is not None else None, "rng": E.rng_states(),
                "history": self.state.history, "stopped": self.state.stopped}

    # -- the loop ----------------------------------------------------------------------------------------
    def fit(self) -> None:
        """Train the remaining epochs; Ctrl-C becomes :class:`TrainingInterrupted`."""
        for callback in self.callbacks:
            callback.on_train_start(self)
        try:
            for epoch in range(self.state.epoch, self.epochs):
                result = self.run_epoch(epoch)
                for callback in self.callbacks:
                    callback.on_epoch_end(self, result)
                distributed.barrier(self.dist)
                if distributed.broadcast_flag(self.state.stopped, self.dist):
                    break
        except KeyboardInterrupt:
            raise self.interrupted() from None
        finally:
            for callback in self.callbacks:
                callback.on_train_end(self)

    def run_epoch(self, epoch: int) -> EpochResult:
        """Train on the epoch's shuffled loader, validate, record the row, step the scheduler."""
        net = self.net if self.net is not None else self.model
        device = self.dist.device
        if self.terms is not None and hasattr(self.terms, "set_epoch"):
            self.terms.set_epoch(epoch)  # scheduled term weights
        try:
            tr = E.train_epoch(self.model, self.train_loader(epoch), self.optimizer, device, f"epoch {epoch + 1}",
                               self.loss_fn, self.precision, self.accumulate, self.clip_grad_norm, net, self.progress,
                               self.terms)
        except E.NonFiniteLoss as exc:
            kept = (f"{self.last} (epoch {self.saved_epoch})" if self.saved_epoch is not None
                    else "none (it failed in the first epoch)")
            raise UserError(f"{exc}; training stopped. Last good checkpoint: {kept}. Lower "
                            "train.optimizer.lr, set train.clip_grad_norm, or check the data.") from None
        tr = distributed.gather_train(tr, self.dist)
        va = E.collect(self.model, self.val_loader, device, "val", self.precision, net, self.progress)
        va = distributed.gather_outputs(va, self.val_sampler, self.dist)
        row = history_row(epoch + 1, tr, va, self.optimizer.param_groups[0]["lr"])
        E.scheduler_step(self.scheduler, self.schedule, row)
        self.state.epoch = epoch + 1
        self.state.history.append(row)
        return EpochResult(epoch + 1, row, tr, va)

    def interrupted(self) -> TrainingInterrupted:
        """What to tell the user after Ctrl-C: resume only when a last.pt exists."""
        return TrainingInterrupted(self.state.epoch + 1, self.last if self.saved_epoch is not None else None,
                                   self.saved_epoch)


def history_row(epoch: int, tr: E.Outputs, va: E.Outputs, lr: float) -> dict[str, Any]:
    """One row of metrics/history.csv: losses (and each train.loss term as loss_<term>), train_/val_ metrics at threshold 0.5, lr, speed, seconds."""
    row: dict[str, Any] = {"epoch": epoch, "train_loss": tr.loss, "val_loss": va.loss}
    row.update({f"loss_{name}": value for name, value in tr.terms.items()})
    tr_m, va_m = classification_metrics(tr.labels, tr.scores), classification_metrics(va.labels, va.scores)
    for key in ROW_METRICS:
        row[f"train_{key}"] = tr_m.get(key, math.nan)
        row[f"val_{key}"] = va_m.get(key, math.nan)
    row["lr"] = float(lr)
    row["train_img_s"] = round(tr.images_per_second, 1)
    row["seconds"] = round(tr.seconds + va.seconds, 2)
    return row
