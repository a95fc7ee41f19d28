"""Every figure kind is written, non-empty and not blank, from one tiny two-variant experiment."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from .conftest import TINY

MATRIX = """\
matrix:
  model.attention:
    - {name: none}
    - {name: timm_attn, params: {type: cbam}}
"""
EXPLAIN = """\
explain:
  methods: [{name: saliency}, {name: attention_maps}]
  samples: 2
  quality: {steps: 4}
"""


def _not_blank(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 0, path
    if path.suffix == ".png":
        import matplotlib.image as mpimg

        assert np.asarray(mpimg.imread(path)).var() > 0, f"{path} is blank"


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    from medattn.cli import main

    tmp = tmp_path_factory.mktemp("figs")
    text = (TINY.replace("explain: {methods: [{name: saliency}], samples: 2}\n", EXPLAIN)
            .replace("figure: {kinds: [curves, saliency_grid]}", "figure: {kinds: []}")
            + MATRIX + f"output_dir: {tmp / 'runs'}\n")
    file = tmp / "tiny.yaml"
    file.write_text(text)
    assert main(["run", str(file)]) == 0
    return tmp / "runs" / "tiny"


RUN_FILES = ["curves.png", "saliency_grid.png", "roc_best_val_loss.png", "pr_best_val_loss.png",
             "reliability_best_val_loss.png", "confusion_best_val_loss.png", "tdr_fdr_best_val_loss.png",
             "deletion_insertion.png"]


def test_every_run_figure_kind(experiment):
    for variant in ("none", "timm_attn"):
        for name in RUN_FILES:
            _not_blank(experiment / variant / "figures" / name)
    _not_blank(experiment / "timm_attn" / "figures" / "attention.png")
    assert not (experiment / "none" / "figures" / "attention.png").exists()  # no attention, no figure


def test_experiment_outputs(experiment):
    for name in ("figures/variants.png", "figures/saliency_grid_variants.png", "summary.csv", "summary.md",
                 "quality.csv", "seed_results.txt", "tables/results.tex", "tables/quality.tex",
                 "report.md", "report.html"):
        _not_blank(experiment / name)
    seed = (experiment / "seed_results.txt").read_text()
    assert seed.startswith("Model Name: ResNet18 | Weight Split: val | Train Setting: baseline\nAccuracy: ")
    assert seed.endswith("\n\n\nFinished.\n")
    assert r"\toprule" in (experiment / "tables" / "results.tex").read_text()
    report = (experiment / "report.md").read_text()
    assert "figures/variants.png" in report and "none/figures/roc_best_val_loss.png" in report
    assert "saliency" in report and "deletion_auc" in (experiment / "quality.csv").read_text()


def test_seed_style_and_formats(experiment, tmp_path):
    from medattn_plugins.figures import saliency_grid

    from medattn.config import load_experiment
    from medattn.runner import plan

    exp = load_experiment(experiment.parent.parent / "tiny.yaml", ["figure.format=svg"])
    run = next(r for r, _ in plan(exp) if r.variant == "timm_attn")
    params = {"style": "seed", "outlier_perc": 2, "sign": "all", "max_images": 1}
    paths = saliency_grid.draw(params, run)
    names = sorted(Path(p).name for p in paths)
    idx = int(np.load(run.dir / "explanations" / "samples.npz")["index"][0])
    label = int(np.load(run.dir / "explanations" / "samples.npz")["labels"][0])
    assert names == sorted([f"img_{idx}_original_{label}.svg", f"img_{idx}_saliency_timm_attn_label_{label}.svg",
                            f"img_{idx}_attention_maps_timm_attn_label_{label}.svg"])
    assert all(Path(p).stat().st_size > 1000 for p in paths)


def test_missing_inputs_give_no_figure(tmp_path):
    from medattn_plugins import figures
    from medattn_plugins.figures import (
        classification,
        experiment,
        explanations,
        saliency_grid,
        training_curves,
    )

    from medattn.runner import ExperimentSummary

    class Empty:
        dir, experiment, variant = tmp_path, "e", "v"
        config = {"figure": {"format": "png", "dpi": 50}, "explain": {"methods": []}}

        def class_names(self):
            return ["a", "b"]

    run = Empty()
    comps = {c.name: c for c in figures.medattn_components()}
    p = {"n_boot": 10, "seed": 0, "bins": 5, "fdr_percent": 0.2, "max_images": 2, "style": "grid",
         "outlier_perc": 2, "sign": "all"}
    for fn in (training_curves.draw, saliency_grid.draw, classification.roc, classification.pr,
               classification.reliability, classification.confusion, classification.tdr_fdr,
               explanations.deletion_insertion, explanations.attention):
        assert fn(p, run) == []
    summary = ExperimentSummary(tmp_path, [run], [], [], run.config)
    for fn in (saliency_grid.draw_variants, experiment.results_table, experiment.variants):
        assert fn(p, summary) == []
    assert not list(tmp_path.rglob("*.png"))
    assert comps["report"].defaults["order"] > 0 and comps["variants"].defaults["scope"] == "experiment"


def test_tdr_at_reads_the_roc():
    from medattn_plugins.figures.classification import tdr_at

    fdr = np.array([0.0, 0.001, 0.002, 0.01, 1.0])
    tdr = np.array([0.0, 0.5, 0.8, 0.9, 1.0])
    assert tdr_at(fdr, tdr, 0.002) == 0.8 and tdr_at(fdr, tdr, 0.0015) == 0.5
