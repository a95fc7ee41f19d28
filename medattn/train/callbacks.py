"""What happens around the training loop, one small class each: best and last checkpoints, early stopping,
the history file, TensorBoard, progress and a validation explanation score.

The :class:`medattn.train.trainer.Trainer` calls every callback in list order at the start, after each epoch and at
the end (also when training fails). A callback whose state must survive a resume returns it from
``state_dict`` (its keys go to the top level of ``last.pt``) and gets the saved checkpoint back in
``load_state_dict``; so :class:`LastCheckpoint` comes after every callback whose state it saves.
Under torchrun every rank runs the callbacks (they agree on what improved); only rank 0 writes files.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..evidence import held_out
from ..evidence.metric_specs import mode_of
from ..evidence.metrics import operating_point
from ..files import write_csv
from ..store import checkpoints

if TYPE_CHECKING:
    from .trainer import EpochResult, Trainer


class Callback:
    """Does nothing; subclasses override what they need."""

    def on_train_start(self, trainer: Trainer) -> None:
        """Before the first epoch of this process (after a resume)."""

    def on_epoch_end(self, trainer: Trainer, result: EpochResult) -> None:
        """After each epoch: ``trainer.state`` already counts it and holds its history row."""

    def on_train_end(self, trainer: Trainer) -> None:
        """After the last epoch, early stopping, or an error: release what on_train_start took."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Take back this callback's keys of a saved ``last.pt``."""


class ExplanationScore(Callback):
    """A localisation score (energy in mask, pointing game, IoU) of an explainer's maps on fixed validation images
    with masks, after each epoch, as the history column ``column``: a checkpoint can follow where the model looks.
    It comes first, so that the checkpoints and early stopping see the column."""

    def __init__(self, explainer: Any, inputs: Any, masks: Any, score: str, batch_size: int, column: str) -> None:
        self.explainer, self.inputs, self.masks = explainer, inputs, masks
        self.score, self.batch_size, self.column = score, batch_size, column

    def on_epoch_end(self, trainer: Trainer, result: EpochResult) -> None:
        import numpy as np
        import torch

        from ..evidence.explanation_quality import localisation, pixel_map

        model, device = trainer.model, trainer.dist.device
        was = model.training
        model.eval()
        maps = []
        try:
            for start in range(0, len(self.inputs), self.batch_size):
                x = self.inputs[start:start + self.batch_size].to(device)
                target = None
                if model.output != "sigmoid":
                    with torch.no_grad():
                        target = model(x).argmax(dim=1)
                maps.append(self.explainer(model, x, target).detach().float().cpu().numpy())
        finally:
            model.train(was)
        scores = localisation(pixel_map(np.concatenate(maps), "abs"), self.masks)
        result.row[self.column] = float(scores.get(self.score, math.nan))


class ModelFile:
    """The model-file part of every kept checkpoint: weights, epoch and meta with that epoch's threshold,
    calibration and conformal predictor.

    They are fitted once per epoch on the validation outputs, by the rules of the config's ``test`` section (the
    same function the test job uses, medattn.evidence.held_out), and shared by the best and last checkpoints of
    the epoch. A conformal predictor on another split than validation, or one the validation split is too small
    for, is left to the test job (which says why); the validation split does not change, so after the first such
    failure the later epochs fit without it (once, not twice).
    """

    def __init__(self, meta: dict[str, Any], test: dict[str, Any]) -> None:
        self.meta, self.test = meta, dict(test)  # its own copy: conformal is dropped from it after a failure
        self._fitted: tuple[int, dict[str, Any]] | None = None

    def fitted(self, result: EpochResult) -> dict[str, Any]:
        """{"threshold", "calibration", "conformal"} of this epoch."""
        if self._fitted is None or self._fitted[0] != result.epoch:
            val = result.val
            if val.logits is None:  # outputs without logits (a custom loop): the threshold alone, as before
                found = {"threshold": operating_point(val.labels, val.scores, self.test)}
            else:
                try:
                    found = held_out.fit(val.labels, val.logits, val.scores, self.test, self.meta["class_names"])
                except UserError:  # e.g. a split too small for test.conformal: the test job reports it
                    test = {**self.test, "conformal": None}
                    found = held_out.fit(val.labels, val.logits, val.scores, test, self.meta["class_names"])
                    self.test = test
            self._fitted = (result.epoch, found)
        return self._fitted[1]

    def state(self, trainer: Trainer, result: EpochResult, monitor: str | None, value: float | None) -> dict:
        return {"format": checkpoints.FORMAT, "model": trainer.model.state_dict(), "epoch": result.epoch,
                "monitor": monitor, "value": value, "meta": {**self.meta, **self.fitted(result)}}


class BestCheckpoints(Callback):
    """``best_<monitor>.pt`` whenever the monitored history value improves (min for losses, max otherwise)."""

    def __init__(self, names: list[str], folder: Path, model_file: ModelFile) -> None:
        self.names, self.folder, self.model_file = list(names), Path(folder), model_file
        self.best: dict[str, float] = {}

    def on_epoch_end(self, trainer: Trainer, result: EpochResult) -> None:
        for name in self.names:
            monitor = name[len("best_"):]
            value, old = result.row.get(monitor, math.nan), self.best.get(name)
            if not math.isfinite(value) or (old is not None and not _better(value, old, mode_of(monitor))):
                continue
            self.best[name] = value
            if trainer.dist.main:
                checkpoints.save(self.model_file.state(trainer, result, monitor, value), self.folder / f"{name}.pt")

    def state_dict(self) -> dict[str, Any]:
        return {"best": dict(self.best)}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.best = dict(saved["best"])


def _better(value: float, old: float, mode: str, delta: float = 0.0) -> bool:
    return value < old - delta if mode == "min" else value > old + delta


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs (0: never)."""

    def __init__(self, patience: int, monitor: str, min_delta: float) -> None:
        self.patience, self.monitor, self.min_delta = patience, monitor, min_delta
        self.stale, self.reference = 0, None

    def on_epoch_end(self, trainer: Trainer, result: EpochResult) -> None:
        if self.patience <= 0:
            return
        if self.monitor not in result.row:
            raise UserError(f"train.early_stopping.monitor: {self.monitor!r} is not measured; "
                            f"have {', '.join(result.row)}")
        value = result.row[self.monitor]
        if math.isfinite(value) and (self.reference is None or
                                     _better(value, self.reference, mode_of(self.monitor), self.min_delta)):
            self.reference, self.stale = value, 0
        else:
            self.stale += 1
        if self.stale >= self.patience:
            trainer.state.stopped = True
            trainer.say(f"   train: early stop after epoch {result.epoch}: {self.monitor} did not improve for "
                        f"{self.patience} epochs")

    def state_dict(self) -> dict[str, Any]:
        return {"stale": self.stale, "es_best": self.reference}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.stale, self.reference = int(saved["stale"]), saved["es_best"]


class LastCheckpoint(Callback):
    """``last.pt`` after every epoch: a model file plus everything an exact resume needs."""

    def __init__(self, path: Path, model_file: ModelFile) -> None:
        self.path, self.model_file = Path(path), model_file

    def on_epoch_end(self, trainer: Trainer, result: EpochResult) -> None:
        if trainer.dist.main:
            state = self.model_file.state(trainer, result, None, None)
            state.update(trainer.resume_state())
            for callback in trainer.callbacks:
                state.update(callback.state_dict())
            checkpoints.save(state, self.path)
        trainer.saved_epoch = result.epoch


class History(Callback):
    """``metrics/history.csv``: one row per epoch, rewritten whole after each."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_epoch_end(self, trainer: Trainer, result: EpochResult) -> None:
        if trainer.dist.main:
            write_csv(self.path, trainer.state.history, list(trainer.state.history[0]))


class TensorBoard(Callback):
    """Every finite number of the history row as a scalar (``train_loss`` -> ``train/loss``)."""

    def __init__(self, folder: Path, setting: bool | str) -> None:
        self.folder, self.setting = Path(folder), setting
        self.writer: Any = None

    def on_train_start(self, trainer: Trainer) -> None:
        if self.setting is False or not trainer.dist.main:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            if self.setting is True:
                raise UserError("train.tensorboard: true, but tensorboard is not installed (pip install tensorboard)"
                                ) from None
            return
        self.writer = SummaryWriter(log_dir=str(self.folder))

    def on_epoch_end(self, trainer: Trainer, result: EpochResult) -> None:
        if self.writer is None:
            return
        for key, value in result.row.items():
            if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(key.replace("_", "/", 1), value, result.epoch)

    def on_train_end(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class Progress(Callback):
    """An epoch bar on a terminal (``train.progress``); otherwise one plain log line per epoch."""

    def __init__(self, enabled: bool, label: str) -> None:
        self.enabled, self.label = enabled, label
        self.bar: Any = None

    def on_train_start(self, trainer: Trainer) -> None:
        from .engine import bar

        self.bar = bar(None, f"{self.label} epochs", self.enabled and trainer.dist.main, unit="epoch",
                       initial=trainer.state.epoch, total=trainer.epochs)

    def on_epoch_end(self, trainer: Trainer, result: EpochResult) -> None:
        row, shown = result.row, self.bar is not None and not self.bar.disable
        if shown:
            self.bar.set_postfix(train_loss=f"{row['train_loss']:.4f}", val_loss=f"{row['val_loss']:.4f}",
                                 val_acc=f"{row.get('val_accuracy', math.nan):.3f}",
                                 img_s=f"{row['train_img_s']:.0f}", refresh=False)
            self.bar.update(1)
            return
        trainer.say(f"   train: epoch {result.epoch}/{trainer.epochs}: train_loss {row['train_loss']:.4f} "
                    f"val_loss {row['val_loss']:.4f} val_accuracy {row.get('val_accuracy', math.nan):.4f} "
                    f"lr {row['lr']:.3g} ({row['train_img_s']:.0f} img/s, {row['seconds']:.1f} s)")

    def on_train_end(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class EpochHook(Callback):
    """Hands each finished epoch's number and history row to a function, after the epoch is saved (medattn sweep
    reports it to its Optuna trial, whose pruner may stop training by raising)."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def on_epoch_end(self, trainer: Trainer, result: EpochResult) -> None:
        self.fn(result.epoch, dict(result.row))
