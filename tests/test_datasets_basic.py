"""synthetic_lesions, image_folder and cxr16: contract, determinism, splits.json, leak check."""
from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from medattn_plugins.datasets import (
    IMAGE_FOLDER,
    cxr16,
    image_folder,
    medattn_components,
    params_for,
    synthetic_lesions,
)
from medattn_plugins.datasets.splits import grouped_split
from PIL import Image

from medattn.errors import UserError
from medattn.hookspecs import DataContext
from medattn.params import component_params
from medattn.registry import Registry, default_registry
from medattn.store.rundir import RunDir


@functools.cache
def registry() -> Registry:
    return default_registry()


def filled(name: str, params: dict) -> dict:
    """The params of dataset ``name`` as the core hands them to the factory: validated, defaults filled in."""
    return component_params(registry(), "dataset", {"name": name, "params": params})


def ctx(tmp_path: Path | None = None, size: int = 32, channels: int = 3) -> DataContext:
    return DataContext(seed=42, image_size=(size, size), channels=channels, run_dir=RunDir(tmp_path) if tmp_path else None,
                       log=lambda m: None)


def check_item(item: dict, channels: int, size: int) -> None:
    img = item["image"]
    assert img.dtype == torch.float32 and tuple(img.shape) == (channels, size, size)
    assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
    assert isinstance(item["label"], int) and isinstance(item["id"], str)


def test_listing_imports_no_heavy_modules() -> None:
    code = ("import sys, medattn_plugins.datasets as d, medattn_plugins.transforms as t; "
            "d.medattn_components(); t.medattn_components(); "
            "print([m for m in ('torch', 'torchvision', 'PIL', 'pydicom') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_schemas_are_strict_and_described() -> None:
    for comp in medattn_components():
        schema = comp.params_schema
        assert schema["additionalProperties"] is False, comp.name
        for key, prop in schema["properties"].items():
            assert prop.get("description"), (comp.name, key)
        assert isinstance(comp.factory, str) and ":" in comp.factory


def test_synthetic_decoys() -> None:
    plain = synthetic_lesions.build(filled("synthetic_lesions", {"n_train": 4, "n_val": 2, "n_test": 2}), ctx(None, 48, 1))
    decoy = synthetic_lesions.build(filled("synthetic_lesions", {"n_train": 4, "n_val": 2, "n_test": 2, "decoys": 3}),
                                    ctx(None, 48, 1))
    a, b = plain.splits["train"][1], decoy.splits["train"][1]
    assert torch.equal(a["mask"], b["mask"])  # the true lesion stays where it was
    outside = a["mask"] == 0
    assert (b["image"][outside] - a["image"][outside]).abs().max() > 0.02  # decoys appear outside the mask


def test_synthetic_deterministic_with_masks(tmp_path: Path) -> None:
    b1 = synthetic_lesions.build(filled("synthetic_lesions", {"n_train": 8, "n_val": 4, "n_test": 4}), ctx(tmp_path, 48, 3))
    b2 = synthetic_lesions.build(filled("synthetic_lesions", {"n_train": 8, "n_val": 4, "n_test": 4}), ctx(None, 48, 3))
    assert b1.has_masks and b1.class_names == ["round", "spiculated"]
    for split in ("train", "val", "test"):
        for i in range(len(b1.splits[split])):
            a, b = b1.splits[split][i], b2.splits[split][i]
            check_item(a, 3, 48)
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
            assert a["mask"].shape == (1, 48, 48) and a["mask"].sum() > 0
    assert not torch.equal(b1.splits["train"][0]["image"], b1.splits["test"][0]["image"])
    doc = json.loads((tmp_path / "splits.json").read_text())
    assert len(doc["splits"]["train"]) == 8 and len(doc["splits"]["test"]) == 4
    b3 = synthetic_lesions.build(filled("synthetic_lesions", {"n_train": 8, "n_val": 4, "n_test": 4, "seed_offset": 1}), ctx(None, 48, 1))
    assert b3.splits["train"][0]["image"].shape == (1, 48, 48)
    assert not torch.equal(b3.splits["train"][0]["image"], b1.splits["train"][0]["image"][:1])


def test_synthetic_labels_balanced_and_lesion_inside_mask() -> None:
    ds = synthetic_lesions.build(filled("synthetic_lesions", {"n_train": 20, "n_val": 2, "n_test": 2, "difficulty": 0.0}),
                                 ctx(None, 64, 1)).splits["train"]
    assert sum(ds.labels()) == 10
    for i in range(6):
        it = ds[i]
        inside = it["image"][it["mask"] > 0].mean()
        outside = it["image"][it["mask"] == 0].mean()
        assert inside > outside + 0.1


def test_cxr16_split_8_4_4_stratified(tmp_path: Path) -> None:
    b = cxr16.build(filled("cxr16", {}), ctx(tmp_path, 32, 1))
    assert b.class_names == ["NORMAL", "PNEUMONIA"]
    assert {k: len(v) for k, v in b.splits.items()} == {"train": 8, "val": 4, "test": 4}
    for split in b.splits.values():
        assert sorted(split.labels()) == [0] * (len(split) // 2) + [1] * (len(split) // 2)
    check_item(b.splits["train"][0], 1, 32)
    doc = json.loads((tmp_path / "splits.json").read_text())
    ids = [i for s in doc["splits"].values() for i in s]
    assert len(ids) == len(set(ids)) == 16
    # person1946 has two images: they stay together
    groups = {s: set(g) for s, g in doc["groups"].items()}
    assert sum("person1946" in g for g in groups.values()) == 1


def _write_folder(root: Path, layout: dict[str, int]) -> None:
    rng = np.random.default_rng(0)
    for rel, n in layout.items():
        d = root / rel
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (20, 24), dtype=np.uint8)).save(d / f"p{i % 3}_{i}.png")


def test_image_folder_flat_and_split_folders(tmp_path: Path) -> None:
    _write_folder(tmp_path / "flat", {"a": 10, "b": 10})
    b = image_folder.build(filled("image_folder", {"root": str(tmp_path / "flat"), "val_fraction": 0.2, "test_fraction": 0.2}),
                           ctx(None, 16, 3))
    assert sum(len(s) for s in b.splits.values()) == 20 and b.class_names == ["a", "b"]
    check_item(b.splits["val"][0], 3, 16)
    _write_folder(tmp_path / "sp", {"train/a": 4, "train/b": 4, "val/a": 2, "val/b": 2, "test/a": 2,
                                    "test/b": 1})
    b = image_folder.build(filled("image_folder", {"root": str(tmp_path / "sp")}), ctx(None, 16, 1))
    assert [len(b.splits[k]) for k in ("train", "val", "test")] == [8, 4, 3]


def test_image_folder_group_regex_never_leaks(tmp_path: Path) -> None:
    _write_folder(tmp_path / "g", {"a": 12, "b": 12})
    b = image_folder.build(filled("image_folder", {"root": str(tmp_path / "g"), "group_regex": r"^(p\d)_"}), ctx(tmp_path, 16, 1))
    doc = json.loads((tmp_path / "splits.json").read_text())
    sets = [set(doc["groups"][k]) for k in ("train", "val", "test")]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert b is not None


def test_image_folder_leak_in_split_folders_is_error(tmp_path: Path) -> None:
    _write_folder(tmp_path / "sp", {"train/a": 3, "train/b": 3, "val/a": 3, "val/b": 3, "test/a": 3,
                                    "test/b": 3})
    with pytest.raises(UserError, match="leak"):
        image_folder.build(filled("image_folder", {"root": str(tmp_path / "sp"), "group_regex": r"^(p\d)_"}), ctx(None, 16, 1))
    b = image_folder.build(filled("image_folder", {"root": str(tmp_path / "sp"), "group_regex": r"^(p\d)_", "split": "grouped",
                                                   "val_fraction": 0.34, "test_fraction": 0.33}), ctx(None, 16, 1))
    assert sum(len(s) for s in b.splits.values()) == 18


def test_reused_reader_gets_its_own_schema_defaults(tmp_path: Path) -> None:
    """A dataset reading through image_folder's reader (oct, iris_pad, cxr16) hands it image_folder's keys with
    image_folder's defaults for those its own schema lacks; keys image_folder does not know are dropped."""
    oct_params = filled("oct", {"root": str(tmp_path), "cache": False})
    p = params_for(IMAGE_FOLDER, oct_params, classes=["a", "b"])
    assert "layout" not in p and p["cache"] is False and p["classes"] == ["a", "b"]
    assert p["nested"] is False and ".png" in p["extensions"] and p["val_fraction"] == oct_params["val_fraction"]


def test_fractions_and_extensions_checked(tmp_path: Path) -> None:
    _write_folder(tmp_path / "flat", {"a": 4, "b": 4})
    with pytest.raises(UserError, match="val_fraction"):
        filled("image_folder", {"root": str(tmp_path / "flat"), "val_fraction": -0.1})
    with pytest.raises(UserError, match="extensions"):
        filled("image_folder", {"root": str(tmp_path / "flat"), "extensions": []})
    with pytest.raises(UserError, match="val_fraction \\+ test_fraction must be below 1"):
        image_folder.build(filled("image_folder", {"root": str(tmp_path / "flat"), "val_fraction": 0.5,
                                                   "test_fraction": 0.5}), ctx(None, 16, 1))


def test_grouped_split_property() -> None:
    rng = np.random.default_rng(3)
    groups = [f"g{int(x)}" for x in rng.integers(0, 40, 300)]
    labels = [int(x) for x in rng.integers(0, 2, 300)]
    for seed in range(5):
        parts = grouped_split(labels, groups, [0.7, 0.15, 0.15], seed)
        assert sum(len(p) for p in parts) == 300
        gs = [{groups[i] for i in p} for p in parts]
        assert not (gs[0] & gs[1]) and not (gs[0] & gs[2]) and not (gs[1] & gs[2])
        assert all(len(p) > 0 for p in parts)
    a = grouped_split(labels, groups, [0.7, 0.15, 0.15], 1)
    b = grouped_split(labels, groups, [0.7, 0.15, 0.15], 1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_image_folder_metadata_csv(tmp_path: Path) -> None:
    """A metadata sheet gives image_folder's images the fields test.subgroups groups by: rows name an image by its
    path relative to root (with or without extension) or by a unique file name; a missing image gets blanks, a
    row naming no image is logged, and duplicates or ambiguous names are errors naming the line."""
    root = tmp_path / "sp"
    _write_folder(root, {"train/a": 3, "train/b": 3, "val/a": 2, "val/b": 2, "test/a": 2, "test/b": 2})
    (root / "meta.csv").write_text("image,site,device\ntrain/a/p0_0.png,north,A\ntrain/a/p1_1,south,B\n"
                                   "test/b/p0_0.png,south,A\np1_1.png,east,C\nmissing.png,x,y\n")
    # p1_1.png is in train/a, train/b, val/a, val/b, test/a, test/b: a bare name is ambiguous -> error below
    with pytest.raises(UserError, match=r"meta.csv line 5: 'p1_1.png' names 6 images"):
        image_folder.build(filled("image_folder", {"root": str(root), "metadata": "meta.csv"}), ctx(None, 16, 1))
    (root / "meta.csv").write_text("image,site,device\ntrain/a/p0_0.png,north,A\n./train/a/p1_1,south,B\n"
                                   "test\\b\\p0_0.png,south , A\nmissing.png,x,y\n")
    logged: list[str] = []
    c = DataContext(seed=42, image_size=(16, 16), channels=1, run_dir=None, log=logged.append)
    b = image_folder.build(filled("image_folder", {"root": str(root), "metadata": "meta.csv"}), c)
    meta = {**b.splits["train"].metadata(), **b.splits["test"].metadata()}
    assert meta["train/a/p0_0.png"] == {"site": "north", "device": "A"}
    assert meta["train/a/p1_1.png"] == {"site": "south", "device": "B"}
    assert meta["test/b/p0_0.png"] == {"site": "south", "device": "A"}
    assert meta["train/b/p0_0.png"] == {"site": "", "device": ""}
    assert b.info["metadata"]["with_metadata"] == 3 and b.info["metadata"]["fields"] == ["site", "device"]
    assert any("metadata for 3 of 14 images" in m and "1 row(s) name no image (e.g. missing.png)" in m for m in logged)
    (root / "meta.csv").write_text("image,site\ntrain/a/p0_0.png,north\ntrain/a/p0_0,south\n")
    with pytest.raises(UserError, match=r"meta.csv line 3: a second row for train/a/p0_0.png \(the first is line 2\)"):
        image_folder.build(filled("image_folder", {"root": str(root), "metadata": "meta.csv"}), ctx(None, 16, 1))
    (root / "meta.csv").write_text("file,site\ntrain/a/p0_0.png,north\n")
    with pytest.raises(UserError, match=r"meta.csv line 1: missing required column\(s\) \['image'\]"):
        image_folder.build(filled("image_folder", {"root": str(root), "metadata": "meta.csv"}), ctx(None, 16, 1))
    b = image_folder.build(filled("image_folder", {"root": str(root), "metadata": "meta.csv", "metadata_key": "file"}),
                           ctx(None, 16, 1))
    assert b.splits["train"].metadata()["train/a/p0_0.png"] == {"site": "north"}
    (root / "meta.csv").write_text("image,site\nnothing.png,north\n")
    with pytest.raises(UserError, match="no row of the metadata CSV names an image"):
        image_folder.build(filled("image_folder", {"root": str(root), "metadata": "meta.csv"}), ctx(None, 16, 1))
    with pytest.raises(UserError, match="metadata CSV not found"):
        image_folder.build(filled("image_folder", {"root": str(root), "metadata": "nope.csv"}), ctx(None, 16, 1))


def test_calibration_split_carved_by_patient(tmp_path: Path) -> None:
    """calibration_fraction moves whole patients of the train split into a `calibration` split: no patient in two
    splits, listed in splits.json; 0 (the default) leaves the splits as they were."""
    _write_folder(tmp_path / "many", {"a": 40, "b": 40})
    for i, f in enumerate(sorted((tmp_path / "many").rglob("*.png"))):
        f.rename(f.with_name(f"pt{i // 2}_{f.name}"))  # 40 patients of two images each
    base = {"root": str(tmp_path / "many"), "group_regex": r"^(pt\d+)_"}
    plain = image_folder.build(filled("image_folder", base), ctx(None, 16, 1))
    assert "calibration" not in plain.splits
    run = tmp_path / "run"
    run.mkdir()
    b = image_folder.build(filled("image_folder", {**base, "calibration_fraction": 0.25}), ctx(run, 16, 1))
    assert b.splits["val"].ids() == plain.splits["val"].ids() and b.splits["test"].ids() == plain.splits["test"].ids()
    cal, train = b.splits["calibration"], b.splits["train"]
    assert sorted(cal.ids() + train.ids()) == sorted(plain.splits["train"].ids())
    assert abs(len(cal) - 0.25 * len(plain.splits["train"])) <= 4 and set(cal.labels()) == {0, 1}
    assert not set(cal.groups()) & set(train.groups())
    doc = json.loads((run / "splits.json").read_text())
    assert doc["splits"]["calibration"] == cal.ids() and doc["counts"]["calibration"] == len(cal)
    assert "calibration carved from train" in b.info["split_mode"]
    with pytest.raises(UserError, match="calibration_fraction"):
        filled("image_folder", {**base, "calibration_fraction": 0.7})


def test_synthetic_calibration_split_is_drawn_like_test() -> None:
    plain = synthetic_lesions.build(filled("synthetic_lesions", {"n_train": 4, "n_val": 4, "n_test": 4}), ctx(None, 16, 1))
    b = synthetic_lesions.build(filled("synthetic_lesions", {"n_train": 4, "n_val": 4, "n_test": 4, "n_calibration": 6}),
                                ctx(None, 16, 1))
    assert "calibration" not in plain.splits and len(b.splits["calibration"]) == 6
    assert plain.info["fingerprint"] == synthetic_lesions.build(
        filled("synthetic_lesions", {"n_train": 4, "n_val": 4, "n_test": 4, "n_calibration": 0}), ctx(None, 16, 1)).info["fingerprint"]
    assert torch.equal(b.splits["test"][0]["image"], plain.splits["test"][0]["image"])
    assert not set(b.splits["calibration"].ids()) & set(b.splits["test"].ids())
