"""synthetic_lesions' shortcut marker and its shifted split; test.splits and the S.metric keys they give."""
from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
from medattn_plugins.datasets.synthetic_lesions import generate

from .conftest import TINY

# the images of these params before the shortcut existed (computed on the commit before it)
BEFORE = "c639b89fde4524d722f1946b86a0a27491756ef12264456c21de1fd3567bd9dc"


def test_without_a_shortcut_the_images_are_those_generated_before_it_existed():
    h = hashlib.sha256()
    for split in ("train", "test"):
        for i in range(4):
            img, mask, _ = generate(11, split, i, (40, 40), 0.7, 0.12, 1.0)
            h.update(img.tobytes())
            h.update(mask.tobytes())
    assert h.hexdigest() == BEFORE


def marker_present(split: str, shortcut: float, n: int = 160) -> tuple[np.ndarray, np.ndarray]:
    present, labels = [], []
    for i in range(n):
        with_marker, _, label = generate(5, split, i, (32, 32), 0.5, 0.12, 0.0, shortcut)
        plain, _, _ = generate(5, split, i, (32, 32), 0.5, 0.12, 0.0)
        diff = np.abs(with_marker - plain)
        assert diff[8:, :].max() == 0 and diff[:, 8:].max() == 0  # only the corner changes
        present.append(diff.max() > 0.1)
        labels.append(label)
    return np.array(present), np.array(labels)


def test_the_marker_agrees_with_the_label_in_the_given_share_and_not_in_the_shifted_split():
    present, labels = marker_present("train", 0.9)
    agree = float(np.mean(present == (labels == 1)))
    assert 0.82 < agree < 0.97
    present, labels = marker_present("shifted", 0.9)
    agree = float(np.mean(present == (labels == 1)))
    assert 0.35 < agree < 0.65
    assert 0.35 < present[labels == 1].mean() < 0.65 and 0.35 < present[labels == 0].mean() < 0.65


def test_test_splits_give_split_prefixed_metrics_in_the_summary(write, tmp_path, cli):
    text = TINY.replace("params: {n_train: 24, n_val: 8, n_test: 8}",
                        "params: {n_train: 24, n_val: 8, n_test: 8, shortcut: 0.9}")
    text = text.replace("test: {checkpoints: [best_val_loss]}",
                        "test: {checkpoints: [best_val_loss], splits: [test, shifted]}")
    text = text.replace("jobs: [train, test, explain, figure]", "jobs: [train, test]")
    exp = write("shortcut.yaml", text + f"output_dir: {tmp_path / 'runs'}\n")
    code, out, err = cli("run", exp)
    assert code == 0, err
    run = tmp_path / "runs" / "tiny" / "default" / "metrics"
    metrics = json.loads((run / "test_best_val_loss.json").read_text())
    assert 0 <= metrics["shifted.roc_auc"] <= 1 and metrics["splits"]["shifted"]["ci"]["roc_auc"]
    with open(run / "predictions_best_val_loss.shifted.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and all(r["id"].startswith("shifted-") for r in rows)
    with open(tmp_path / "runs" / "tiny" / "summary.csv") as f:
        assert "shifted.roc_auc" in next(csv.DictReader(f))


def test_a_split_the_data_set_does_not_have_is_refused_at_validate(write, cli):
    text = TINY.replace("test: {checkpoints: [best_val_loss]}",
                        "test: {checkpoints: [best_val_loss], splits: [test, shifted]}")
    code, _, err = cli("validate", write("noshift.yaml", text))
    assert code != 0 and "test.splits.1" in err and "'shifted'" in err and "Traceback" not in err
