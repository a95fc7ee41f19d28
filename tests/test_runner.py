"""The runner end to end on a few tiny synthetic images, and the run-directory rules."""
from __future__ import annotations

import json

import yaml

from medattn.config import load_experiment
from medattn.runs.runner import run_experiment

QUIET = {"log": lambda *_: None}


def test_end_to_end_then_explain_and_figure_reuse_checkpoints(tiny, tmp_path, cli):
    code, out, err = cli("run", tiny)
    assert code == 0, err
    run = tmp_path / "runs" / "tiny" / "default"
    for rel in ("config.yaml", "manifest.json", "checkpoints/last.pt", "checkpoints/best_val_loss.pt",
                "metrics/history.csv", "metrics/test_best_val_loss.json", "metrics/predictions_best_val_loss.csv",
                "explanations/samples.npz", "explanations/saliency.npz", "figures/curves.png",
                "figures/saliency_grid.png"):
        assert (run / rel).is_file(), rel
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["device"] == "cpu" and manifest["versions"]["torch"]
    assert manifest["data"]["sizes"] == {"train": 24, "val": 8, "test": 8} and manifest["data"]["fingerprint"]
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == 1
    metrics = json.loads((run / "metrics/test_best_val_loss.json").read_text())
    assert metrics["n"] == 8 and 0 <= metrics["accuracy"] <= 1
    assert "| variant" in out and "default" in out  # the summary table
    assert (tmp_path / "runs" / "tiny" / "summary.csv").is_file()

    ckpt = run / "checkpoints" / "best_val_loss.pt"
    before = ckpt.stat().st_mtime_ns
    (run / "figures" / "curves.png").unlink()
    samples = (run / "explanations" / "samples.npz").stat().st_mtime_ns
    code, _, err = cli("run", tiny, "--jobs", "explain,figure", "--force", "figure")
    assert code == 0, err
    assert ckpt.stat().st_mtime_ns == before  # no retraining
    assert (run / "explanations" / "samples.npz").stat().st_mtime_ns == samples  # explain was done: skipped
    assert (run / "figures" / "curves.png").is_file()


def test_finished_training_is_not_repeated(tiny):
    exp = load_experiment(tiny, ["jobs=[train]"])
    run_experiment(exp, **QUIET)
    lines = []
    run_experiment(load_experiment(tiny, ["jobs=[train]"]), log=lines.append)
    assert any("complete (train done for this config); skipped" in line for line in lines)
    lines = []
    run_experiment(load_experiment(tiny, ["jobs=[train]"]), log=lines.append, force=["train"])
    assert any("already trained" in line for line in lines)


def test_run_dir_of_a_different_experiment_is_refused(tiny, cli):
    assert cli("run", tiny, "--set", "jobs=[train]")[0] == 0
    code, _, err = cli("run", tiny, "--set", "train.optimizer.lr=0.01", "--set", "jobs=[train]")
    assert code == 2
    assert "holds a different run (train.optimizer.lr: was 0.001, now 0.01)" in err
    assert "Traceback" not in err
    # changing only what is not part of the model's identity is allowed
    assert cli("run", tiny, "--set", "explain.samples=1", "--set", "jobs=[train]")[0] == 0


def test_unavailable_device_is_refused_before_any_work(tiny, tmp_path, cli):
    code, _, err = cli("run", tiny, "--device", "cuda:3")
    assert code == 2 and "device 'cuda:3' is not available" in err
    assert not (tmp_path / "runs").exists()


def test_missing_checkpoint_for_test_job_is_clear(tiny, cli):
    code, _, err = cli("run", tiny, "--jobs", "test")
    assert code == 2 and "the test job needs" in err and "best_val_loss.pt" in err and "run the train job first" in err


def test_matrix_runs_each_variant_and_summarises(tiny, tmp_path):
    exp = load_experiment(tiny, ["jobs=[train, test]", "matrix={model.attention.name: [none, timm_attn]}"])
    rows = run_experiment(exp, **QUIET)
    assert [r["variant"] for r in rows] == ["none", "timm_attn"]
    summary = (tmp_path / "runs" / "tiny" / "summary.md").read_text()
    assert "timm_attn" in summary and "accuracy" in summary


def test_new_model_is_the_same_whether_or_not_the_data_backbone_is_reused(tiny):
    import torch

    from medattn.runs.plan import plan

    exp = load_experiment(tiny, ["model.attention={name: timm_attn, params: {type: se}}"])
    first_run, _ = plan(exp)[0]
    reused, fresh = first_run.new_model(), first_run.new_model()  # the first reuses the data step's backbone
    other_run, _ = plan(exp)[0]
    again = other_run.new_model()
    for a, b, c in zip(reused.state_dict().values(), fresh.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_explain_without_methods_is_refused_before_any_work(tiny, tmp_path, cli):
    code, _, err = cli("run", tiny, "--set", "explain={samples: 2}")
    assert code == 2 and "explain.methods: the explain job needs at least one explainer" in err
    assert not (tmp_path / "runs").exists()
    code, _, err = cli("run", tiny, "--set", "explain.methods=[]")
    assert code == 2 and "explain.methods: [] should be non-empty" in err


def test_decoded_images_are_cached_beside_the_runs(write, tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        for i in range(6):
            (tmp_path / "imgs" / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    file = write("folder.yaml", f"""\
        name: folder
        device: cpu
        output_dir: {tmp_path / 'runs'}
        dataset: {{name: image_folder, image_size: 16, params: {{root: {tmp_path / 'imgs'}, cache: true}}}}
        model: {{backbone: resnet18}}
        train: {{epochs: 1, batch_size: 4}}
        jobs: [train]
        """)
    run_experiment(load_experiment(file), **QUIET)
    assert list((tmp_path / "runs" / ".cache" / "decoded").rglob("*.npy"))


def test_a_new_explain_leaves_no_maps_of_the_previous_one(tiny, tmp_path, cli):
    both = "explain.methods=[{name: saliency}, {name: input_x_gradient}]"
    assert cli("run", tiny, "--set", "jobs=[train, explain]", "--set", both)[0] == 0
    explanations = tmp_path / "runs" / "tiny" / "default" / "explanations"
    assert (explanations / "input_x_gradient.npz").is_file()
    assert cli("run", tiny, "--jobs", "explain")[0] == 0  # the file's own methods: saliency only
    assert (explanations / "saliency.npz").is_file() and not (explanations / "input_x_gradient.npz").exists()
