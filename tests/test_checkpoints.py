"""The one checkpoint format: safe loading (weights_only), self-contained model files, clear errors."""
from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch

from medattn.config import load_experiment
from medattn.errors import UserError
from medattn.runs.runner import run_experiment
from medattn.store import checkpoints
from medattn.store.rundir import RunDir
from tests.test_engine import FAST, QUIET

META_KEYS = {"config", "class_names", "image_size", "channels", "mean", "std", "threshold", "versions",
             "data_fingerprint", "plugins", "components", "calibration", "conformal"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One run trained for 2 epochs and tested, with the threshold chosen by Youden's J on validation."""
    tmp = tmp_path_factory.mktemp("ckpt")
    text = FAST.format(epochs=2, out=tmp / "runs").replace(
        "test: {checkpoints: [best_val_loss], bootstrap: {resamples: 50}}",
        "test: {checkpoints: [best_val_loss], threshold_method: youden, bootstrap: {resamples: 0}}").replace(
        "jobs: [train]", "jobs: [train, test]")
    (tmp / "fast.yaml").write_text(text)
    run_experiment(load_experiment(tmp / "fast.yaml"), **QUIET)
    return RunDir(tmp / "runs" / "fast" / "default")


def test_kept_checkpoints_are_safe_self_contained_model_files(trained):
    manifest = trained.read_manifest()
    for name in ("last", "best_val_loss", "best_train_loss"):
        state = torch.load(trained.checkpoint(name), map_location="cpu", weights_only=True)  # nothing unpickled
        assert state["format"] == 3 and state["epoch"] in (1, 2), name
        assert state["monitor"] == (None if name == "last" else name[len("best_"):])
        meta = state["meta"]
        assert set(meta) == META_KEYS
        assert meta["class_names"] == manifest["data"]["classes"]
        assert meta["image_size"] == [32, 32] and meta["channels"] == 3
        assert len(meta["mean"]) == len(meta["std"]) == 3
        assert meta["config"]["train"]["epochs"] == 2 and meta["config"]["model"]["backbone"]["name"] == "timm"
        assert meta["data_fingerprint"] == manifest["data"]["fingerprint"] is not None
        assert meta["versions"]["torch"] == str(torch.__version__) and "medattn:backbones" in meta["versions"]
        assert meta["threshold"]["rule"] == "youden" and meta["threshold"]["source"] == "validation (youden)"
        assert 0 <= meta["threshold"]["value"] <= 1
    last = checkpoints.load(trained.last)
    assert {"optimizer", "scheduler", "scaler", "rng", "history", "best", "stale", "stopped"} <= set(last)
    assert isinstance(last["rng"]["python"]["state"], list) and isinstance(last["rng"]["numpy"]["keys"], list)
    # the threshold in the model file is the one the test job chooses on validation for that checkpoint
    tested = json.loads(trained.test_metrics("best_val_loss").read_text())
    assert checkpoints.read_meta(trained.checkpoint("best_val_loss"))["threshold"]["value"] == pytest.approx(
        tested["threshold"], abs=1e-5)


def test_load_model_rebuilds_from_meta_without_the_data_set(trained, monkeypatch):
    import medattn.components.data

    monkeypatch.setattr(medattn.components.data, "build_data", lambda *a, **k: pytest.fail("the data set was built"))
    file = trained.checkpoint("best_val_loss")
    rng = torch.get_rng_state()
    model = checkpoints.load_model(file)
    assert torch.equal(torch.get_rng_state(), rng)  # loading leaves the caller's random stream alone
    assert not model.training and model.class_names == trained.class_names()
    assert model.meta == checkpoints.read_meta(file)
    weights = checkpoints.load(file)["model"]
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 1)


def test_a_model_file_loads_where_its_pretrained_weights_are_missing(trained, tmp_path):
    state = checkpoints.load(trained.checkpoint("best_val_loss"))
    params = state["meta"]["config"]["model"]["backbone"]["params"]
    params.update(pretrained=True, weights=str(tmp_path / "gone.safetensors"))
    moved = tmp_path / "elsewhere" / "model.pt"
    checkpoints.save(state, moved)
    model = checkpoints.load_model(moved)  # neither the timm cache nor gone.safetensors is needed
    assert all(torch.equal(v, state["model"][k]) for k, v in model.state_dict().items())
    state["meta"]["config"]["model"]["output"] = "softmax"  # two outputs: the saved head has one
    checkpoints.save(state, moved)
    with pytest.raises(UserError, match=r"model\.pt: the weights do not fit the model its config builds"):
        checkpoints.load_model(moved)


def test_unknown_checkpoint_lists_what_the_run_has(trained):
    with pytest.raises(UserError) as err:
        checkpoints.load_model(trained.checkpoint("best_val_f1"))
    assert str(trained.checkpoint("best_val_f1")) in str(err.value)
    assert "this run has: best_train_loss, best_val_loss, last" in str(err.value)


class Evil:
    def __reduce__(self):
        return os.system, ("touch pwned",)


def test_tampered_truncated_and_foreign_files_are_one_clear_error(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    good = trained.checkpoint("best_val_loss").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(UserError, match=r"cut\.pt: not a readable checkpoint \(truncated or damaged\?\)"):
        checkpoints.load(cut)
    evil = tmp_path / "evil.pt"
    torch.save({"format": 3, "model": Evil()}, evil)
    with pytest.raises(UserError, match=r"evil\.pt: refused: .*posix\.system.*nothing was unpickled"):
        checkpoints.load_model(evil)
    assert not (tmp_path / "pwned").exists()
    old = tmp_path / "old.pt"  # the previous format kept numpy RNG states
    torch.save({"format": 2, "model": {}, "rng": {"numpy": np.random.get_state()}}, old)
    with pytest.raises(UserError, match=r"old\.pt: refused"):
        checkpoints.load(old)
    plain = tmp_path / "weights.pt"
    checkpoints.save({"model": {"w": torch.ones(1)}}, plain)
    with pytest.raises(UserError, match=r"weights\.pt: not a medattn model file of format 3"):
        checkpoints.read_meta(plain)
    pickled = tmp_path / "pickled.pt"
    pickled.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(UserError, match=r"pickled\.pt: not a readable checkpoint"):
        checkpoints.load(pickled)


def test_a_damaged_last_checkpoint_stops_the_run_with_one_line(trained, cli, tmp_path):
    run = RunDir(tmp_path / "runs" / "fast" / "default")
    run.checkpoints.mkdir(parents=True)
    run.last.write_bytes(trained.last.read_bytes()[:1000])
    file = tmp_path / "fast.yaml"
    file.write_text(FAST.format(epochs=2, out=tmp_path / "runs"))
    code, _, err = cli("run", file)
    assert code == 2 and f"{run.last}: not a readable checkpoint" in err and "Traceback" not in err


def test_save_writes_plain_data_only():
    import io

    buffer = io.BytesIO()
    state = checkpoints.plain({"a": np.float64(1.5), "b": np.arange(3), "c": [np.int64(2)], "v": torch.__version__})
    torch.save(state, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == {"a": 1.5, "b": [0, 1, 2], "c": [2], "v": str(torch.__version__)}
    with pytest.raises(TypeError, match="object is not plain data"):
        checkpoints.plain({"x": object()})
