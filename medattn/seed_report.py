"""The seed study's text result format (REFERENCE §1.5, ``results/<ds>/<ds>_results.txt``).

One block per backbone x weight split {tr, val} x train setting::

    Model Name: DenseNet121 | Weight Split: tr | Train Setting: baseline
    Accuracy: 0.66497... | Recall: 0.55737... | Precision: 0.60176... | F1-Score: 0.57872...


and a final ``Finished.`` line in the experiment-level file. A run writes ``metrics/seed_results.txt``;
the experiment summary writes ``<experiment>/seed_results.txt`` across every variant.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PRETTY = {"densenet121": "DenseNet121", "resnet50": "ResNet50", "resnet18": "ResNet18", "vgg16": "VGG16"}
SPLITS = {"best_train_loss": "tr", "best_val_loss": "val"}
SETTING_ORDER = ("baseline", "baselinedaug", "mldam", "mldamdaug")


def model_name(config: dict) -> str:
    """DenseNet121 / ResNet50 / VGG16 as the seed spells them; other backbones by their own name."""
    name = str(config["model"]["backbone"]["name"])
    return PRETTY.get(name, name)


def setting(config: dict) -> str:
    """baseline | baselinedaug | mldam | mldamdaug (other attention modules by name, + ``daug``)."""
    attention = (config["model"].get("attention") or {}).get("name", "none")
    base = "baseline" if attention == "none" else ("mldam" if attention.startswith("mldam") else attention)
    augment = (config.get("train") or {}).get("augment") or {}
    augmented = isinstance(augment, dict) and augment.get("name", "none") != "none"
    return base + ("daug" if augmented else "")


def block(model: str, split: str, train_setting: str, metrics: dict[str, Any] | None) -> str:
    """One block; ``Error`` when the checkpoint's metrics are missing (as the seed prints)."""
    head = f"Model Name: {model} | Weight Split: {split} | Train Setting: {train_setting}\n"
    if metrics is None:
        return head + "Error\n\n\n"
    return head + (f"Accuracy: {metrics['accuracy']!r} | Recall: {metrics['recall']!r} | "
                   f"Precision: {metrics['precision']!r} | F1-Score: {metrics['f1']!r}\n\n\n")


def entries(run_dir: Path, config: dict, checkpoints: Iterable[str] | None = None) -> list[tuple]:
    """(model, split, setting, metrics or None) of a run, for the given checkpoints or every tested one."""
    metrics_dir = Path(run_dir) / "metrics"
    names = list(checkpoints) if checkpoints is not None else sorted(
        p.stem[len("test_"):] for p in metrics_dir.glob("test_*.json"))
    out = []
    for name in names:
        file = metrics_dir / f"test_{name}.json"
        metrics = json.loads(file.read_text()) if file.is_file() else None
        out.append((model_name(config), SPLITS.get(name, name), setting(config), metrics))
    return out


def _order(items: list[tuple]) -> list[tuple]:
    models = list(dict.fromkeys(e[0] for e in items))
    split_rank = {"tr": 0, "val": 1}
    set_rank = {s: i for i, s in enumerate(SETTING_ORDER)}
    return sorted(items, key=lambda e: (models.index(e[0]), split_rank.get(e[1], 2), e[1],
                                        set_rank.get(e[2], len(SETTING_ORDER)), e[2]))


def render(items: list[tuple], finished: bool = False) -> str:
    """The text of a results file (backbone, then split tr/val, then setting, as the seed orders them)."""
    return "".join(block(*e) for e in _order(items)) + ("Finished.\n" if finished else "")


def write_run(run_dir: Path, config: dict, checkpoints: Iterable[str] | None = None) -> Path:
    """metrics/seed_results.txt of one run."""
    path = Path(run_dir) / "metrics" / "seed_results.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(entries(run_dir, config, checkpoints)))
    return path


def write_experiment(out_dir: Path, runs: Iterable[Any]) -> Path | None:
    """<experiment>/seed_results.txt over every run that has test metrics (``runs``: Run objects)."""
    items = [e for run in runs for e in entries(run.dir, run.config)]
    if not items:
        return None
    path = Path(out_dir) / "seed_results.txt"
    path.write_text(render(items, finished=True))
    return path
