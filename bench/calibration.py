"""Calibration and conformal sets on a deliberately overconfident model: resnet18 from scratch, trained long on a
small synthetic_lesions training set at 64 px (no augmentation), so that its probabilities run far ahead of its
accuracy. The test job is run with ``test.calibration: temperature`` and class-conditional conformal sets on
the ``last`` checkpoint (the most overfitted one).

- ``ece_reduction``: 1 - ECE(after) / ECE(before) on the test split (15 equal-width bins, torchmetrics);
- ``auc_change``: ROC AUC after temperature scaling minus before, on the test split (must be 0);
- ``coverage_error``: |mean coverage - 0.9| over 1,000 random calibration / test halves of the validation and test
  images' calibrated probabilities (split conformal, LAC, alpha = 0.1);
- ``class_coverage_min``: the lowest class's mean coverage over the same 1,000 splits, class-conditional sets.

Targets (issue 23): ``ece_reduction>=0.30 auc_change==0 coverage_error<=0.005 class_coverage_min>=0.89``.
Final line: ``ece_reduction=... auc_change=... coverage_error=... class_coverage_min=... ece_before=...
ece_after=... temperature=... seconds=...``.

    python bench/calibration.py [--epochs 40] [--n-train 200] [--n-eval 300] [--output-dir DIR]
    MEDATTN_REPRODUCIBLE=1 python bench/calibration.py     (the same digits on any x86-64 CPU with AVX2)
"""
from __future__ import annotations  # noqa: I001 (medattn before numpy, below)

import argparse
import json
import tempfile
import time
from pathlib import Path

import medattn  # noqa: F401 (first: MEDATTN_REPRODUCIBLE=1 must act before numpy and torch load)
import numpy as np


def experiment(args: argparse.Namespace, output_dir: Path) -> dict:
    return {
        "name": "bench_calibration", "seed": 11, "device": "cpu", "output_dir": str(output_dir),
        "dataset": {"name": "synthetic_lesions", "image_size": 64, "seed": 3,
                    "params": {"n_train": args.n_train, "n_val": args.n_eval, "n_test": args.n_eval,
                               "difficulty": 0.7}},
        "model": {"backbone": {"name": "resnet18", "params": {"pretrained": False}}, "attention": {"name": "none"}},
        "train": {"epochs": args.epochs, "batch_size": 32, "progress": False, "augment": "none",
                  "optimizer": {"name": "adam", "lr": 1.0e-3}},
        "test": {"checkpoints": ["last"], "calibration": "temperature", "bootstrap": {"resamples": 200},
                 "conformal": {"alpha": 0.1, "score": "lac", "class_conditional": True}},
        "jobs": ["train", "test"],
    }


def held_out_probabilities(exp, run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated class probabilities (float64, from the logits) and labels of the validation and test images."""
    from medattn.evidence import calibration as C
    from medattn.runs.state import Run
    from medattn.store.rundir import RunDir
    from medattn.train import engine as E

    rd = RunDir(run_dir)
    run = Run(exp.name, "default", rd.read_config(), rd, exp.registry, "cpu", writes=False, log=lambda *_: None)
    _, splits = run.data()
    model = run.load_model("last")
    cal = model.meta["calibration"]
    probs, labels = [], []
    for split in ("val", "test"):
        loader = E.make_loader(splits[split], 64, False, 0, run.device, E.LoaderSettings(0, False, False, 2))
        out = E.collect(model, loader, run.device, split, progress=False)
        p = C.probabilities(C.apply(cal, out.logits), cal["output"])
        probs.append(np.stack([1 - p, p], axis=1) if p.ndim == 1 else p)
        labels.append(out.labels)
    return np.concatenate(probs), np.concatenate(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--n-eval", type=int, default=300, help="validation and test images each")
    parser.add_argument("--output-dir", type=Path, default=None)
    args = parser.parse_args()

    import yaml

    from medattn.config import load_experiment
    from medattn.evidence import conformal
    from medattn.inference.notebook import run_experiment_file

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.output_dir or Path(tmp)
        config = experiment(args, out)
        done = run_experiment_file(config, log=lambda *_: None)
        run = done.runs[0]
        metrics = json.loads(run.test_metrics("last").read_text())
        block = metrics["calibration"]
        before, after = block["before"]["ece15"], block["after"]["ece15"]
        file = out / "bench_calibration.yaml"
        file.write_text(yaml.safe_dump(config))
        probs, labels = held_out_probabilities(load_experiment(file), run.root)
    marginal = conformal.random_split_coverage(probs, labels, 0.1, "lac", class_conditional=False, splits=1000,
                                               seed=0)
    mondrian = conformal.random_split_coverage(probs, labels, 0.1, "lac", class_conditional=True, splits=1000,
                                               seed=0)
    seconds = time.perf_counter() - t0
    print(f"test split: accuracy {metrics['accuracy']:.3f}, roc_auc {metrics['roc_auc']:.4f}; "
          f"ece15 {before:.4f} -> {after:.4f}, nll {block['before']['nll']:.4f} -> {block['after']['nll']:.4f}, "
          f"temperature {block['fitted']['temperature']:.3f}; test-job coverage {metrics['coverage']:.3f}, "
          f"mean set size {metrics['set_size']:.2f}")
    print(f"ece_reduction={1 - after / before:.3f} auc_change={block['auc_change']:.3g} "
          f"coverage_error={marginal['coverage_error']:.4f} class_coverage_min={mondrian['class_coverage_min']:.3f} "
          f"ece_before={before:.4f} ece_after={after:.4f} temperature={block['fitted']['temperature']:.3f} "
          f"seconds={seconds:.0f}")


if __name__ == "__main__":
    main()
