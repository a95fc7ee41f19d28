"""The run directory's owner, run identity, prerequisites checked before any work, and `validate`."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from medattn.store.rundir import ExperimentDir, RunDir


def test_rundir_paths_and_readers(tmp_path):
    rd = RunDir(tmp_path / "exp" / "v")
    assert rd.checkpoint("best_val_loss").name == "best_val_loss.pt"
    assert rd.predictions("last").parent == rd.metrics and rd.quality.parent == rd.explanations
    assert rd.checkpoint_names() == [] and rd.tested_checkpoints() == [] and rd.attribution_labels() == []
    rd.explanations.mkdir(parents=True)
    for stem in ("samples", "saliency", "quality_curves"):
        np.savez(rd.explanations / f"{stem}.npz", a=np.zeros(1))
    assert rd.attribution_labels() == ["saliency"]
    assert ExperimentDir(tmp_path / "exp").run("v", 2).root == tmp_path / "exp" / "v" / "seed-2"
    from medattn.errors import UserError

    with pytest.raises(UserError, match="not found"):
        rd.read_manifest()


def test_explain_without_checkpoint_is_refused_before_any_work(tiny, cli, tmp_path):
    code, out, err = cli("run", tiny, "--jobs", "explain,figure")
    assert code == 2
    assert "run the train job first" in err and "best_val_loss.pt" in err
    assert not (tmp_path / "runs" / "tiny" / "default" / "config.yaml").exists()  # nothing written


def test_a_run_dir_without_checkpoints_is_replaced(write, cli, tmp_path, tiny):
    text = tiny.read_text()
    other = write("other.yaml", text.replace("seed: 3", "seed: 4").replace("jobs: [train, test, explain, figure]",
                                                                          "jobs: [train]"))
    run = tmp_path / "runs" / "tiny" / "default"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("name: tiny\nseed: 99\n")  # a run that failed before training
    code, out, err = cli("run", other)
    assert code == 0, err
    assert "replacing it" in out and (run / "checkpoints" / "last.pt").is_file()
    code, out, err = cli("run", tiny, "--jobs", "train")  # now it has checkpoints: another seed is refused
    assert code == 2 and "different run" in err and "seed: was 4, now 3" in err


def _folder(root, classes=("a", "b"), n=6, size=16):
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(d / f"{c}{i}.png")
    return root


FOLDER = """\
name: folder
seed: 1
device: cpu
output_dir: {out}
dataset: {{name: image_folder, image_size: 32, params: {{root: {root}}}}}
model:
  backbone: {{name: resnet18, params: {{pretrained: false}}}}
  attention: {{name: none}}
train: {{epochs: 1, batch_size: 4}}
test: {{checkpoints: [last], bootstrap: {{resamples: 0}}}}
jobs: [train, test]
"""


def test_moved_data_with_the_same_fingerprint_is_the_same_run(write, cli, tmp_path):
    root = _folder(tmp_path / "data")
    exp = write("f.yaml", FOLDER.format(out=tmp_path / "runs", root=root))
    assert cli("run", exp)[0] == 0
    moved = root.rename(tmp_path / "elsewhere")
    code, out, err = cli("run", exp, "--set", f"dataset.params.root={moved}", "--jobs", "test")
    assert code == 0, err
    assert "replacing" not in out and "different run" not in err


def test_validate_prints_classes_and_counts_and_writes_nothing(write, cli, tmp_path):
    root = _folder(tmp_path / "data")
    exp = write("f.yaml", FOLDER.format(out=tmp_path / "runs", root=root))
    code, out, err = cli("validate", exp)
    assert code == 0, err
    assert "classes a, b" in out and "train 12 (a 6, b 6)" in out
    assert not (tmp_path / "runs").exists()


def test_validate_single_class_and_root_one_level_too_high(write, cli, tmp_path):
    one = _folder(tmp_path / "one", classes=("a",))
    exp = write("one.yaml", FOLDER.format(out=tmp_path / "runs", root=one))
    code, out, err = cli("validate", exp)
    assert code == 2 and "at least 2" in err and "one.yaml:5" in err
    high = tmp_path / "high"
    _folder(high / "train" / "xrays")  # high/train/xrays/{train,val,test}/{a,b}
    for split in ("val", "test"):
        _folder(high / split / "xrays")
    exp = write("high.yaml", FOLDER.format(out=tmp_path / "runs", root=high))
    code, out, err = cli("validate", exp)
    assert code == 2 and "holds only folders" in err and "root is one level too high" in err


def test_cli_version_bare_overrides_and_print_config(tiny, cli, capsys):
    import medattn

    with pytest.raises(SystemExit) as exc:
        cli("--version")
    assert exc.value.code == 0 and f"medattn {medattn.__version__}" in capsys.readouterr().out
    code, out, err = cli("run", tiny, "train.epochs=2", "--print-config")
    assert code == 0, err
    assert "# tiny/default" in out and "epochs: 2" in out and "weight_decay: 0.0" in out  # defaults filled in


def test_summary_names_no_job_but_collects_tables(tiny, cli, tmp_path):
    code, out, err = cli("run", tiny, "--set", "jobs=[train,test]")
    assert code == 0, err
    exp = ExperimentDir(tmp_path / "runs" / "tiny")
    rows = exp.read_table("summary")
    assert rows and rows[0]["variant"] == "default" and rows[0]["checkpoint"] == "best_val_loss"
    manifest = json.loads((exp.run("default").manifest).read_text())
    assert manifest["data"]["classes"] and manifest["data"]["fingerprint"]


def test_bad_inputs_refused_before_any_work(tiny, cli, write, tmp_path):
    code, _, err = cli("run", tiny, "--jobs", ",")
    assert code == 2 and "--jobs" in err and "name at least one job" in err
    code, _, err = cli("validate", tiny, "--set", "dataset.image_size=40000")
    assert code == 2 and "dataset.image_size" in err and "Traceback" not in err
    code, _, err = cli("validate", tiny, "--set", "compare={reference: nosuch}")
    assert code == 2 and "compare.reference: 'nosuch' is not a variant" in err
    assert not (tmp_path / "runs").exists()


def test_pil_float_images_read_as_files_are(tmp_path):
    from PIL import Image

    from medattn.image_io import decode, read_image

    im = Image.fromarray(np.linspace(0.5, 1.0, 64, dtype=np.float32).reshape(8, 8), mode="F")
    im.save(tmp_path / "f.tif")
    assert np.allclose(decode(im), read_image(tmp_path / "f.tif")) and decode(im).min() == 0.0



def test_predict_and_export_refuse_a_folder_as_output_before_any_work(cli, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    code, _, err = cli("predict", tmp_path / "no_run", "x.png", "--output", folder)
    assert code == 2 and "is a folder" in err
    code, _, err = cli("export", tmp_path / "no_run", "--format", "onnx", "--output", folder)
    assert code == 2 and "is a folder" in err


def test_the_layout_names_every_path_a_run_dir_gives(monkeypatch):
    """RunDir.layout() holds each fixed path and calls every method that returns a path, so that a new file of a run
    cannot miss the layout (and docs/run-directory.md, which tests/test_docs.py checks against it)."""
    import inspect
    from pathlib import Path

    methods = [name for name, f in vars(RunDir).items()
               if inspect.isfunction(f) and not name.startswith("_") and inspect.signature(f).return_annotation in ("Path", Path)]
    assert {"checkpoint", "predictions", "attributions", "figure"} <= set(methods)
    called = set()
    for name in methods:
        original = getattr(RunDir, name)
        monkeypatch.setattr(RunDir, name, lambda self, *a, _f=original, _n=name, **k: called.add(_n) or _f(self, *a, **k))
    layout = RunDir.layout()
    assert called == set(methods), f"RunDir.layout() does not call {sorted(set(methods) - called)}"
    rd = RunDir("")
    for path in (rd.config, rd.quality_images, rd.last, rd.lock_holder):
        assert path.as_posix() in layout
    assert {"metrics/", "plugins/", "tensorboard/", "metrics/predictions_<ckpt>.csv",
            "metrics/predictions_<ckpt>.<split>.csv", "explanations/<method>.npz"} <= set(layout)
    files = [p for p in layout if not p.endswith("/")]
    assert not [p for p in files if any(q.startswith(p + "/") for q in layout)], "a folder is declared with _at"


def test_a_dataset_param_added_at_its_default_keeps_the_run():
    """A run directory written before a release added a dataset param (off by default) is still the same run; the
    param set to anything else makes a different run."""
    from medattn.registry import default_registry
    from medattn.store.identity import identity
    from medattn.store.manifest import canonical

    reg = default_registry()
    old = {"seed": 1, "dataset": {"name": "image_folder", "params": {"root": "/a", "val_fraction": 0.15}}}
    new = {"seed": 1, "dataset": {"name": "image_folder", "params": {"root": "/b", "val_fraction": 0.15,
                                                                     "calibration_fraction": 0, "metadata": "m.csv"}}}
    assert canonical(identity(old, reg)) == canonical(identity(new, reg))
    new["dataset"]["params"]["calibration_fraction"] = 0.2
    assert canonical(identity(old, reg)) != canonical(identity(new, reg))
    new["dataset"]["params"]["calibration_fraction"] = 0
    new["dataset"]["params"]["val_fraction"] = 0.2
    assert canonical(identity(old, reg)) != canonical(identity(new, reg))
