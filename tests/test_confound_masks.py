"""Confound masks (where a known shortcut lives) from image_folder (a confound_masks folder) and csv (a
confound_mask_column) reach the items beside the lesion masks."""
from __future__ import annotations

import csv

import numpy as np
from medattn_plugins.datasets import csv_list, image_folder

from .test_masks import by_id, ctx, filled, png, square


def corner() -> np.ndarray:
    m = np.zeros((16, 16))
    m[:2, :2] = 255
    return m


def test_image_folder_reads_a_confound_masks_folder_beside_the_masks(tmp_path):
    root = tmp_path / "data"
    for cls in ("benign", "malignant"):
        for i in range(8):
            png(root / cls / f"{i}.png", np.full((16, 16), 40 * i))
    png(root / "masks" / "benign" / "0.png", square())
    png(root / "rulers" / "benign" / "0.png", corner())  # inside root: not taken for a class
    params = filled("image_folder", {"root": str(root), "masks": "masks", "confound_masks": "rulers"})
    bundle = image_folder.build(params, ctx())
    assert bundle.has_masks and bundle.has_confound_masks and bundle.class_names == ["benign", "malignant"]
    items = by_id(bundle)
    assert items["benign/0.png"]["mask"].sum() == 16 and items["benign/0.png"]["confound_mask"].sum() == 4
    assert items["benign/1.png"]["confound_mask"].sum() == 0  # no file: an empty confound mask
    alone = image_folder.build(filled("image_folder", {"root": str(root), "confound_masks": "rulers",
                                                       "classes": ["benign", "malignant"]}), ctx())
    assert alone.has_confound_masks and not alone.has_masks
    assert by_id(alone)["benign/0.png"]["confound_mask"].sum() == 4 and "mask" not in by_id(alone)["benign/0.png"]


def test_csv_reads_a_confound_mask_column(tmp_path):
    rows = []
    for i in range(12):
        png(tmp_path / "img" / f"{i}.png", np.full((16, 16), 20 * i))
        png(tmp_path / "token" / f"{i}.png", corner())
        rows.append([f"img/{i}.png", "a" if i % 2 else "b", f"token/{i}.png" if i < 6 else ""])
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "label", "token"], *rows])
    bundle = csv_list.build(filled("csv", {"root": str(tmp_path), "confound_mask_column": "token"}), ctx())
    items = by_id(bundle)
    assert bundle.has_confound_masks and not bundle.has_masks
    assert items["img/0.png"]["confound_mask"].sum() == 4 and items["img/7.png"]["confound_mask"].sum() == 0
    for split in bundle.splits.values():  # a path column, not metadata for test.subgroups
        assert all("token" not in meta for meta in split.metadata().values())
