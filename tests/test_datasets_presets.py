"""The study presets validate against fixture trees in the real formats (medattn validate, subprocess)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
MEDATTN = [sys.executable, "-m", "medattn.cli"]


def png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((20, 20), 90, dtype=np.uint8)).save(path)


def cbis_original(root: Path) -> Path:
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        for i in range(n):
            png(root / split / f"img{i}.png")
            (root / split / f"img{i}case.txt").write_text("MALIGNANT\n" if i % 2 else "BENIGN\n")
    return root


def cbis_tcia(root: Path) -> Path:
    from tests.test_datasets_formats import _cbis_tree

    _cbis_tree(root)
    return root


def mimic_original(root: Path) -> Path:
    import pickle

    for name in ("Train_images_AP_resized", "Val_images_AP_resized", "Test_images_AP_resized"):
        arr = np.array([[str(root / name / f"i{i}"), i % 2] for i in range(4)], dtype=object)
        for i in range(4):
            png(root / name / f"i{i}.jpg")
        with open(root / name / "Annotations.pickle", "wb") as fh:
            pickle.dump(arr, fh)
    return root


def noor(root: Path) -> Path:
    for cls in ("AMD", "DME", "NORMAL"):
        for s in range(6):
            png(root / cls / f"{cls}{s + 1}" / "0.tif")
    return root


def iris(root: Path) -> Path:
    for cls in ("live", "spoof"):
        for i in range(6):
            png(root / cls / f"{cls}{i}.png")
    return root


PRESETS = {
    "goncalves2021/cbis_ddsm.yaml": (cbis_original, [], "vgg16", "{name: mldam, params: {variant: goncalves2021}}"),
    "goncalves2021/cbis_ddsm_fullres.yaml": (cbis_tcia, ["dataset.params.val_fraction=0.25"], None, None),
    "goncalves2021/mimic_cxr.yaml": (mimic_original, ["dataset.params.trust_pickle=true"], "vgg16", "{name: none}"),
    "mishra2019/oct.yaml": (noor, [], None, None),
    "chen2021/iris_pad.yaml": (iris, [], None, None),
}


def validate(path: Path, sets: list[str]) -> subprocess.CompletedProcess:
    """`medattn validate` in this process (the CLI's main; one torch import for all presets)."""
    import contextlib
    import io

    from medattn.cli import main

    args = ["validate", str(path), "--device", "cpu"]
    for s in sets:
        args += ["--set", s]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(args)
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


def test_cli_subprocess_reports_missing_root() -> None:
    res = subprocess.run([*MEDATTN, "validate", str(REPO / "experiments" / "mishra2019" / "oct.yaml"),
                          "--set", "model.backbone.params.pretrained=false"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert res.returncode == 2 and "dataset.params.root" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_validates_on_fixture(preset: str, tmp_path: Path) -> None:
    make, extra, backbone, attention = PRESETS[preset]
    root = make(tmp_path / "data")
    target = REPO / "experiments" / preset
    if backbone:  # one variant of the grid keeps the test fast; the full grid is the slow test below
        child = tmp_path / "one.yaml"
        child.write_text(f"extends: {target}\nmatrix:\n  model.backbone.name: [{backbone}]\n"
                         f"  setting: {{one: {{model.attention: {attention}}}}}\n  train.augment: [goncalves2021]\n")
        target = child
    res = validate(target, [f"dataset.params.root={root}", "model.backbone.params.pretrained=false", *extra])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "valid" in res.stdout


def test_preset_without_root_names_the_field() -> None:
    res = validate(REPO / "experiments" / "chen2021" / "iris_pad.yaml", ["model.backbone.params.pretrained=false"])
    assert res.returncode == 2 and "dataset.params.root" in res.stderr + res.stdout
    assert "Traceback" not in res.stderr


def test_mimic_preset_refuses_pickle_without_trust(tmp_path: Path) -> None:
    root = mimic_original(tmp_path / "m")
    res = validate(REPO / "experiments" / "goncalves2021" / "mimic_cxr.yaml",
                   [f"dataset.params.root={root}", "model.backbone.params.pretrained=false"])
    assert res.returncode == 2 and "trust_pickle" in res.stderr + res.stdout


@pytest.mark.slow
def test_full_cbis_grid_validates(tmp_path: Path) -> None:
    root = cbis_original(tmp_path / "data")
    res = validate(REPO / "experiments" / "goncalves2021" / "cbis_ddsm.yaml",
                   [f"dataset.params.root={root}", "model.backbone.params.pretrained=false"])
    assert res.returncode == 0 and "12 runs" in res.stdout, res.stdout + res.stderr
