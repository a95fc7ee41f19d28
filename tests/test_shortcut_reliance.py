"""Shortcut reliance measured image by image: the test job's shortcut.reliance (each test image with and without
its confound), the explanation share inside the confound mask (energy_in_confound), and compare pairing both
across variants and seeds."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

from medattn.evidence.explanation_quality import confound_per_image
from medattn.jobs.test import confound_reliance

from .conftest import TINY

SHORTCUT = "shortcut: {agree: 1.0, strength: 0.6, splits: {flipped: 0.0, nomarker: null}}"


class Pair(torch.utils.data.Dataset):
    """Two images whose confound (pixel 0) is 1 or 0; the rest of the image is 0."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> dict:
        return {"image": torch.zeros(1, 2, 2), "label": i, "id": f"p{i}"}

    def confound_pair(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        on = torch.zeros(1, 2, 2)
        on[0, 0, 0] = 1.0
        return on, torch.zeros(1, 2, 2)


class Looker(nn.Module):
    """A one-logit model that reads pixel 0 only: logit = 4 * pixel0 - 2."""

    output = "sigmoid"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 4 * x[:, 0, 0, :1] - 2

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.reshape(-1))


def test_reliance_is_how_far_the_confound_moves_the_true_class_probability():
    found = confound_reliance(Looker(), Pair(), torch.device("cpu"), 8)
    high, low = 1 / (1 + np.exp(-2)), 1 / (1 + np.exp(2))
    assert found["ids"] == ["p0", "p1"]
    np.testing.assert_allclose(found["with"], [1 - high, high], rtol=1e-6)  # label 0, then label 1
    np.testing.assert_allclose(found["without"], [1 - low, low], rtol=1e-6)
    np.testing.assert_allclose(found["reliance"], [high - low] * 2, rtol=1e-6)


def test_energy_in_confound_is_the_relevance_share_in_the_confound_mask():
    relevance = np.zeros((3, 4, 4))
    relevance[:, 0, 0], relevance[:, 3, 3] = 3.0, -1.0
    masks = np.zeros((3, 1, 4, 4))
    masks[:2, :, :2, :2] = 1
    got = confound_per_image(relevance, masks)
    np.testing.assert_allclose(got["energy_in_confound"][:2], [0.75, 0.75])
    np.testing.assert_allclose(got["confound_area"][:2], [0.25, 0.25])
    assert np.isnan(got["energy_in_confound"][2])  # an empty confound mask tells nothing


@pytest.fixture(scope="module")
def shortcut_experiment(tmp_path_factory):
    """Two variants x two seeds on the marker data set, tested on test, flipped and nomarker, explained."""
    from medattn.config import load_experiment
    from medattn.runs.runner import run_experiment

    root = tmp_path_factory.mktemp("reliance")
    text = TINY.replace("seed: 3\n", "seeds: [0, 1]\n").replace(
        "params: {n_train: 24, n_val: 8, n_test: 8}",
        "seed: 7\n  params: {n_train: 24, n_val: 8, n_test: 8, " + SHORTCUT + "}")
    text = text.replace("test: {checkpoints: [best_val_loss]}",
                        "test: {checkpoints: [best_val_loss], splits: [test, flipped, nomarker], "
                        "bootstrap: {resamples: 0}}")
    text = text.replace("explain: {methods: [{name: saliency}], samples: 2}",
                        "explain: {methods: [{name: saliency}], samples: 8, quality: {scores: [localisation]}}")
    text = text.replace("jobs: [train, test, explain, figure]", "jobs: [train, test, explain]")
    text += ("matrix:\n  lr: {plain: {train.optimizer.lr: 1.0e-3}, fast: {train.optimizer.lr: 1.0e-2}}\n"
             "compare: {metrics: [flipped.roc_auc, shortcut.reliance, saliency.energy_in_confound], "
             "reference: plain}\n" f"output_dir: {root / 'runs'}\n")
    path = root / "reliance.yaml"
    path.write_text(text)
    exp = load_experiment(path)
    run_experiment(exp, log=lambda *_: None)
    return root / "runs" / "tiny", [v.name for v in exp.variants]


def test_the_test_job_reports_reliance_and_compare_pairs_it_image_by_image(shortcut_experiment):
    folder, variants = shortcut_experiment
    run = folder / variants[0] / "seed-0"
    metrics = json.loads((run / "metrics" / "test_best_val_loss.json").read_text())
    assert 0 <= metrics["shortcut.reliance"] <= 1 and "flipped.roc_auc" in metrics and "nomarker.roc_auc" in metrics
    with open(run / "metrics" / "shortcut_best_val_loss.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and all(r["id"].startswith("test-") for r in rows)
    assert np.mean([float(r["reliance"]) for r in rows]) == pytest.approx(metrics["shortcut.reliance"], abs=1e-5)
    with open(run / "explanations" / "quality_images.csv") as f:
        scores = list(csv.DictReader(f))
    assert len(scores) == 8 and all(0 <= float(r["energy_in_confound"]) <= 1 for r in scores)
    with open(folder / "comparisons.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["metric"] for r in table] == ["flipped.roc_auc", "shortcut.reliance", "saliency.energy_in_confound"]
    for row in table:
        assert row["n_seeds"] == "2" and row["n_images"] == "8" and row["p_adjusted"] != ""
    assert table[1]["test"] == table[2]["test"] == "OR-Hillis (image covariance)"
