"""The test job: each chosen checkpoint on the test split; metrics JSON and per-image predictions CSV."""
from __future__ import annotations

import csv
import json

from ..data import loader
from ..engine import evaluate
from ..metrics import classification_metrics, predictions
from ..runner import atomic_write_text


def run(run) -> None:
    cfg = run.config["test"]
    _, splits = run.data()
    nw = int(run.config["dataset"].get("num_workers", 0))
    for name in cfg["checkpoints"]:
        model = run.load_model(name)
        test_loader = loader(splits["test"], int(cfg["batch_size"]), False, nw, 0, run.device)
        loss, labels, scores, ids = evaluate(model, test_loader, run.device, desc=f"test {name}")
        metrics = {"checkpoint": name, "loss": loss, "n_positive": int((labels == 1).sum()),
                   **classification_metrics(labels, scores, float(cfg["threshold"])),
                   "threshold": float(cfg["threshold"])}
        atomic_write_text(run.path("metrics", f"test_{name}.json"), json.dumps(metrics, indent=2))
        preds = predictions(scores, float(cfg["threshold"]))
        with open(run.path("metrics", f"predictions_{name}.csv"), "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", "label", "prediction", *(["score"] if scores.ndim == 1 else
                                                           [f"score_{c}" for c in model.class_names])])
            for i, y, p, s in zip(ids, labels, preds, scores):
                writer.writerow([i, int(y), int(p), *([f"{s:.6f}"] if scores.ndim == 1 else [f"{v:.6f}" for v in s])])
        run.log(f"   test {name}: " + " ".join(f"{k}={metrics[k]:.4f}" for k in
                                               ("accuracy", "precision", "recall", "f1", "roc_auc") if k in metrics))
