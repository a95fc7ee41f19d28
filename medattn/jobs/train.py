"""The train job: epochs of training and validation, a per-epoch history, best and last checkpoints.

An interrupted run continues from ``checkpoints/last.pt``; every epoch reseeds the shuffling and the
global RNG from (seed, epoch), so a resumed CPU run follows the same path as an uninterrupted one.
"""
from __future__ import annotations

import csv
import time

from ..config.schema import slot
from .checkpoint_names import CHECKPOINT_NAMES

PARAMS = {
    "type": "object", "additionalProperties": False, "default": {},
    "description": "training: optimiser, epochs, batch size, augmentation, checkpoints",
    "properties": {
        "epochs": {"type": "integer", "minimum": 1, "default": 10, "description": "passes over the training split"},
        "batch_size": {"type": "integer", "minimum": 1, "default": 32, "description": "images per step"},
        "optimizer": {
            "type": "object", "additionalProperties": False, "default": {}, "description": "optimiser settings",
            "properties": {
                "name": {"enum": ["adam", "adamw", "sgd"], "default": "adam", "description": "torch.optim class"},
                "lr": {"type": "number", "exclusiveMinimum": 0, "default": 1.0e-4, "description": "learning rate"},
                "weight_decay": {"type": "number", "minimum": 0, "default": 0.0, "description": "L2 penalty"},
                "momentum": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.0,
                             "description": "SGD momentum"},
            },
        },
        "augment": slot("transform", "train-time augmentation preset (a transform component)"),
        "checkpoints": {"type": "array", "uniqueItems": True, "items": {"enum": CHECKPOINT_NAMES[:2]},
                        "default": CHECKPOINT_NAMES[:2],
                        "description": "best checkpoints kept besides last.pt (lowest val / train loss)"},
    },
}

CURVES = ("accuracy", "recall", "precision", "f1")


def run(run) -> None:
    import torch
    from tqdm.auto import tqdm

    from .. import checkpoints
    from ..data import loader
    from ..engine import evaluate, make_optimizer, train_epoch
    from ..metrics import classification_metrics

    cfg = run.config["train"]
    seed = int(run.config.get("seed", 42))
    _, splits = run.data()
    model = run.new_model().to(run.device)
    optimizer = make_optimizer(model, cfg.get("optimizer", {}))
    ckdir = run.dir / "checkpoints"
    history_file = run.path("metrics", "history.csv")
    epochs = int(cfg["epochs"])
    start, best, history = 0, {}, []
    last = ckdir / "last.pt"
    if last.is_file():
        state = checkpoints.load(last)
        if state.get("epoch", 0) >= epochs:
            run.log(f"   train: already trained for {state['epoch']} epochs ({last}); skipping")
            return
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, best, history = state["epoch"], state.get("best", {}), state.get("history", [])
        run.log(f"   train: resuming from epoch {start} ({last})")
    nw = int(run.config["dataset"].get("num_workers", 0))
    bs = int(cfg["batch_size"])
    bar = tqdm(range(start, epochs), desc=f"{run.variant} epochs", unit="epoch", dynamic_ncols=True,
               initial=start, total=epochs)
    for epoch in bar:
        torch.manual_seed(seed * 1000 + epoch)
        t0 = time.time()
        train_loader = loader(splits["train"], bs, True, nw, seed * 1000 + epoch, run.device)
        tr_loss, tr_y, tr_s = train_epoch(model, train_loader, optimizer, run.device, desc=f"epoch {epoch + 1}")
        val_loss, va_y, va_s, _ = evaluate(model, loader(splits["val"], bs, False, nw, seed, run.device),
                                           run.device, desc="val")
        row = {"epoch": epoch + 1, "train_loss": tr_loss, "val_loss": val_loss}
        tr_m, va_m = classification_metrics(tr_y, tr_s), classification_metrics(va_y, va_s)
        for key in CURVES:
            row[f"train_{key}"], row[f"val_{key}"] = tr_m[key], va_m[key]
        row["seconds"] = round(time.time() - t0, 2)
        history.append(row)
        improved = []
        for name, value in (("best_val_loss", val_loss), ("best_train_loss", tr_loss)):
            if name in cfg["checkpoints"] and value < best.get(name, float("inf")):
                best[name] = value
                improved.append(name)
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                 "best": best, "history": history}
        for name in improved:
            checkpoints.save({"model": state["model"], "epoch": epoch + 1, name: best[name]}, ckdir / f"{name}.pt")
        checkpoints.save(state, last)
        write_history(history_file, history)
        bar.set_postfix(train_loss=f"{tr_loss:.4f}", val_loss=f"{val_loss:.4f}", val_acc=f"{va_m['accuracy']:.3f}")
    run.log(f"   train: {epochs} epochs; best val loss {best.get('best_val_loss', float('nan')):.4f}; "
            f"history in {history_file}")


def write_history(path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
