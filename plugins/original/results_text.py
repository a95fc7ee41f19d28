"""The text results format of the original Gonçalves & Cardoso (2021) code, reproduced as figure kinds.

One block per backbone x weight split {tr, val} x train setting::

    Model Name: DenseNet121 | Weight Split: tr | Train Setting: baseline
    Accuracy: 0.66497... | Recall: 0.55737... | Precision: 0.60176... | F1-Score: 0.57872...


and a final ``Finished.`` line in the experiment-level file. The run-scope kind ``original_results`` writes
``metrics/original_results.txt``; the experiment-scope kind ``original_results_summary`` writes
``<experiment>/original_results.txt`` across every variant.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from medattn.api import ExperimentView, RunView, atomic_write_text

FILE = "original_results.txt"
PRETTY = {"densenet121": "DenseNet121", "resnet50": "ResNet50", "resnet18": "ResNet18", "vgg16": "VGG16"}
SPLITS = {"best_train_loss": "tr", "best_val_loss": "val"}
SETTING_ORDER = ("baseline", "baselinedaug", "mldam", "mldamdaug")


def model_name(config: dict) -> str:
    """DenseNet121 / ResNet50 / VGG16 as the original code spells them; other backbones by their own name."""
    name = str(config["model"]["backbone"]["name"])
    return PRETTY.get(name, name)


def setting(config: dict) -> str:
    """baseline | baselinedaug | mldam | mldamdaug (other attention modules by name, + ``daug``)."""
    attention = config["model"]["attention"]["name"]
    base = "baseline" if attention == "none" else ("mldam" if attention.startswith("mldam") else attention)
    augment = config["train"].get("augment") or {}
    augmented = isinstance(augment, dict) and augment.get("name", "none") != "none"
    return base + ("daug" if augmented else "")


def block(model: str, split: str, train_setting: str, metrics: dict[str, Any] | None) -> str:
    """One block; ``Error`` when the checkpoint's metrics are missing (as the original code prints)."""
    head = f"Model Name: {model} | Weight Split: {split} | Train Setting: {train_setting}\n"
    if metrics is None:
        return head + "Error\n\n\n"
    return head + (f"Accuracy: {metrics['accuracy']!r} | Recall: {metrics['recall']!r} | "
                   f"Precision: {metrics['precision']!r} | F1-Score: {metrics['f1']!r}\n\n\n")


def entries(view: RunView) -> list[tuple]:
    """(model, split, setting, metrics or None) of a run for the checkpoints of its test section."""
    checkpoints = list(view.config["test"]["checkpoints"])
    return [(model_name(view.config), SPLITS.get(name, name), setting(view.config), view.dir.read_test_metrics(name))
            for name in checkpoints]


def _order(items: list[tuple]) -> list[tuple]:
    models = list(dict.fromkeys(e[0] for e in items))
    split_rank = {"tr": 0, "val": 1}
    set_rank = {s: i for i, s in enumerate(SETTING_ORDER)}
    return sorted(items, key=lambda e: (models.index(e[0]), split_rank.get(e[1], 2), e[1],
                                        set_rank.get(e[2], len(SETTING_ORDER)), e[2]))


def render(items: list[tuple], finished: bool = False) -> str:
    """The text of a results file (backbone, then split tr/val, then setting, as the original orders them)."""
    return "".join(block(*e) for e in _order(items)) + ("Finished.\n" if finished else "")


def run_file(params: dict, view: RunView) -> list[Path]:
    """metrics/original_results.txt of one run (nothing before the test job has run)."""
    items = entries(view)
    if all(e[3] is None for e in items):
        return []
    path = view.dir.metrics_file(FILE)
    atomic_write_text(path, render(items))
    return [path]


def experiment_file(params: dict, view: ExperimentView) -> list[Path]:
    """<experiment>/original_results.txt over every run that has test metrics."""
    items = [e for run in view.runs for e in entries(run)]
    if all(e[3] is None for e in items):
        return []
    path = view.dir.file(FILE)
    atomic_write_text(path, render(items, finished=True))
    return [path]
