"""The test job: each chosen checkpoint on the test split.

Writes, per checkpoint: ``metrics/test_<ckpt>.json`` (top-level numbers: the summary table; nested: the
confidence intervals, per-class values, confusion matrix, reliability diagram, operating point),
``metrics/predictions_<ckpt>.csv`` (one row per image) and ``metrics/roc_<ckpt>.csv`` (binary tasks). A threshold chosen on the validation split (Youden's J
or a target sensitivity / specificity) is frozen and applied to the test split; the metrics at the fixed
threshold are kept beside them.
"""
from __future__ import annotations

import json
from typing import Any

from ..errors import UserError
from ..files import atomic_write_text, write_rows
from ..store.rundir import RunDir
from ..store.views import ExperimentView, RunView
from .base import Job
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
        "splits": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": "string"},
                   "default": ["test"],
                   "description": "splits to test on: test, and any extra split the data set gives (e.g. shifted, "
                                  "where a shortcut no longer holds); the metrics of split S appear in the "
                                  "summary and in compare as S.metric (shifted.roc_auc)"},
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


class TestJob(Job):
    """Evaluate every configured checkpoint on the test split; see the module docstring."""

    name = "test"
    reads = ("checkpoint",)
    writes = ("test_metrics", "predictions")
    distributed = True

    def needs(self, run: RunDir, config: dict[str, Any]) -> dict[str, list]:
        return {"checkpoint": [run.checkpoint(c) for c in config["test"]["checkpoints"]]}

    def check_data(self, config: dict[str, Any], bundle: Any, splits: dict[str, Any]) -> list[tuple[tuple, str]]:
        """Every split of test.splits is one the data set gives."""
        return [(("test", "splits", i), f"the data set has no split {s!r}; it has {', '.join(splits)}")
                for i, s in enumerate(config["test"]["splits"]) if s not in splits]

    def run(self, run) -> None:
        from .. import distributed

        cfg = run.config["test"]
        dist = distributed.setup(run.device)
        for name in cfg["checkpoints"]:
            te, classes, threshold, source, extra = _evaluate(run, dist, name)
            if dist.main:
                metrics = _write(run, name, te, classes, threshold, source)
                if extra:
                    metrics = _write_splits(run, name, metrics, extra, classes, threshold)
                metrics = _write_reliance(run, name, metrics, dist.device)
                _log(run, name, metrics, threshold, source)

    def rows(self, run: RunView) -> dict[str, list[dict]]:
        """One summary row per tested checkpoint: the numbers at the top of its test_<ckpt>.json."""
        rows = []
        for checkpoint in run.dir.tested_checkpoints():
            metrics = run.dir.read_test_metrics(checkpoint) or {}
            rows.append({"checkpoint": checkpoint, **{k: v for k, v in metrics.items()
                                                      if isinstance(v, (int, float)) and not isinstance(v, bool)}})
        return {"summary": rows}

    def tables(self, exp: ExperimentView) -> dict[str, list[dict]]:
        """The summary rows, and with ``compare:`` the paired comparisons of the variants (medattn.evidence.stats)."""
        out = super().tables(exp)
        spec = exp.config.get("compare")
        if spec and out.get("summary"):
            rows = comparisons(exp, spec)
            if rows:
                out["comparisons"] = rows
        return out


def comparisons(exp: ExperimentView, spec: dict[str, Any]) -> list[dict]:
    """Each variant against its reference on the test images they share, per metric (see medattn.evidence.stats): test
    metrics on the predictions of their split (``shifted.roc_auc``: test.splits), explanation-quality scores on
    the scores of each image (``saliency.energy_in_mask``); one correction over the whole table."""
    from ..evidence import stats
    from ..evidence.metric_specs import metric_spec

    checkpoint = spec["checkpoint"] or exp.config["test"]["checkpoints"][0]
    groups: dict[tuple[str, str], list[str]] = {}  # (source, split or method) -> metric names
    for name in spec["metrics"]:
        prefix, _, base = name.rpartition(".")
        groups.setdefault((metric_spec(base).source, prefix or "test"), []).append(name)
    attention = {v.variant: v.config["model"]["attention"]["name"] for v in exp.runs}
    manifests = {(v.variant, v.seed): v.dir.read_manifest() for v in exp.runs if v.dir.manifest.is_file()}
    context = {"attention": attention, "choices": {variant: m.get("choices") or {}
                                                   for (variant, _), m in manifests.items()}}
    test_sets = {key: (m.get("data") or {}).get("fingerprint") for key, m in manifests.items()}
    rows: list[dict] = []
    for (source, prefix), names in groups.items():
        bases = [n.rpartition(".")[2] for n in names]
        if source in ("quality", "shortcut"):  # per-image scores, paired image by image
            found = (_quality_scores(exp, prefix, bases) if source == "quality" else
                     _shortcut_scores(exp, checkpoint, bases))
            part = stats.compare_scores(found, spec["reference"], bases, **context) if len(
                {v for v, _ in found}) > 1 else []
        else:
            preds = {(v.variant, v.seed): stats.predictions_from_rows(v.dir.read_predictions(checkpoint, prefix),
                                                                      str(v.dir.root))
                     for v in exp.runs if v.dir.predictions(checkpoint, prefix).is_file()}
            if len({variant for variant, _ in preds}) < 2:
                continue
            part = stats.compare(preds, spec["reference"], bases, "none", test_sets=test_sets,
                                 resamples=int(spec["resamples"]), seed=int(exp.config["seed"]),
                                 mcnemar=spec.get("mcnemar", "exact"), **context)  # older configs lack it
        rename = dict(zip(bases, names))
        rows.extend({**row, "metric": rename[row["metric"]]} for row in part)
    order = {name: i for i, name in enumerate(spec["metrics"])}
    rows.sort(key=lambda r: order[r["metric"]])  # stable: variants keep their order within a metric
    for row, p in zip(rows, stats.adjust([row["p"] for row in rows], spec["correction"])):
        row["p_adjusted"] = float(p)
    return [{"checkpoint": checkpoint, **row} for row in rows]


def _quality_scores(exp: ExperimentView, method: str, metrics: list[str]) -> dict[tuple, dict[str, dict]]:
    """{(variant, seed): {metric: {image id: value}}} from each run's per-image explanation scores of ``method``."""
    out = {}
    for v in exp.runs:
        rows = [r for r in v.dir.read_quality_images() if r["method"] == method]
        if not rows:
            continue
        missing = [m for m in metrics if m not in rows[0]]
        if missing:
            raise UserError(f"compare.metrics: {method}.{missing[0]} has no per-image scores in {v.dir.quality_images}"
                            f" (per-image: {', '.join(k for k in rows[0] if k not in ('id', 'method'))})")
        out[(v.variant, v.seed)] = {m: {r["id"]: float(r[m]) for r in rows} for m in metrics}
    return out


def _shortcut_scores(exp: ExperimentView, checkpoint: str, metrics: list[str]) -> dict[tuple, dict[str, dict]]:
    """{(variant, seed): {metric: {image id: value}}} from each run's shortcut_<checkpoint>.csv."""
    out = {}
    for v in exp.runs:
        rows = v.dir.read_shortcut_images(checkpoint)
        if rows:
            out[(v.variant, v.seed)] = {m: {r["id"]: float(r[m]) for r in rows} for m in metrics}
    return out


def _evaluate(run, dist, name: str):
    """(test outputs, threshold, where the threshold came from) of one checkpoint on every rank."""
    from .. import distributed
    from ..evidence import metrics as M
    from ..train import engine as E

    cfg = run.config["test"]
    _, splits = run.data()
    settings = E.LoaderSettings(int(run.config["dataset"]["num_workers"]), **run.config["train"]["loader"])

    def outputs(model, split: str, desc: str):
        sampler = distributed.sampler(splits[split], dist, shuffle=False, seed=0)
        loader = E.make_loader(splits[split], int(cfg["batch_size"]), False, 0, dist.device, settings, sampler)
        return distributed.gather_outputs(E.collect(model, loader, dist.device, desc), sampler, dist)

    model = run.load_model(name).to(dist.device)
    te = outputs(model, "test", f"test {name}")
    extra = {}
    for split in cfg["splits"]:
        if split == "test":
            continue
        if split not in splits:
            raise UserError(f"test.splits: the data set has no split {split!r}; it has {', '.join(splits)}")
        extra[split] = outputs(model, split, f"{split} {name}")
    classes = list(model.class_names)
    if cfg["threshold_method"] == "fixed":
        return te, classes, float(cfg["threshold"]), "fixed", extra
    va = outputs(model, "val", f"val {name}")
    point = M.operating_point(va.labels, va.scores, cfg)  # the rule the model file froze, on the same split
    return te, classes, point["value"], point["source"], extra


def confound_reliance(model: Any, split: Any, device: Any, batch_size: int) -> dict[str, Any]:
    """Per test image: the probability of the true class with the confound and without it (the split's
    ``confound_pair``), and the reliance |difference|; None when the split cannot render the pair."""
    import numpy as np
    import torch

    base = getattr(split, "base", split)
    if not callable(getattr(base, "confound_pair", None)):
        return {}
    ids, labels, with_p, without_p = [], [], [], []
    model.eval()
    for start in range(0, len(split), batch_size):
        index = range(start, min(start + batch_size, len(split)))
        pairs = [split.confound_pair(i) for i in index]
        items = [base[i] for i in index]
        y = np.array([int(it["label"]) for it in items])
        with torch.no_grad():
            for images, out in ((torch.stack([p[0] for p in pairs]), with_p),
                                (torch.stack([p[1] for p in pairs]), without_p)):
                p = model.probabilities(model(images.to(device))).float().cpu().numpy()
                out.append(np.where(y == 1, p, 1 - p) if p.ndim == 1 else p[np.arange(len(y)), y])
        ids += [str(it["id"]) for it in items]
        labels += y.tolist()
    w, wo = np.concatenate(with_p), np.concatenate(without_p)
    return {"ids": ids, "labels": labels, "with": w, "without": wo, "reliance": np.abs(w - wo)}


def _write_reliance(run, name: str, metrics: dict, device: Any) -> dict:
    """``shortcut.reliance`` of the test split (when the data set renders each image with and without its
    confound) in test_<name>.json, and its per-image values in shortcut_<name>.csv (what compare pairs)."""
    _, splits = run.data()
    model = run.load_model(name).to(device)
    found = confound_reliance(model, splits["test"], device, int(run.config["test"]["batch_size"]))
    if not found:
        return metrics
    write_rows(run.dir.shortcut_images(name), ["id", "label", "p_with", "p_without", "reliance"],
               [[i, y, f"{a:.6f}", f"{b:.6f}", f"{r:.6f}"] for i, y, a, b, r in
                zip(found["ids"], found["labels"], found["with"], found["without"], found["reliance"])])
    metrics = {**metrics, "shortcut.reliance": float(found["reliance"].mean())}
    atomic_write_text(run.dir.test_metrics(name), json.dumps(metrics, indent=2, allow_nan=True))
    return metrics


def _write_splits(run, name: str, metrics: dict, extra: dict, classes: list[str], threshold: float) -> dict:
    """The metrics of every extra split of test.splits: ``S.metric`` keys (and their intervals under
    ``splits``) added to test_<name>.json, one predictions file per split."""
    from ..evidence import metrics as M

    metrics = dict(metrics)
    metrics.setdefault("splits", {})
    for split, out in extra.items():
        values = {"n_positive": int((out.labels == 1).sum()),
                  **M.classification_metrics(out.labels, out.scores, threshold)}
        metrics.update({f"{split}.{k}": v for k, v in values.items()})
        metrics["splits"][split] = {"loss": out.loss, **values, **_intervals(run, out, threshold)}
        _predictions(run, name, out, classes, threshold, split)
    atomic_write_text(run.dir.test_metrics(name), json.dumps(metrics, indent=2, allow_nan=True))
    return metrics


def _write(run, name: str, te, classes: list[str], threshold: float, source: str) -> dict:
    """metrics/test_<name>.json, predictions_<name>.csv and the ROC files of one checkpoint."""
    from ..evidence import metrics as M

    cfg = run.config["test"]
    labels, scores = te.labels, te.scores
    metrics = {"checkpoint": name, "loss": te.loss, "n_positive": int((labels == 1).sum()),
               **M.classification_metrics(labels, scores, threshold), "threshold": float(threshold)}
    if cfg["pad"]["enabled"]:
        metrics.update(_pad(run, name, labels, scores, threshold))
    method, fixed = cfg["threshold_method"], float(cfg["threshold"])
    metrics["operating_point"] = {"method": method, "threshold": float(threshold), "source": source,
                                  "fixed_threshold": fixed, "target": cfg["threshold_target"]}
    if method != "fixed":  # both recorded: the metrics at the fixed threshold too
        metrics["at_fixed_threshold"] = M.classification_metrics(labels, scores, fixed)
    metrics["confusion_matrix"] = {"labels": classes, "matrix": M.confusion(labels, scores, threshold)}
    metrics["per_class"] = M.per_class(labels, scores, classes, threshold)
    metrics["reliability"] = M.reliability(labels, scores, int(cfg["calibration_bins"]))
    metrics.update(_intervals(run, te, threshold))
    atomic_write_text(run.dir.test_metrics(name), json.dumps(metrics, indent=2, allow_nan=True))
    _predictions(run, name, te, classes, threshold)
    _roc(run, name, labels, scores)
    return metrics


def _pad(run, name: str, labels, scores, threshold: float) -> dict:
    """APCER, BPCER, ACER and TDR@FDR; the ROC points go to pad_roc_<name>.csv."""
    from ..evidence import metrics as M

    pm = M.pad_metrics(labels, scores, threshold, float(run.config["test"]["pad"]["fdr"]))
    roc = pm.pop("roc", None)
    if roc:
        write_rows(run.dir.pad_roc(name), ["fdr", "tdr", "threshold"],
                   zip(roc["fdr"], roc["tdr"], roc["thresholds"]))
    return pm


def _intervals(run, te, threshold: float) -> dict:
    """{"ci": ...}: percentile bootstrap intervals of the test metrics (by patient group when known)."""
    from ..evidence import metrics as M

    boot = run.config["test"]["bootstrap"]
    if int(boot["resamples"]) <= 0:
        return {}
    seed = int(boot["seed"]) if boot["seed"] is not None else int(run.config["seed"])
    groups = te.groups if boot["by_group"] else None
    confidence = float(boot["confidence"])
    return {"ci": {"confidence": confidence, "resamples": int(boot["resamples"]),
                   "unit": "group" if groups is not None else "image", "seed": seed,
                   **M.bootstrap_ci(te.labels, te.scores, threshold, int(boot["resamples"]), seed, groups,
                                    confidence)}}


def _predictions(run, name: str, te, classes: list[str], threshold: float, split: str = "test") -> None:
    """predictions_<name>.csv: id, (group), label, prediction and the scores of every image."""
    from ..evidence import metrics as M

    scores = te.scores
    preds = M.predictions(scores, threshold)
    columns = ["id", "label", "prediction"] + (["score"] if scores.ndim == 1 else
                                               [f"score_{c}" for c in classes])
    if te.groups is not None:
        columns.insert(1, "group")
    rows = []
    for i, (sid, y, p, s) in enumerate(zip(te.ids, te.labels, preds, scores)):
        vals = [f"{s:.6f}"] if scores.ndim == 1 else [f"{v:.6f}" for v in s]
        rows.append([sid, *([te.groups[i]] if te.groups is not None else []), int(y), int(p), *vals])
    write_rows(run.dir.predictions(name, split), columns, rows)


def _roc(run, name: str, labels, scores) -> None:
    """roc_<name>.csv of a binary task with both classes present."""
    import numpy as np

    from ..evidence import metrics as M

    positive = M.positive_scores(scores)
    if positive is None or len(np.unique(labels)) < 2:
        return
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(labels, positive)
    write_rows(run.dir.roc(name), ["fpr", "tpr", "threshold"],
               zip(fpr.tolist(), tpr.tolist(), [min(float(t), 1e300) for t in thr]))


def _log(run, name: str, metrics: dict, threshold: float, source: str) -> None:
    ci = metrics.get("ci", {})
    shown = " ".join(f"{k}={metrics[k]:.4f}" + (f" [{ci[k][0]:.3f}, {ci[k][1]:.3f}]" if k in ci else "")
                     for k in ("accuracy", "precision", "recall", "f1", "roc_auc") if k in metrics)
    run.log(f"   test {name} (threshold {threshold:.4g}, {source}): {shown}")
    for split, values in (metrics.get("splits") or {}).items():
        shown = " ".join(f"{k}={values[k]:.4f}" for k in ("accuracy", "roc_auc") if k in values)
        run.log(f"   {split} {name}: {shown}")
    if "shortcut.reliance" in metrics:
        run.log(f"   shortcut {name}: reliance={metrics['shortcut.reliance']:.4f}")
