"""Every figure kind is written, non-empty and not blank: from hand-made run directories (fast, figures read only
files through their view), and once end to end from a tiny two-variant experiment."""
from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import yaml
from medattn_plugins import figures

from medattn.api import ExperimentDir, ExperimentView, RunDir, RunView, write_csv
from medattn.jobs.explain import ExplainJob

from .conftest import TINY

COMPONENTS = {c.name: c for c in figures.medattn_components()}
RUN_KINDS = [n for n, c in COMPONENTS.items() if c.defaults.get("scope", "run") == "run"]
EXPERIMENT_KINDS = [n for n, c in COMPONENTS.items() if c.defaults.get("scope") == "experiment"]


def params(name: str, **over) -> dict:
    props = COMPONENTS[name].params_schema.get("properties", {})
    return {**{k: v["default"] for k, v in props.items() if "default" in v}, **over}


def draw(name: str, view, **over) -> list[Path]:
    module, _, attr = COMPONENTS[name].factory.partition(":")
    return getattr(importlib.import_module(module), attr)(params(name, **over), view) or []


def _not_blank(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 0, path
    if path.suffix == ".png":
        import matplotlib.image as mpimg

        assert np.asarray(mpimg.imread(path)).var() > 0, f"{path} is blank"


# --- hand-made run directories ---------------------------------------------------------------------------------
CONFIG = {"seed": 1, "figure": {"format": "png", "dpi": 40}, "model": {"backbone": {"name": "resnet18"}},
          "explain": {"methods": [{"name": "saliency"}, {"name": "attention_maps"}]}}


def _tested(rd: RunDir, rng: np.random.Generator) -> dict:
    """Predictions and test metrics of checkpoint best_val_loss (as the test job writes them)."""
    from medattn.evidence.metrics import classification_metrics, reliability

    labels = np.arange(40) % 2
    scores = np.clip(0.35 * labels + 0.3 + rng.normal(0, 0.2, 40), 0, 1)
    preds = (scores >= 0.5).astype(int)
    write_csv(rd.predictions("best_val_loss"), [
        {"id": f"im{i}", "label": int(y), "prediction": int(p), "score": f"{s:.6f}"}
        for i, (y, p, s) in enumerate(zip(labels, preds, scores))])
    metrics = {"checkpoint": "best_val_loss", **classification_metrics(labels, scores, 0.5),
               "confusion_matrix": {"labels": ["healthy", "lesion"], "matrix": [[1, 0], [0, 1]]},
               "reliability": reliability(labels, scores, 5)}
    rd.test_metrics("best_val_loss").write_text(json.dumps(metrics))
    return {k: v for k, v in metrics.items() if isinstance(v, float)}


def _explained(rd: RunDir, rng: np.random.Generator, attention: bool) -> None:
    """What the explain job writes: samples, two methods' maps, quality scores and curves, attention maps."""
    rd.explanations.mkdir(parents=True)
    masks = np.zeros((3, 1, 16, 16), dtype=np.float32)
    masks[:, :, 4:9, 4:9] = 1
    np.savez(rd.samples, index=np.array([4, 9, 2]), ids=np.array(["im4", "im9", "im2"]), labels=np.array([0, 1, 0]),
             preds=np.array([0, 1, 1]), scores=rng.random(3), images=rng.random((3, 1, 16, 16)).astype(np.float32),
             masks=masks)
    np.savez(rd.attributions("saliency"), attributions=rng.normal(size=(3, 1, 16, 16)).astype(np.float32))
    np.savez(rd.attributions("attention_maps"), attributions=rng.random((3, 1, 16, 16)).astype(np.float32))
    rd.quality.write_text(json.dumps({m: {"deletion_auc": float(rng.random()), "insertion_auc": float(rng.random())}
                                      for m in ("saliency", "attention_maps")}))
    np.savez(rd.quality_curves, **{f"{m}/{k}": rng.random((3, 5)) for m in ("saliency", "attention_maps")
                                   for k in ("deletion", "insertion")},
             **{f"{m}/fractions": np.linspace(0, 1, 5) for m in ("saliency", "attention_maps")})
    if attention:
        np.savez(rd.attention_raw, gate=rng.random((3, 1, 4, 4)), channel=rng.random((3, 8, 1, 1)))


def hand_made_run(exp: ExperimentDir, variant: str, seed: int, attention: bool) -> dict:
    rng = np.random.default_rng(seed)
    rd = exp.run(variant)
    rd.metrics.mkdir(parents=True)
    rd.config.write_text(yaml.safe_dump(CONFIG))
    rd.manifest.write_text(json.dumps({"experiment": exp.root.name, "variant": variant,
                                       "data": {"classes": ["healthy", "lesion"]}}))
    write_csv(rd.history, [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "train_accuracy": 0.5 + e / 10,
                            "val_accuracy": 0.45 + e / 10} for e in (1, 2, 3)])
    _explained(rd, rng, attention)
    return {"variant": variant, "checkpoint": "best_val_loss", **_tested(rd, rng)}


@pytest.fixture(scope="module")
def hand_made(tmp_path_factory) -> ExperimentView:
    exp = ExperimentDir(tmp_path_factory.mktemp("hand") / "tiny")
    summary = [hand_made_run(exp, "none", 0, False), hand_made_run(exp, "cbam", 1, True)]
    view = ExperimentView("tiny", exp, [RunView.from_dir(rd.root) for rd in exp.runs()], {}, CONFIG)
    return dataclasses.replace(view, tables={"summary": summary, **ExplainJob().tables(view)})


RUN_FILES = ["curves.png", "saliency_grid.png", "roc_best_val_loss.png", "pr_best_val_loss.png",
             "reliability_best_val_loss.png", "confusion_best_val_loss.png", "tdr_fdr_best_val_loss.png",
             "deletion_insertion.png"]


def test_every_run_figure_kind(hand_made):
    assert {view.variant for view in hand_made.runs} == {"none", "cbam"}
    for view in hand_made.runs:
        written = [p for kind in RUN_KINDS for p in draw(kind, view)]
        assert sorted(p.name for p in written) == sorted(RUN_FILES + (["attention.png"] if view.variant == "cbam"
                                                                      else []))
        for path in written:
            assert path.parent == view.dir.figures
            _not_blank(path)


def test_experiment_outputs(hand_made):
    for kind in EXPERIMENT_KINDS:
        if kind != "report":
            draw(kind, hand_made)
    draw("report", hand_made)  # drawn last: it gathers the others
    root = hand_made.dir
    for path in (root.figure("variants"), root.figure("saliency_grid_variants"), root.file("tables", "results.tex"),
                 root.file("tables", "quality.tex"), root.file("report.md"), root.file("report.html")):
        _not_blank(path)
    assert r"\toprule" in root.file("tables", "results.tex").read_text()
    report = root.file("report.md").read_text()
    assert "figures/variants.png" in report and "deletion_auc" in report and "saliency" in report
    assert "| cbam    | saliency" in report


def test_variants_figure_has_a_panel_per_score_and_no_text_under_a_legend(hand_made):
    from medattn_plugins.figures.experiment import variants_figure

    from medattn.evidence.metric_specs import metric_names

    two = [dict(r, checkpoint=c) for r in hand_made.tables["summary"] for c in ("best_val_loss", "last")]
    view = dataclasses.replace(hand_made, tables={**hand_made.tables, "summary": two})
    fig = variants_figure(view)
    fig.canvas.draw()
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    scores = ["deletion_auc\n(lower is better)", "insertion_auc\n(higher is better)"]  # what quality.json holds
    assert titles == [f"{m}\n(higher is better)" for m in metric_names(shown=True)] + scores
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [r.variant for r in view.runs]
    legends = {lg.get_title().get_text(): lg for lg in fig.legends}
    assert set(legends) == {"checkpoint (test metrics)", "method (quality)"}
    renderer = fig.canvas.get_renderer()
    texts = [t for ax in fig.axes if ax.get_visible() for t in (ax.title, ax.xaxis.label, *ax.get_xticklabels(),
                                                                 *ax.get_yticklabels()) if t.get_text()]
    boxes = [t.get_window_extent(renderer) for t in texts] + [ax.get_window_extent(renderer) for ax in fig.axes
                                                              if ax.get_visible()]
    for title, legend in legends.items():
        box = legend.get_window_extent(renderer)
        assert not any(box.overlaps(b) for b in boxes), f"the {title} legend covers a label or a panel"
    plt.close(fig)


def test_original_style_and_formats(hand_made):
    base = next(v for v in hand_made.runs if v.variant == "cbam")
    view = dataclasses.replace(base, config={**base.config, "figure": {"format": "svg", "dpi": 40}})
    paths = draw("saliency_grid", view, style="original", max_images=1)
    assert sorted(p.relative_to(view.dir.figures).as_posix() for p in paths) == [
        "attributes/img_4_attention_maps_cbam_label_0.svg", "attributes/img_4_original_0.svg",
        "attributes/img_4_saliency_cbam_label_0.svg"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_missing_inputs_give_no_figure(tmp_path):
    rd = RunDir(tmp_path / "e" / "v")
    run = RunView("e", "v", rd, {"figure": {"format": "png", "dpi": 50}, "explain": {"methods": []}})
    for kind in RUN_KINDS:
        assert draw(kind, run) == [], kind
    exp = ExperimentView("e", ExperimentDir(tmp_path / "e"), [run], {"summary": [], "quality": []}, run.config)
    for kind in EXPERIMENT_KINDS:
        assert draw(kind, exp) == [], kind
    assert not list(tmp_path.rglob("*.*"))
    assert COMPONENTS["report"].defaults["order"] > 0 and COMPONENTS["variants"].defaults["scope"] == "experiment"


def test_tdr_at_reads_the_roc():
    from medattn_plugins.figures.classification import tdr_at

    fdr = np.array([0.0, 0.001, 0.002, 0.01, 1.0])
    tdr = np.array([0.0, 0.5, 0.8, 0.9, 1.0])
    assert tdr_at(fdr, tdr, 0.002) == 0.8 and tdr_at(fdr, tdr, 0.0015) == 0.5


# --- end to end --------------------------------------------------------------------------------------------------
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


def test_the_figure_job_draws_every_kind(tmp_path, monkeypatch):
    """train, test, explain, figure on a tiny matrix; then ``--jobs figure`` alone redraws with no data set."""
    from medattn.cli import main

    text = (TINY.replace("explain: {methods: [{name: saliency}], samples: 2}\n", EXPLAIN)
            .replace("figure: {kinds: [curves, saliency_grid]}", "figure: {kinds: []}")
            + MATRIX + f"output_dir: {tmp_path / 'runs'}\n")
    file = tmp_path / "tiny.yaml"
    file.write_text(text)
    assert main(["run", str(file)]) == 0
    exp = ExperimentDir(tmp_path / "runs" / "tiny")
    for variant in ("none", "timm_attn"):
        for name in RUN_FILES:
            _not_blank(exp.run(variant).figures / name)
    _not_blank(exp.run("timm_attn").figure("attention"))
    assert not exp.run("none").figure("attention").exists()  # no attention, no figure
    for path in (exp.figure("variants"), exp.figure("saliency_grid_variants"), exp.table("quality"),
                 exp.file("report.html")):
        _not_blank(path)
    assert "deletion_auc" in exp.table("quality").read_text()
    exp.run("none").figure("curves").unlink()
    from medattn.runs.state import Run

    def no_data(self):
        raise AssertionError("the figure job built the data set")

    monkeypatch.setattr(Run, "data", no_data)
    assert main(["run", str(file), "--jobs", "figure", "--force", "figure"]) == 0  # figure was done: forced
    _not_blank(exp.run("none").figure("curves"))
