"""``medattn sweep`` with 1 worker against 2 workers on CPU: the same 12-trial sweep of a tiny demo variant
(synthetic lesions at 32 px, resnet18), timed end to end, each in a fresh output folder.

One worker may use every core (torch's threads); N workers get the cores divided between them. The trials of
a small model scale poorly over threads, so independent workers finish the study sooner.
Final line: ``trials_done=12 duplicates=0 workers2_vs_1=...`` (seconds with 1 worker / seconds with 2), with
trials_done and duplicates (params trained twice) counted over the 2-worker study.

    python bench/sweep_workers.py [--trials 12] [--epochs 2] [--n-train 64] [--workers 2]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXPERIMENT = """\
name: bench
seed: 7
device: cpu
dataset:
  name: synthetic_lesions
  image_size: 32
  params: {{n_train: {n_train}, n_val: 32, n_test: 16, difficulty: 0.7}}
model:
  backbone: {backbone}
  attention: {{name: none}}
train: {{epochs: {epochs}, batch_size: 16, progress: false, tensorboard: false}}
jobs: [train, test]
sweep:
  trials: {trials}
  params:
    train.optimizer.lr: {{type: float, low: 1.0e-4, high: 1.0e-2, log: true}}
  pruner: {{name: none}}
output_dir: {out}
"""


BACKBONES = {"resnet18": "{name: resnet18, params: {pretrained: false}}",
             "test_resnet": "{name: timm, params: {model_name: test_resnet, pretrained: false}}"}


def timed_sweep(file: Path, workers: int) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "medattn.cli", "sweep", str(file), "--workers", str(workers)], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def study_counts(out: Path) -> tuple[int, int]:
    """(finished trials, trained trials whose params repeat another trained trial's) of the bench study; a repeated
    draw that reused a finished trial's result (``medattn:repeat_of``) was not trained and is no duplicate."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(out / "bench" / "sweep" / "default.journal")))
    trials = optuna.load_study(study_name="bench/default", storage=storage).get_trials(deepcopy=False)
    done = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    trained = [tuple(sorted(t.params.items())) for t in done if "medattn:repeat_of" not in t.user_attrs]
    return len(done), len(trained) - len(set(trained))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--n-train", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--backbone", choices=sorted(BACKBONES), default="resnet18")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="medattn-sweep-bench-"))
    try:
        seconds = {}
        for workers in (1, args.workers):
            out = root / f"w{workers}"
            file = root / f"w{workers}.yaml"
            file.write_text(EXPERIMENT.format(backbone=BACKBONES[args.backbone], n_train=args.n_train, epochs=args.epochs, trials=args.trials, out=out))
            seconds[workers] = timed_sweep(file, workers)
            print(f"{workers} worker(s): {seconds[workers]:.1f} s for {args.trials} trials", flush=True)
        done, duplicates = study_counts(root / f"w{args.workers}")
        print(f"trials_done={done} duplicates={duplicates} "
              f"workers{args.workers}_vs_1={seconds[1] / seconds[args.workers]:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
