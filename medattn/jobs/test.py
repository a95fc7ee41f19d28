"""The test job: each chosen checkpoint on the test split; metrics JSON and per-image predictions CSV."""
from __future__ import annotations

import csv
import json

from ..runner import atomic_write_text
from .checkpoint_names import CHECKPOINT_NAMES

PARAMS = {
    "type": "object", "additionalProperties": False, "default": {},
    "description": "evaluation on the test split",
    "properties": {
        "checkpoints": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"enum": CHECKPOINT_NAMES},
                        "default": ["best_val_loss"], "description": "checkpoints to evaluate"},
        "threshold": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5,
                      "description": "decision threshold on P(class 1) for sigmoid models"},
        "batch_size": {"type": "integer", "minimum": 1, "default": 32, "description": "images per forward"},
    },
}


def run(run) -> None:
    from ..data import loader
    from ..engine import evaluate
    from ..metrics import classification_metrics, predictions

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
