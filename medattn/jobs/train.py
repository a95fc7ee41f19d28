"""The train job: epochs of training and validation, a per-epoch history, best and last checkpoints.

An interrupted run continues from ``checkpoints/last.pt``, which holds the model, optimiser, scheduler,
GradScaler, epoch, best values, early-stopping state, history and every RNG state; the shuffling of each
epoch comes from (seed, epoch). A resumed CPU run therefore ends with exactly the weights and metrics of an
uninterrupted one. Under ``torchrun`` the model is wrapped in DDP and only rank 0 writes files.
"""
from __future__ import annotations

import math
from typing import Any

from ..config.schema import slot
from ..errors import UserError
from .checkpoint_names import CHECKPOINT_NAMES, METRIC_NAMES

MONITOR = "^(train|val)_(" + "|".join(METRIC_NAMES) + ")$"
BEST = "^best_(train|val)_(" + "|".join(METRIC_NAMES) + ")$"


def _key(schema: dict, default: Any, description: str) -> dict:
    return {**schema, "default": default, "description": description}


PARAMS = {
    "type": "object", "additionalProperties": False, "default": {},
    "description": "training: optimiser, schedule, epochs, batch size, augmentation, checkpoints, precision",
    "properties": {
        "epochs": _key({"type": "integer", "minimum": 1}, 10, "passes over the training split"),
        "batch_size": _key({"type": "integer", "minimum": 1}, 32, "images per step (per process under torchrun)"),
        "accumulate": _key({"type": "integer", "minimum": 1}, 1,
                           "gradient accumulation: optimiser step every N batches (effective batch N x batch_size)"),
        "optimizer": {
            "type": "object", "additionalProperties": False, "default": {}, "description": "optimiser settings",
            "properties": {
                "name": _key({"enum": ["adam", "adamw", "sgd"]}, "adam", "torch.optim class"),
                "lr": _key({"type": "number", "exclusiveMinimum": 0}, 1.0e-4, "learning rate"),
                "weight_decay": _key({"type": "number", "minimum": 0}, 0.0,
                                     "weight decay (L2 for adam/sgd, decoupled for adamw)"),
                "momentum": _key({"type": "number", "minimum": 0, "maximum": 1}, 0.0, "SGD momentum"),
                "nesterov": _key({"type": "boolean"}, False, "SGD Nesterov momentum (needs momentum > 0)"),
                "betas": _key({"type": "array", "items": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                               "minItems": 2, "maxItems": 2}, [0.9, 0.999], "Adam/AdamW betas"),
            },
        },
        "scheduler": {
            "type": "object", "additionalProperties": False, "default": {},
            "description": "learning-rate schedule, stepped once per epoch",
            "properties": {
                "name": _key({"enum": ["none", "plateau", "cosine", "step"]}, "none",
                             "none; plateau = ReduceLROnPlateau (Mishra: monitor train_loss, factor 0.1, "
                             "patience 10, min_delta 1e-4); cosine = CosineAnnealingLR; step = StepLR"),
                "monitor": _key({"type": "string", "pattern": MONITOR}, "train_loss",
                                "plateau: the history value watched (train_/val_ + loss or a metric)"),
                "mode": _key({"enum": ["auto", "min", "max"]}, "auto",
                             "plateau: min or max; auto = min for losses, max for metrics"),
                "factor": _key({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}, 0.1,
                               "plateau: lr multiplier on a plateau"),
                "patience": _key({"type": "integer", "minimum": 0}, 10, "plateau: epochs without improvement"),
                "min_delta": _key({"type": "number", "minimum": 0}, 1.0e-4,
                                  "plateau: absolute change that counts as an improvement (Keras epsilon)"),
                "cooldown": _key({"type": "integer", "minimum": 0}, 0, "plateau: epochs to wait after a cut"),
                "min_lr": _key({"type": "number", "minimum": 0}, 0.0, "plateau/cosine: lower bound of the lr"),
                "t_max": _key({"type": ["integer", "null"], "minimum": 1}, None,
                              "cosine: epochs of the half cosine (null: train.epochs)"),
                "step_size": _key({"type": "integer", "minimum": 1}, 30, "step: epochs between cuts"),
                "gamma": _key({"type": "number", "exclusiveMinimum": 0}, 0.1, "step: lr multiplier per cut"),
            },
        },
        "clip_grad_norm": _key({"type": "number", "minimum": 0}, 0.0,
                               "clip the global gradient norm to this value (0: no clipping)"),
        "class_weights": _key({"anyOf": [{"enum": ["none", "balanced"]},
                                         {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0},
                                          "minItems": 2}]}, "none",
                              "loss weights per class: none, balanced (n / (k * count)) or a list; for a "
                              "sigmoid model [w0, w1] becomes pos_weight w1 / w0"),
        "augment": slot("transform", "train-time augmentation preset (a transform component)"),
        "checkpoints": _key({"type": "array", "uniqueItems": True,
                             "items": {"type": "string", "pattern": BEST}},
                            CHECKPOINT_NAMES[:2],
                            "best checkpoints kept besides last.pt: best_<train|val>_<loss|metric>, min for "
                            "loss/brier/ece and max otherwise (the seed's pair: lowest val and train loss)"),
        "early_stopping": {
            "type": "object", "additionalProperties": False, "default": {},
            "description": "stop when the monitored value has not improved for `patience` epochs",
            "properties": {
                "patience": _key({"type": "integer", "minimum": 0}, 0, "epochs without improvement (0: off)"),
                "monitor": _key({"type": "string", "pattern": MONITOR}, "val_loss", "history value watched"),
                "min_delta": _key({"type": "number", "minimum": 0}, 0.0, "change that counts as an improvement"),
            },
        },
        "deterministic": _key({"type": "boolean"}, False,
                              "torch.use_deterministic_algorithms(True), cuDNN benchmark off (slower on GPU)"),
        "amp": _key({"enum": ["none", "bf16", "fp16"]}, "none",
                    "CUDA mixed precision: bf16, or fp16 with a GradScaler (ignored on CPU)"),
        "channels_last": _key({"type": "boolean"}, False, "CUDA: NHWC memory format for model and inputs"),
        "compile": _key({"type": "boolean"}, False, "torch.compile the model before training"),
        "loader": {
            "type": "object", "additionalProperties": False, "default": {},
            "description": "DataLoader settings (worker count: dataset.num_workers)",
            "properties": {
                "pin_memory": _key({"enum": ["auto", True, False]}, "auto",
                                   "page-locked host memory + non-blocking copies (auto: on CUDA)"),
                "persistent_workers": _key({"type": "boolean"}, False,
                                           "keep workers between epochs (faster; with random augmentation in "
                                           "workers a resumed run is no longer bit-identical)"),
                "prefetch_factor": _key({"type": "integer", "minimum": 1}, 2, "batches loaded ahead per worker"),
            },
        },
        "progress": _key({"type": "boolean"}, True, "tqdm bars per epoch with loss and throughput"),
        "tensorboard": _key({"enum": ["auto", True, False]}, "auto",
                            "write runs/.../tensorboard event files (auto: when tensorboard is installed)"),
    },
}

CURVES = ("loss", "accuracy", "balanced_accuracy", "recall", "precision", "specificity", "f1", "roc_auc")


def run(run) -> None:
    """Train (or resume) the run's model; see the module docstring."""
    import torch

    from .. import checkpoints, distributed
    from .. import engine as E
    from ..metrics import classification_metrics, mode_of

    cfg = run.config["train"]
    seed = int(run.config.get("seed", 42))
    dist = distributed.setup(run.device)
    device = dist.device
    E.configure_determinism(bool(cfg.get("deterministic", False)))
    bundle, splits = run.data()
    model = run.new_model().to(device)  # seeded: the same initial weights on every rank
    prec = E.precision_for(device, cfg.get("amp", "none"), bool(cfg.get("channels_last", False)), run.log)
    if prec.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = E.make_optimizer(model, cfg.get("optimizer", {}))
    epochs = int(cfg["epochs"])
    sched_spec = dict(cfg.get("scheduler") or {})
    if sched_spec.get("mode") == "auto":
        sched_spec["mode"] = None
    scheduler = E.make_scheduler(optimizer, sched_spec, epochs)
    weights = E.class_weights_for(cfg.get("class_weights", "none"), E.split_labels(splits["train"])
                                  if cfg.get("class_weights", "none") == "balanced" else [], len(bundle.class_names))
    loss_fn = E.loss_function(model, weights)
    ckdir = run.dir / "checkpoints"
    last = ckdir / "last.pt"
    wanted = list(cfg.get("checkpoints", CHECKPOINT_NAMES[:2]))
    stop_cfg = cfg.get("early_stopping") or {}
    state: dict[str, Any] = {"epoch": 0, "best": {}, "history": [], "stale": 0, "stopped": False}
    if last.is_file():
        saved = checkpoints.load(last)
        if saved.get("epoch", 0) >= epochs or saved.get("stopped"):
            run.log(f"   train: already trained for {saved['epoch']} epochs ({last}); skipping")
            return
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None and saved.get("scheduler") is not None:
            scheduler.load_state_dict(saved["scheduler"])
        if prec.scaler is not None and saved.get("scaler") is not None:
            prec.scaler.load_state_dict(saved["scaler"])
        state.update({k: saved[k] for k in ("epoch", "best", "history", "stale", "es_best") if k in saved})
        if "rng" in saved:
            E.set_rng_states(saved["rng"])
        run.log(f"   train: resuming from epoch {state['epoch']} ({last})")
    net = distributed.wrap(model, dist)
    if cfg.get("compile"):
        net = torch.compile(net)
    settings = E.LoaderSettings(int(run.config["dataset"].get("num_workers", 0)), **(cfg.get("loader") or {}))
    bs = int(cfg["batch_size"])
    train_sampler = distributed.sampler(splits["train"], dist, shuffle=True, seed=seed)
    val_sampler = distributed.sampler(splits["val"], dist, shuffle=False, seed=seed)
    val_loader = E.make_loader(splits["val"], bs, False, seed, device, settings, val_sampler)
    progress = bool(cfg.get("progress", True)) and dist.main
    history_file = run.dir / "metrics" / "history.csv"
    board = _tensorboard(run, cfg.get("tensorboard", "auto")) if dist.main else None
    from tqdm.auto import tqdm

    bar = tqdm(range(state["epoch"], epochs), desc=f"{run.variant} epochs", unit="epoch", dynamic_ncols=True,
               initial=state["epoch"], total=epochs, disable=not progress)
    for epoch in bar:
        if train_sampler is not None:
            train_sampler.set_epoch(epoch)
        train_loader = E.make_loader(splits["train"], bs, True, seed * 1000 + epoch, device, settings, train_sampler)
        try:
            tr = E.train_epoch(model, train_loader, optimizer, device, f"epoch {epoch + 1}", loss_fn, prec,
                               int(cfg.get("accumulate", 1)), float(cfg.get("clip_grad_norm", 0.0)), net, progress)
        except E.NonFiniteLoss as exc:
            kept = f"{last} (epoch {state['epoch']})" if last.is_file() else "none (it failed in the first epoch)"
            raise UserError(f"train {run.variant}: {exc}; training stopped. Last good checkpoint: {kept}. "
                            "Lower train.optimizer.lr, set train.clip_grad_norm, or check the data.") from None
        tr = distributed.gather_train(tr, dist)
        va = distributed.gather_outputs(E.collect(model, val_loader, device, "val", prec, net, progress),
                                        val_sampler, dist)
        row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": tr.loss, "val_loss": va.loss}
        tr_m, va_m = classification_metrics(tr.labels, tr.scores), classification_metrics(va.labels, va.scores)
        for key in CURVES[1:]:
            row[f"train_{key}"] = tr_m.get(key, math.nan)
            row[f"val_{key}"] = va_m.get(key, math.nan)
        for key in ("brier", "ece", "pr_auc"):
            row[f"val_{key}"] = va_m.get(key, math.nan)
            row[f"train_{key}"] = tr_m.get(key, math.nan)
        row["lr"] = optimizer.param_groups[0]["lr"]
        row["train_img_s"] = round(tr.images_per_second, 1)
        row["seconds"] = round(tr.seconds + va.seconds, 2)
        E.scheduler_step(scheduler, sched_spec, row)
        state["history"].append(row)
        improved = []
        for name in wanted:
            monitor = name[len("best_"):]
            value, mode = row.get(monitor, math.nan), mode_of(monitor)
            old = state["best"].get(name)
            if math.isfinite(value) and (old is None or (value < old if mode == "min" else value > old)):
                state["best"][name] = value
                improved.append(name)
        stop = _early_stop(state, row, stop_cfg, mode_of)
        state["epoch"] = epoch + 1
        state["stopped"] = stop
        if dist.main:
            weights_now = model.state_dict()
            for name in improved:
                checkpoints.save({"model": weights_now, "epoch": epoch + 1, "monitor": name[len("best_"):],
                                  "value": state["best"][name], name: state["best"][name]}, ckdir / f"{name}.pt")
            checkpoints.save({"model": weights_now, "optimizer": optimizer.state_dict(),
                              "scheduler": scheduler.state_dict() if scheduler is not None else None,
                              "scaler": prec.scaler.state_dict() if prec.scaler is not None else None,
                              "rng": E.rng_states(), "format": 2, **state}, last)
            write_history(run.path("metrics", "history.csv"), state["history"])
            if board is not None:
                for key, value in row.items():
                    if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                        board.add_scalar(key.replace("_", "/", 1), value, epoch + 1)
        distributed.barrier(dist)
        bar.set_postfix(train_loss=f"{tr.loss:.4f}", val_loss=f"{va.loss:.4f}",
                        val_acc=f"{va_m.get('accuracy', math.nan):.3f}", img_s=f"{tr.images_per_second:.0f}")
        if distributed.broadcast_flag(stop, dist):
            run.log(f"   train: early stop after epoch {epoch + 1}: {stop_cfg.get('monitor', 'val_loss')} "
                    f"did not improve for {stop_cfg.get('patience')} epochs")
            break
    if board is not None:
        board.close()
    if dist.main:
        best = ", ".join(f"{k} {v:.4f}" for k, v in state["best"].items())
        run.log(f"   train: {state['epoch']} epochs; {best or 'no best checkpoint'}; history in {history_file}")


def _early_stop(state: dict, row: dict, spec: dict, mode_of) -> bool:
    """Update the early-stopping counter from this epoch's row; True when training should stop."""
    patience = int(spec.get("patience", 0))
    if patience <= 0:
        return False
    monitor = spec.get("monitor", "val_loss")
    if monitor not in row:
        raise UserError(f"train.early_stopping.monitor: {monitor!r} is not measured; have {', '.join(row)}")
    value, delta = row[monitor], float(spec.get("min_delta", 0.0))
    ref = state.get("es_best")
    better = ref is None or (value < ref - delta if mode_of(monitor) == "min" else value > ref + delta)
    if better and math.isfinite(value):
        state["es_best"], state["stale"] = value, 0
    else:
        state["stale"] = state.get("stale", 0) + 1
    return state["stale"] >= patience


def _tensorboard(run, setting):
    """A SummaryWriter under the run directory, or None (off, or tensorboard not installed in auto mode)."""
    if setting is False:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if setting is True:
            raise UserError("train.tensorboard: true, but tensorboard is not installed (pip install tensorboard)"
                            ) from None
        return None
    return SummaryWriter(log_dir=str(run.dir / "tensorboard"))


def write_history(path, rows: list[dict]) -> None:
    """metrics/history.csv, rewritten atomically after every epoch."""
    from ..runner import write_csv

    write_csv(path, rows, list(rows[0]))
