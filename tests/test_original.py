"""The original code's outputs (plugins/original): its text results and its attribution files."""
from __future__ import annotations

import numpy as np
from medattn_plugins.original import attribution_files, results_text

from medattn.api import RunView
from medattn.store.rundir import ExperimentDir

PARAMS = {"dir": None, "names": {}, "variant": None}


def _run(root, seed=None, attention="none", augment=None):
    exp = ExperimentDir(root / "runs" / "exp")
    rd = exp.run("densenet121_x", seed)
    config = {"seed": seed or 42, "model": {"backbone": {"name": "densenet121"}, "attention": {"name": attention}},
              "train": {"augment": augment}}
    rng = np.random.default_rng(0)
    rd.explanations.mkdir(parents=True)
    np.savez(rd.samples, index=np.array([5, 12]), labels=np.array([0, 1]),
             images=rng.random((2, 3, 224, 224)).astype(np.float32))
    np.savez(rd.attributions("saliency"), attributions=rng.standard_normal((2, 3, 224, 224)).astype(np.float32))
    np.savez(rd.attributions("gradcam"), attributions=rng.standard_normal((2, 1, 224, 224)).astype(np.float32))
    return exp, RunView("exp", "densenet121_x", rd, config, seed=seed)


def test_original_attribution_files_exact_names(tmp_path):
    exp, view = _run(tmp_path)
    written = attribution_files.write({**PARAMS, "names": {"saliency": "dl"}}, view)
    folder = exp.file("attributes", "densenet121")
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in written) == [
        "img_12_dl_baseline_label_1.npy", "img_12_gradcam_baseline_label_1.npy", "img_12_original_1.npy",
        "img_5_dl_baseline_label_0.npy", "img_5_gradcam_baseline_label_0.npy", "img_5_original_0.npy"]
    maps = view.dir.read_npz(view.dir.attributions("saliency"))["attributions"]
    saved = np.load(folder / "img_12_dl_baseline_label_1.npy")
    assert saved.shape == (224, 224, 3) and np.array_equal(saved, np.transpose(maps[1], (1, 2, 0)))
    assert np.load(folder / "img_5_gradcam_baseline_label_0.npy").shape == (224, 224, 3)  # 1 channel -> 3
    attribution_files.write({**PARAMS, "dir": "mine", "variant": "custom"}, view)
    assert (view.dir.root / "mine" / "img_5_gradcam_custom_label_0.npy").is_file()


def test_original_attribution_files_setting_and_seed_folder(tmp_path):
    exp, view = _run(tmp_path, seed=2, attention="mldam", augment={"name": "goncalves2021"})
    attribution_files.write(PARAMS, view)
    assert (exp.file("attributes", "densenet121", "2") / "img_5_saliency_mldamdaug_label_0.npy").is_file()
    assert results_text.setting(view.config) == "mldamdaug"


def test_nothing_explained_writes_nothing(tmp_path):
    exp = ExperimentDir(tmp_path)
    view = RunView("exp", "v", exp.run("v"), {"seed": 1, "model": {"backbone": {"name": "x"}}})
    assert attribution_files.write(PARAMS, view) == []
