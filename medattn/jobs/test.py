"""The test job: each chosen checkpoint on the test split.

Writes, per checkpoint: ``metrics/test_<ckpt>.json`` (top-level numbers: the summary table; nested: the
confidence intervals, per-class values, confusion matrix, reliability diagram, operating point),
``metrics/predictions_<ckpt>.csv`` (one row per image), ``metrics/roc_<ckpt>.csv`` (binary tasks), and the
seed's text format in ``metrics/seed_results.txt``. A threshold chosen on the validation split (Youden's J
or a target sensitivity / specificity) is frozen and applied to the test split; the metrics at the fixed
threshold are kept beside them.
"""
from __future__ import annotations

import csv
import json

from ..runner import atomic_write_text
from .checkpoint_names import CHECKPOINT, CHECKPOINT_NAMES

PARAMS = {
    "type": "object", "additionalProperties": False, "default": {},
    "description": "evaluation on the test split",
    "properties": {
        "checkpoints": {"type": "array", "minItems": 1, "uniqueItems": True,
                        "items": {"type": "string", "pattern": CHECKPOINT},
                        "default": ["best_val_loss"],
                        "description": f"checkpoints to evaluate: {', '.join(CHECKPOINT_NAMES)} or any "
                                       "best_<train|val>_<metric> kept by train.checkpoints"},
        "threshold": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5,
                      "description": "decision threshold on P(class 1) for binary tasks (threshold_method fixed)"},
        "threshold_method": {"enum": ["fixed", "youden", "sensitivity", "specificity"], "default": "fixed",
                             "description": "fixed: `threshold`; youden: max(TPR - FPR) on the validation split; "
                                            "sensitivity / specificity: reach threshold_target on validation"},
        "threshold_target": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.9,
                             "description": "target sensitivity or specificity for those methods"},
        "batch_size": {"type": "integer", "minimum": 1, "default": 32, "description": "images per forward"},
        "bootstrap": {
            "type": "object", "additionalProperties": False, "default": {},
            "description": "percentile bootstrap confidence intervals of the test metrics",
            "properties": {
                "resamples": {"type": "integer", "minimum": 0, "default": 1000,
                              "description": "bootstrap resamples (0: no intervals)"},
                "confidence": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "default": 0.95,
                               "description": "interval coverage"},
                "by_group": {"type": "boolean", "default": True,
                             "description": "resample whole groups (patients) when the data set gives `group`"},
                "seed": {"type": ["integer", "null"], "minimum": 0, "default": None,
                         "description": "seed of the resampling (null: the experiment's seed)"},
            },
        },
        "calibration_bins": {"type": "integer", "minimum": 2, "default": 10,
                             "description": "bins of the reliability diagram and the ECE"},
        "pad": {
            "type": "object", "additionalProperties": False, "default": {},
            "description": "presentation-attack detection metrics (AG-PAD; class 1 = attack)",
            "properties": {
                "enabled": {"type": "boolean", "default": False,
                            "description": "add APCER, BPCER, ACER and TDR@FDR; save the ROC as pad_roc_<ckpt>.csv"},
                "fdr": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.002,
                        "description": "false-detection rate of the TDR operating point (0.002 = 0.2%)"},
            },
        },
    },
}


def run(run) -> None:
    """Evaluate every configured checkpoint; see the module docstring."""
    import numpy as np

    from .. import distributed, seed_report
    from .. import engine as E
    from .. import metrics as M

    cfg = run.config["test"]
    dist = distributed.setup(run.device)
    device = dist.device
    bundle, splits = run.data()
    settings = E.LoaderSettings(int(run.config["dataset"].get("num_workers", 0)),
                                **(run.config.get("train", {}).get("loader") or {}))
    bs = int(cfg["batch_size"])
    method = cfg.get("threshold_method", "fixed")
    fixed = float(cfg["threshold"])
    boot = cfg.get("bootstrap") or {}
    seed = int(boot["seed"]) if boot.get("seed") is not None else int(run.config.get("seed", 42))
    pad = cfg.get("pad") or {}

    def outputs(model, split: str, desc: str) -> E.Outputs:
        sampler = distributed.sampler(splits[split], dist, shuffle=False, seed=0)
        loader = E.make_loader(splits[split], bs, False, 0, device, settings, sampler)
        return distributed.gather_outputs(E.collect(model, loader, device, desc), sampler, dist)

    for name in cfg["checkpoints"]:
        model = run.load_model(name).to(device)
        te = outputs(model, "test", f"test {name}")
        threshold, source = fixed, "fixed"
        if method != "fixed":
            va = outputs(model, "val", f"val {name}")
            threshold = M.choose_threshold(va.labels, va.scores, method, float(cfg["threshold_target"]), fixed)
            source = f"validation ({method}" + (f" {cfg['threshold_target']})" if method != "youden" else ")")
        if not dist.main:
            continue
        labels, scores = te.labels, te.scores
        metrics = {"checkpoint": name, "loss": te.loss, "n_positive": int((labels == 1).sum()),
                   **M.classification_metrics(labels, scores, threshold), "threshold": float(threshold)}
        binary = M.positive_scores(scores) is not None
        if pad.get("enabled"):
            pm = M.pad_metrics(labels, scores, threshold, float(pad.get("fdr", 0.002)))
            roc = pm.pop("roc", None)
            metrics.update(pm)
            if roc:
                _csv(run.path("metrics", f"pad_roc_{name}.csv"), ["fdr", "tdr", "threshold"],
                     zip(roc["fdr"], roc["tdr"], roc["thresholds"]))
        metrics["operating_point"] = {"method": method, "threshold": float(threshold), "source": source,
                                      "fixed_threshold": fixed, "target": cfg.get("threshold_target")}
        if method != "fixed":  # both recorded: the metrics at the fixed threshold too
            metrics["at_fixed_threshold"] = M.classification_metrics(labels, scores, fixed)
        metrics["confusion_matrix"] = {"labels": list(model.class_names),
                                       "matrix": M.confusion(labels, scores, threshold)}
        metrics["per_class"] = M.per_class(labels, scores, model.class_names, threshold)
        metrics["reliability"] = M.reliability(labels, scores, int(cfg.get("calibration_bins", 10)))
        if int(boot.get("resamples", 0)) > 0:
            groups = te.groups if boot.get("by_group", True) else None
            metrics["ci"] = {"confidence": float(boot.get("confidence", 0.95)), "resamples": int(boot["resamples"]),
                             "unit": "group" if groups is not None else "image", "seed": seed,
                             **M.bootstrap_ci(labels, scores, threshold, int(boot["resamples"]), seed, groups,
                                              float(boot.get("confidence", 0.95)))}
        atomic_write_text(run.path("metrics", f"test_{name}.json"), json.dumps(metrics, indent=2, allow_nan=True))
        preds = M.predictions(scores, threshold)
        columns = ["id", "label", "prediction"] + (["score"] if scores.ndim == 1 else
                                                   [f"score_{c}" for c in model.class_names])
        if te.groups is not None:
            columns.insert(1, "group")
        rows = []
        for i, (sid, y, p, s) in enumerate(zip(te.ids, labels, preds, scores)):
            vals = [f"{s:.6f}"] if scores.ndim == 1 else [f"{v:.6f}" for v in s]
            rows.append([sid, *([te.groups[i]] if te.groups is not None else []), int(y), int(p), *vals])
        _csv(run.path("metrics", f"predictions_{name}.csv"), columns, rows)
        if binary and len(np.unique(labels)) > 1:
            from sklearn.metrics import roc_curve

            fpr, tpr, thr = roc_curve(labels, M.positive_scores(scores))
            _csv(run.path("metrics", f"roc_{name}.csv"), ["fpr", "tpr", "threshold"],
                 zip(fpr.tolist(), tpr.tolist(), [min(float(t), 1e300) for t in thr]))
        ci = metrics.get("ci", {})
        shown = " ".join(f"{k}={metrics[k]:.4f}" + (f" [{ci[k][0]:.3f}, {ci[k][1]:.3f}]" if k in ci else "")
                         for k in ("accuracy", "precision", "recall", "f1", "roc_auc") if k in metrics)
        run.log(f"   test {name} (threshold {threshold:.4g}, {source}): {shown}")
    if dist.main:
        seed_report.write_run(run.dir, run.config, cfg["checkpoints"])


def _csv(path, header, rows) -> None:
    """A small CSV file, written whole."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
