"""The test job: each chosen checkpoint on the test split.

Writes, per checkpoint: ``metrics/test_<ckpt>.json`` (top-level numbers: the summary table; nested: the
confidence intervals, per-class values, confusion matrix, reliability diagram, operating point),
``metrics/predictions_<ckpt>.csv`` (one row per image) and ``metrics/roc_<ckpt>.csv`` (binary tasks). A threshold chosen on the validation split (Youden's J
or a target sensitivity / specificity) is frozen and applied to the test split; the metrics at the fixed
threshold are kept beside them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
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
        "calibration": {"enum": ["none", "temperature", "vector"], "default": "none",
                        "description": "recalibrate the probabilities, fitted on the validation split by minimising "
                                       "the NLL and kept in every model file (predict, load_run and export apply it): "
                                       "temperature (one T; the ranking stays) or vector (a weight and bias per "
                                       "class; Platt scaling for one output)"},
        "conformal": {
            "type": ["object", "null"], "additionalProperties": False, "default": None,
            "description": "split-conformal prediction sets (null: none); the thresholds go into the model file and "
                           "predict writes each image's set",
            "properties": {
                "alpha": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "default": 0.1,
                          "description": "miscoverage: each set holds the true class of at least 1 - alpha of the "
                                         "images"},
                "score": {"enum": ["lac", "aps"], "default": "lac",
                          "description": "lac: 1 - p(class); aps: the probability mass down to the class"},
                "class_conditional": {"type": "boolean", "default": True,
                                      "description": "one threshold per class (Mondrian), so a rare class is "
                                                     "covered too; needs 1/alpha - 1 calibration images per class"},
                "split": {"type": "string", "default": "val",
                          "description": "the calibration split: val, or a split the data set gives for it "
                                         "(calibration: one the data set carves by patient when its params ask, "
                                         "which training, model selection and temperature scaling never see); "
                                         "never test"},
            },
        },
        "tta": {"enum": ["none", "flips", "d4"], "default": "none",
                "description": "test-time augmentation for the per-image uncertainty: flips (identity, horizontal, "
                               "vertical, both) or d4 (those and the 90-degree turns and transposes: square images "
                               "only), the views stacked into the batch, probabilities averaged"},
        "mc_dropout": {
            "type": ["object", "null"], "additionalProperties": False, "default": None,
            "description": "Monte Carlo dropout for the per-image uncertainty (null: off; the model needs dropout)",
            "properties": {"samples": {"type": "integer", "minimum": 2, "default": 10,
                                       "description": "forward passes with dropout on"}},
        },
        "triage": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                   "default": [0.05, 0.1, 0.2],
                   "description": "shares of the most uncertain test images sent to a reader in the triage table"},
        "operating_points": {
            "type": "object", "additionalProperties": False, "default": {},
            "description": "binary tasks: sensitivity at a fixed specificity and the reverse, with CIs (null: skip)",
            "properties": {
                "specificity": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1, "default": 0.889,
                                "description": "report the sensitivity at this specificity (screening benchmark)"},
                "sensitivity": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1, "default": 0.869,
                                "description": "report the specificity at this sensitivity (screening benchmark)"},
            },
        },
        "subgroups": {"type": "array", "uniqueItems": True, "items": {"type": "string", "minLength": 1},
                      "default": [],
                      "description": "metadata columns of the test images (the data set's metadata(): e.g. a CSV "
                                     "list's other columns) to report every metric per group, with bootstrap CIs, the "
                                     "worst group and the largest gap (metrics/subgroups_<ckpt>.csv)"},
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
        """Every split of test.splits is one the data set gives; the conformal split is one too, not the test
        split, and large enough for its alpha; every column of test.subgroups is one the test images carry."""
        from ..evidence import held_out
        from ..train.engine import split_metadata

        out = [(("test", "splits", i), f"the data set has no split {s!r}; it has {', '.join(splits)}")
               for i, s in enumerate(config["test"]["splits"]) if s not in splits]
        if config["test"]["subgroups"] and "test" in splits:
            have = sorted({c for row in split_metadata(splits["test"]).values() for c in row})
            out += [(("test", "subgroups", i), f"the test images carry no column {c!r} (they carry: "
                                               f"{', '.join(have) or 'no metadata'})")
                    for i, c in enumerate(config["test"]["subgroups"]) if c not in have]
        spec = held_out.conformal_settings(config["test"])
        if spec is not None:
            problem = _conformal_split_problem(spec, splits, bundle.class_names)
            if problem:
                out.append((("test", "conformal", "split"), _unprefixed(problem)))
        return out

    def check_model(self, config: dict[str, Any], model: Any) -> list[tuple[tuple, str]]:
        """test.tta fits the input shape, and test.mc_dropout has dropout to sample."""
        from ..components.model import image_size

        try:
            check_sampling(config["test"], model, image_size(config))
        except UserError as exc:
            key = "tta" if str(exc).startswith("test.tta") else "mc_dropout"
            return [(("test", key), _unprefixed(str(exc)))]
        return []

    def run(self, run) -> None:
        from .. import distributed

        cfg = run.config["test"]
        dist = distributed.setup(run.device)
        for name in cfg["checkpoints"]:
            ev = _evaluate(run, dist, name)
            if dist.main:
                if ev.refitted:
                    _update_model_file(run, name, ev)
                metrics = _write(run, name, ev)
                if ev.extra:
                    metrics = _write_splits(run, name, metrics, ev)
                metrics = _write_reliance(run, name, metrics, dist.device)
                _log(run, name, metrics, ev.threshold, ev.source)

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
    from ..evidence.metric_specs import metric_spec, metric_subgroup

    checkpoint = spec["checkpoint"] or exp.config["test"]["checkpoints"][0]
    groups: dict[tuple[str, str], list[str]] = {}  # (source, split, method or column=value) -> metric names
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
            group = metric_subgroup(names[0])  # the names of one prefix share it
            split = "test" if group else prefix
            preds = {(v.variant, v.seed): stats.predictions_from_rows(
                _group_rows(v, checkpoint, group, names[0]) if group else
                v.dir.read_predictions(checkpoint, split), str(v.dir.root))
                for v in exp.runs if v.dir.predictions(checkpoint, split).is_file()}
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


def _group_rows(view: RunView, checkpoint: str, group: tuple[str, str], name: str) -> list[dict[str, str]]:
    """The rows of a run's test predictions whose ``subgroup_<column>`` is ``value`` (``group``: (column, value) of
    the metric ``name``), for one group's difference between variants; a clear error when the predictions lack
    the column or the group."""
    column, value = group
    path = view.dir.predictions(checkpoint, "test")
    rows = view.dir.read_predictions(checkpoint, "test")
    key = SUBGROUP_PREFIX + column
    if rows and key not in rows[0]:
        raise UserError(f"compare.metrics: {name}: {path} has no {key} column (its test job ran without "
                        f"{column} in test.subgroups); run the test job again: medattn run FILE --jobs test "
                        "--force test")
    mine = [r for r in rows if r[key] == value]
    if not mine:
        found = sorted({r[key] for r in rows})
        raise UserError(f"compare.metrics: {name}: no test image of {path} has {column} = {value!r} (its groups: "
                        f"{', '.join(map(repr, found[:12]))}{', ...' if len(found) > 12 else ''})")
    return mine


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


def _unprefixed(message: str) -> str:
    """A message without its leading ``test.field:`` (validation prints the field with the file and line)."""
    head, sep, rest = message.partition(": ")
    return rest if sep and head.startswith("test.") and " " not in head else message


@dataclass
class Evaluation:
    """One checkpoint on the test split (and the extra splits): the outputs, the scores the metrics use
    (calibrated when test.calibration asks), the threshold and the model file's calibration and conformal
    predictor (``refitted``: fitted anew here, for a config that changed after training)."""

    test: Any  # engine.Outputs
    classes: list[str]
    threshold: float
    source: str
    scores: Any
    extra: dict[str, Any] = field(default_factory=dict)  # split -> Outputs
    extra_scores: dict[str, Any] = field(default_factory=dict)
    calibration: dict | None = None
    conformal: dict | None = None
    threshold_rule: dict | None = None
    refitted: bool = False
    sampled: dict | None = None  # test.tta / test.mc_dropout: mean scores and per-image entropy, spread, ...
    metadata: list[dict] | None = None  # each test image's metadata columns (test.subgroups)


def _conformal_split_problem(spec: dict[str, Any], splits: dict[str, Any], class_names: list[str]) -> str | None:
    """Why the conformal calibration split cannot be used (absent, the test split, too small), or None."""
    from ..evidence import conformal
    from ..train.engine import split_labels

    split = spec["split"]
    if split == "test":
        return "test.conformal.split: the test split cannot calibrate the sets it is tested on; use val or another split"
    if split not in splits:
        return (f"test.conformal.split: the data set has no split {split!r}; it has {', '.join(splits)} (a data set "
                "may carve one when a param asks: see its params in docs/datasets.md)")
    try:
        conformal.check_counts(split_labels(splits[split]), len(class_names), spec["alpha"],
                               spec["class_conditional"], split, class_names)
    except UserError as exc:
        return str(exc)
    return None


def _evaluate(run, dist, name: str) -> Evaluation:
    """The test outputs of one checkpoint on every rank, with its threshold, calibration and conformal sets."""
    from .. import distributed
    from ..evidence import held_out
    from ..evidence import metrics as M
    from ..train import engine as E

    cfg = run.config["test"]
    _, splits = run.data()
    settings = E.LoaderSettings(int(run.config["dataset"]["num_workers"]), **run.config["train"]["loader"])

    def outputs(model, split: str, desc: str):
        sampler = distributed.sampler(splits[split], dist, shuffle=False, seed=0)
        loader = E.make_loader(splits[split], int(cfg["batch_size"]), False, 0, dist.device, settings, sampler)
        return distributed.gather_outputs(E.collect(model, loader, dist.device, desc), sampler, dist)

    spec = held_out.conformal_settings(cfg)
    model = run.load_model(name).to(dist.device)
    classes = list(model.class_names)
    if spec is not None:
        problem = _conformal_split_problem(spec, splits, classes)
        if problem:
            raise UserError(problem)
    te = outputs(model, "test", f"test {name}")
    extra = {}
    for split in cfg["splits"]:
        if split == "test":
            continue
        if split not in splits:
            raise UserError(f"test.splits: the data set has no split {split!r}; it has {', '.join(splits)}")
        extra[split] = outputs(model, split, f"{split} {name}")
    meta = getattr(model, "meta", {}) or {}
    refit = not held_out.matches(meta, cfg)
    cal, conf = (meta.get("calibration"), meta.get("conformal")) if not refit else (None, None)
    va = None
    if refit or cfg["threshold_method"] != "fixed":
        va = outputs(model, "val", f"val {name}")
    if refit:
        side = None
        if spec is not None and spec["split"] != "val":
            out = outputs(model, spec["split"], f"{spec['split']} {name}")
            side = (out.labels, out.logits, out.scores)
        fitted = held_out.fit(va.labels, va.logits, va.scores, cfg, classes, side)
        cal, conf = fitted["calibration"], fitted["conformal"]
    scores = held_out.scores(cal, te.logits, te.scores)
    extra_scores = {s: held_out.scores(cal, out.logits, out.scores) for s, out in extra.items()}
    if refit:  # fitted together with the calibration
        point = fitted["threshold"]
    else:  # the rule the model file froze, on the same split (calibrated scores when calibrated); fixed needs none
        point = M.operating_point(None, None, cfg) if va is None else \
            M.operating_point(va.labels, held_out.scores(cal, va.logits, va.scores), cfg)
    sampled = _sampled(run, dist, model, splits["test"], cal) if dist.main else None
    metadata = None
    if cfg["subgroups"]:
        found = E.split_metadata(splits["test"])
        metadata = [found.get(i, {}) for i in te.ids]
    return Evaluation(te, classes, point["value"], point["source"], scores, extra, extra_scores, cal, conf, point,
                      refit, sampled, metadata)


def check_sampling(cfg: dict[str, Any], model: Any, image_size: tuple[int, int]) -> tuple[tuple[str, ...], int]:
    """(views of test.tta, MC-dropout samples or 0), checked against the model (one clear error)."""
    from ..evidence import uncertainty as U

    names = U.check_tta(cfg["tta"], image_size)
    samples = int((cfg.get("mc_dropout") or {}).get("samples", 10)) if cfg.get("mc_dropout") else 0
    if samples:
        U.check_mc_dropout(model)
    return names, samples


def _sampled(run, dist, model, dataset, cal: dict | None) -> dict | None:
    """Mean scores over the views of test.tta and the samples of test.mc_dropout, and each image's entropy, spread
    and mutual information (None when neither is asked for)."""
    import numpy as np

    from ..components.model import image_size
    from ..evidence import uncertainty as U
    from ..train import engine as E

    cfg = run.config["test"]
    names, samples = check_sampling(cfg, model, image_size(run.config))
    if len(names) == 1 and not samples:
        return None
    settings = E.LoaderSettings(int(run.config["dataset"]["num_workers"]), **run.config["train"]["loader"])
    loader = E.make_loader(dataset, int(cfg["batch_size"]), False, 0, dist.device, settings)
    output = getattr(model, "output", "softmax")
    model.eval()
    parts = [U.sampled_summary(model, batch["image"].to(dist.device), names, samples, cal, output,
                               chunk=int(cfg["batch_size"])) for batch in loader]
    summary = {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
    mean = summary["mean"]
    return {"scores": mean[:, 1] if output == "sigmoid" else mean, "views": list(names), "samples": samples,
            **{k: summary[k] for k in ("entropy", "spread", "mutual_information")}}


def _update_model_file(run, name: str, ev: Evaluation) -> None:
    """The tested model file's meta gets the calibration, threshold and conformal predictor fitted for the
    current test section (the weights and everything else stay; an atomic rewrite)."""
    from ..evidence import calibration
    from ..store import checkpoints

    path = run.dir.checkpoint(name)
    data = checkpoints.load(path)
    data["meta"] = {**data["meta"], "calibration": ev.calibration, "conformal": ev.conformal,
                    "threshold": ev.threshold_rule}
    checkpoints.save(data, path)
    run.log(f"   {name}: calibration {calibration.describe(ev.calibration)}"
            + (f", conformal sets (alpha {ev.conformal['alpha']:g}, {ev.conformal['score']})" if ev.conformal else "")
            + f" fitted for this test section; kept in {path.name}")


def renders_confound(split: Any) -> bool:
    """Whether a (prepared) split renders each image with and without its confound (``confound_pair``)."""
    return callable(getattr(getattr(split, "base", split), "confound_pair", None))


def confound_reliance(model: Any, split: Any, device: Any, batch_size: int) -> dict[str, Any]:
    """Per test image: the probability of the true class with the confound and without it (the split's
    ``confound_pair``), and the reliance |difference|; None when the split cannot render the pair."""
    import numpy as np
    import torch

    if not renders_confound(split):
        return {}
    base = getattr(split, "base", split)
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
    if not renders_confound(splits["test"]):  # no model to load
        return metrics
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


def _write_splits(run, name: str, metrics: dict, ev: Evaluation) -> dict:
    """The metrics of every extra split of test.splits: ``S.metric`` keys (and their intervals under
    ``splits``) added to test_<name>.json, one predictions file per split."""
    from ..evidence import metrics as M

    metrics = dict(metrics)
    metrics.setdefault("splits", {})
    threshold = ev.threshold
    for split, out in ev.extra.items():
        scores = ev.extra_scores[split]
        values = {"n_positive": int((out.labels == 1).sum()),
                  **M.classification_metrics(out.labels, scores, threshold)}
        metrics.update({f"{split}.{k}": v for k, v in values.items()})
        metrics["splits"][split] = {"loss": out.loss, **values, **_intervals(run, out, threshold, scores)}
        _predictions(run, name, out, ev.classes, threshold, split, scores, _sets(ev, scores))
    atomic_write_text(run.dir.test_metrics(name), json.dumps(metrics, indent=2, allow_nan=True))
    return metrics


def _write(run, name: str, ev: Evaluation) -> dict:
    """metrics/test_<name>.json, predictions_<name>.csv and the ROC files of one checkpoint."""
    from ..evidence import metrics as M

    cfg = run.config["test"]
    te, classes, threshold, source = ev.test, ev.classes, ev.threshold, ev.source
    labels, scores = te.labels, ev.scores
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
    metrics.update(_intervals(run, te, threshold, scores))
    _calibration(run, metrics, ev)
    _uncertainty(run, name, metrics, ev)
    _decision(run, metrics, ev)
    _subgroups(run, name, metrics, ev)
    sets = _sets(ev, scores)
    if sets is not None:
        _conformal(run, metrics, ev, sets)
    atomic_write_text(run.dir.test_metrics(name), json.dumps(metrics, indent=2, allow_nan=True))
    _predictions(run, name, te, classes, threshold, "test", scores, sets, ev.sampled, ev.metadata)
    _roc(run, name, labels, scores)
    return metrics


def _uncertainty(run, name: str, metrics: dict, ev: Evaluation) -> None:
    """Risk-coverage and AURC of the model's predictions ranked by its top probability and, with test.tta or
    test.mc_dropout, by the predictive entropy of the averaged views and samples; the triage table (also as
    metrics/triage_<ckpt>.csv)."""
    import numpy as np

    from ..evidence import metrics as M
    from ..evidence import uncertainty as U

    labels = ev.test.labels
    if not len(labels):
        return
    predicted = M.predictions(ev.scores, ev.threshold)
    correct = predicted == labels
    plain = 1.0 - M.class_probabilities(np.asarray(ev.scores, dtype=float)).max(axis=1)
    ranked = ev.sampled["entropy"] if ev.sampled else plain
    boot = _bootstrap_settings(run)
    groups = resampled_units(run, ev.test)
    block: dict[str, Any] = {"uncertainty": "entropy of the mean over " + (
        f"{len(ev.sampled['views'])} view(s) x {max(1, ev.sampled['samples'])} sample(s)" if ev.sampled else
        "one forward (1 - top probability ranks alike for two classes)")}
    base = U.risk_coverage(correct, plain)
    curves = {"aurc": base if ranked is plain else U.risk_coverage(correct, ranked), "aurc_max_probability": base}
    for key, curve in curves.items():
        metrics[key] = block[key] = curve["aurc"]
        block[f"risk_coverage_{key}"] = {"coverage": curve["coverage"], "risk": curve["risk"]}
    if boot["resamples"] > 0 and len(labels) > 1:
        def aurcs(w: np.ndarray) -> dict[str, np.ndarray]:
            plain_w = U.weighted_aurc(correct, plain, w)
            return {"aurc": plain_w if ranked is plain else U.weighted_aurc(correct, ranked, w),
                    "aurc_max_probability": plain_w}

        metrics.setdefault("ci", {}).update(M.percentile_intervals(
            len(labels), groups, boot["resamples"], boot["seed"], boot["confidence"], aurcs))
    if ev.sampled:
        block["averaged"] = M.classification_metrics(labels, ev.sampled["scores"], ev.threshold)
    rows = U.triage(labels, predicted, ranked, tuple(run.config["test"]["triage"]))
    block["triage"] = rows
    metrics["uncertainty"] = block
    write_rows(run.dir.triage(name), list(rows[0]),
               [[_cell(r[c]) for c in rows[0]] for r in rows])


def _subgroups(run, name: str, metrics: dict, ev: Evaluation) -> None:
    """metrics/subgroups_<ckpt>.csv (one row per column, group and metric, with CIs) and the worst group and
    largest gap of every metric in test_<ckpt>.json."""
    from ..evidence import subgroups

    columns = run.config["test"]["subgroups"]
    if not columns or ev.metadata is None:
        return
    boot = _bootstrap_settings(run)
    patients = resampled_units(run, ev.test)
    table = subgroups.subgroup_table(ev.test.labels, ev.scores, ev.metadata, columns, threshold=ev.threshold,
                                     resamples=boot["resamples"], seed=boot["seed"],
                                     confidence=boot["confidence"], patients=patients)
    write_rows(run.dir.subgroups(name), list(subgroups.COLUMNS),
               [[_cell(r[c]) for c in subgroups.COLUMNS] for r in table["rows"]])
    metrics["subgroups"] = {"columns": list(columns), "worst": table["worst"], "gaps": table["gaps"],
                            "file": run.dir.subgroups(name).name, "resamples": boot["resamples"],
                            "unit": "group" if patients is not None else "image"}


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _decision(run, metrics: dict, ev: Evaluation) -> None:
    """Binary tasks: sensitivity at the specificity of test.operating_points and the reverse (with CIs), and the
    decision curve's net benefit against treating all and none."""
    import numpy as np

    from ..evidence import decision as D
    from ..evidence import metrics as M

    pos = M.positive_scores(np.asarray(ev.scores, dtype=float))
    labels = ev.test.labels
    if pos is None or len(np.unique(labels)) < 2:
        return
    cfg = run.config["test"]["operating_points"]
    boot = _bootstrap_settings(run)
    groups = resampled_units(run, ev.test)
    points = D.operating_points(labels, pos, cfg.get("sensitivity"), cfg.get("specificity"),
                                resamples=boot["resamples"], seed=boot["seed"], groups=groups,
                                confidence=boot["confidence"])
    for key in ("sensitivity_at_specificity", "specificity_at_sensitivity"):
        if key in points:
            metrics[key] = points[key]
    metrics.setdefault("ci", {}).update(points.get("ci", {}))
    metrics["decision"] = {**points, "curve": D.decision_curve(labels, pos)}


def resampled_units(run, split) -> Any:
    """What the bootstrap draws: the split's patient groups when ``test.bootstrap.by_group`` (whole patients),
    else None (single images)."""
    return split.groups if run.config["test"]["bootstrap"]["by_group"] else None


def _bootstrap_settings(run) -> dict[str, Any]:
    boot = run.config["test"]["bootstrap"]
    return {"resamples": int(boot["resamples"]), "confidence": float(boot["confidence"]),
            "seed": int(boot["seed"]) if boot["seed"] is not None else int(run.config["seed"])}


def _calibration(run, metrics: dict, ev: Evaluation) -> None:
    """The calibration block (before / after with intervals, AUC change, reliability) and its top-level numbers
    (the calibrated values, or the model's own without calibration)."""
    from ..evidence import calibration as C
    from ..evidence import held_out

    te, cal = ev.test, ev.calibration
    if te.logits is None or not len(te.labels):
        return
    output = held_out.output_of(te.logits)
    boot = _bootstrap_settings(run)
    groups = resampled_units(run, te)
    raw = C.probabilities(te.logits, output)
    odds = None
    if cal is not None and C.log_odds(te.logits, output) is not None:
        odds = (C.log_odds(te.logits, output), C.log_odds(C.apply(cal, te.logits), output))
    block = C.report(te.labels, raw, ev.scores if cal is not None else None, resamples=boot["resamples"],
                     seed=boot["seed"], groups=groups, confidence=boot["confidence"], log_odds=odds)
    key = "after" if cal is not None else "before"
    metrics.update({k: v for k, v in block[key].items() if k != "brier"})  # brier: the classification metric's
    if "auc_change" in block:
        metrics["auc_change"] = block["auc_change"]
    metrics.setdefault("ci", {}).update({k: v for k, v in block.get(f"ci_{key}", {}).items() if k != "brier"})
    metrics["calibration"] = {"method": cal["method"] if cal else "none", "fitted": cal, **block}


def _sets(ev: Evaluation, scores) -> Any:
    """(N, K) conformal prediction sets of the scores, or None without test.conformal."""
    import numpy as np

    from ..evidence import conformal
    from ..evidence import metrics as M

    if ev.conformal is None:
        return None
    return conformal.predict_sets(M.class_probabilities(np.asarray(scores, dtype=float)), ev.conformal)


def _conformal(run, metrics: dict, ev: Evaluation, sets) -> None:
    """Coverage overall and per class and the set sizes, with intervals; coverage, class_coverage_min and
    set_size at the top."""
    from ..evidence import conformal

    boot = _bootstrap_settings(run)
    groups = resampled_units(run, ev.test)
    rep = conformal.coverage_report(ev.test.labels, sets, ev.classes, resamples=boot["resamples"], seed=boot["seed"],
                                    groups=groups, confidence=boot["confidence"])
    for key in ("coverage", "class_coverage_min", "set_size"):
        metrics[key] = rep[key]
    metrics.setdefault("ci", {}).update(rep.get("ci", {}))
    metrics["conformal"] = {**{k: ev.conformal[k] for k in ("alpha", "score", "class_conditional", "split",
                                                            "thresholds")},
                            "n_calibration": ev.conformal.get("n"),  # model files record it; "n" is the test's
                            "target_coverage": 1 - ev.conformal["alpha"], **rep}


def _pad(run, name: str, labels, scores, threshold: float) -> dict:
    """APCER, BPCER, ACER and TDR@FDR; the ROC points go to pad_roc_<name>.csv."""
    from ..evidence import metrics as M

    pm = M.pad_metrics(labels, scores, threshold, float(run.config["test"]["pad"]["fdr"]))
    roc = pm.pop("roc", None)
    if roc:
        write_rows(run.dir.pad_roc(name), ["fdr", "tdr", "threshold"],
                   zip(roc["fdr"], roc["tdr"], roc["thresholds"]))
    return pm


def _intervals(run, te, threshold: float, scores=None) -> dict:
    """{"ci": ...}: percentile bootstrap intervals of the test metrics (by patient group when known)."""
    from ..evidence import metrics as M

    boot = _bootstrap_settings(run)
    if boot["resamples"] <= 0:
        return {}
    groups = resampled_units(run, te)
    return {"ci": {"confidence": boot["confidence"], "resamples": boot["resamples"],
                   "unit": "group" if groups is not None else "image", "seed": boot["seed"],
                   **M.bootstrap_ci(te.labels, te.scores if scores is None else scores, threshold,
                                    boot["resamples"], boot["seed"], groups, boot["confidence"])}}


SUBGROUP_PREFIX = "subgroup_"  # the predictions CSV's column of each test.subgroups column


def _predictions(run, name: str, te, classes: list[str], threshold: float, split: str = "test", scores=None,
                 sets=None, sampled: dict | None = None, metadata: list[dict] | None = None) -> None:
    """predictions_<name>.csv: id, (group), label, prediction and the scores of every image (calibrated when
    test.calibration asks), its conformal set (class names joined by |) with test.conformal, the uncertainty of
    test.tta / test.mc_dropout, and a ``subgroup_<column>`` column per test.subgroups column (what ``compare``
    reads for one group's difference between variants)."""
    from ..evidence import conformal
    from ..evidence import metrics as M

    scores = te.scores if scores is None else scores
    preds = M.predictions(scores, threshold)
    columns = ["id", "label", "prediction"] + (["score"] if scores.ndim == 1 else
                                               [f"score_{c}" for c in classes])
    if te.groups is not None:
        columns.insert(1, "group")
    names = conformal.set_names(sets, classes) if sets is not None else None
    if names is not None:
        columns.append("set")
    spread = ("entropy", "spread", "mutual_information") if sampled else ()
    columns.extend(spread)
    fields = list(run.config["test"]["subgroups"]) if metadata is not None else []
    columns.extend(SUBGROUP_PREFIX + c for c in fields)
    rows = []
    for i, (sid, y, p, s) in enumerate(zip(te.ids, te.labels, preds, scores)):
        vals = [f"{s:.6f}"] if scores.ndim == 1 else [f"{v:.6f}" for v in s]
        rows.append([sid, *([te.groups[i]] if te.groups is not None else []), int(y), int(p), *vals,
                     *([names[i]] if names is not None else []), *(f"{sampled[k][i]:.6f}" for k in spread),
                     *(str(metadata[i].get(c, "")) for c in fields)])
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
    cal = metrics.get("calibration") or {}
    if cal.get("after"):
        run.log(f"   calibration ({cal['method']}): ece15 {cal['before']['ece15']:.4f} -> {cal['after']['ece15']:.4f}, "
                f"nll {cal['before']['nll']:.4f} -> {cal['after']['nll']:.4f}"
                + (f", roc_auc change {cal['auc_change']:+.2g}" if "auc_change" in cal else ""))
    conf = metrics.get("conformal")
    if conf:
        run.log(f"   conformal sets (alpha {conf['alpha']:g}, {conf['score']}"
                f"{', per class' if conf['class_conditional'] else ''}): coverage {conf['coverage']:.3f} "
                f"(lowest class {conf['class_coverage_min']:.3f}), mean set size {conf['set_size']:.2f}")
    for split, values in (metrics.get("splits") or {}).items():
        shown = " ".join(f"{k}={values[k]:.4f}" for k in ("accuracy", "roc_auc") if k in values)
        run.log(f"   {split} {name}: {shown}")
    if "shortcut.reliance" in metrics:
        run.log(f"   shortcut {name}: reliance={metrics['shortcut.reliance']:.4f}")
