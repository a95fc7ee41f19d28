"""Lesion masks from image_folder (a masks folder) and csv (a mask column) reach the items; a validation
explanation score keeps its own best checkpoint."""
from __future__ import annotations

import csv
import functools
from pathlib import Path

import numpy as np
import pytest
from medattn_plugins.datasets import csv_list, image_folder
from PIL import Image

from medattn.errors import UserError
from medattn.hookspecs import DataContext
from medattn.params import component_params
from medattn.registry import Registry, default_registry

from .conftest import TINY


@functools.cache
def registry() -> Registry:
    return default_registry()


def filled(name: str, params: dict) -> dict:
    return component_params(registry(), "dataset", {"name": name, "params": params})


def ctx() -> DataContext:
    return DataContext(seed=0, image_size=(16, 16), channels=1, log=lambda m: None)


def png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def square() -> np.ndarray:
    m = np.zeros((16, 16))
    m[4:8, 4:8] = 255
    return m


def by_id(bundle) -> dict:
    return {item["id"]: item for split in ("train", "val", "test") for item in bundle.splits[split]}


def test_image_folder_reads_a_masks_folder_laid_out_like_the_images(tmp_path):
    root = tmp_path / "data"
    for cls in ("benign", "malignant"):
        for i in range(8):
            png(root / cls / f"{i}.png", np.full((16, 16), 40 * i))
    png(root / "masks" / "benign" / "0.png", square())  # inside root: not taken for a class
    png(root / "masks" / "malignant" / "3.jpg", square())  # any image extension
    bundle = image_folder.build(filled("image_folder", {"root": str(root), "masks": "masks"}), ctx())
    assert bundle.has_masks and bundle.class_names == ["benign", "malignant"]
    items = by_id(bundle)
    assert items["benign/0.png"]["mask"].shape == (1, 16, 16)
    assert items["benign/0.png"]["mask"].sum() == 16 and items["malignant/3.png"]["mask"].sum() > 0
    assert items["benign/1.png"]["mask"].sum() == 0  # no mask file: an empty mask
    plain = image_folder.build(filled("image_folder", {"root": str(root / "benign" / ".."), "classes":
                                                       ["benign", "malignant"]}), ctx())
    assert not plain.has_masks and "mask" not in plain.splits["train"][0]
    with pytest.raises(UserError, match="masks"):
        image_folder.build(filled("image_folder", {"root": str(root), "masks": "nowhere"}), ctx())


def test_csv_reads_a_mask_column_and_a_blank_cell_is_an_empty_mask(tmp_path):
    rows = []
    for i in range(12):
        png(tmp_path / "img" / f"{i}.png", np.full((16, 16), 20 * i))
        mask = ""
        if i < 4:
            png(tmp_path / "roi" / f"{i}.png", square())
            mask = f"roi/{i}.png"
        rows.append([f"img/{i}.png", "a" if i % 2 else "b", mask])
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "label", "mask"], *rows])
    params = filled("csv", {"root": str(tmp_path), "mask_column": "mask"})
    bundle = csv_list.build(params, ctx())
    items = by_id(bundle)
    assert bundle.has_masks
    assert items["img/0.png"]["mask"].sum() == 16 and items["img/7.png"]["mask"].sum() == 0


def test_a_validation_explanation_score_keeps_its_own_checkpoint_beside_best_val_loss(write, tmp_path, cli):
    text = TINY.replace("train: {epochs: 1,", "train: {explanation_score: {explainer: {name: saliency}, samples: 4}, "
                        "checkpoints: [best_val_loss, best_val_explanation], epochs: 2,")
    text = text.replace("jobs: [train, test, explain, figure]", "jobs: [train]")
    code, _, err = cli("run", write("scored.yaml", text + f"output_dir: {tmp_path / 'runs'}\n"))
    assert code == 0, err
    run = tmp_path / "runs" / "tiny" / "default"
    with open(run / "metrics" / "history.csv") as f:
        values = [float(r["val_explanation"]) for r in csv.DictReader(f)]
    assert len(values) == 2 and all(0 <= v <= 1 for v in values)
    assert (run / "checkpoints" / "best_val_explanation.pt").is_file()
    assert (run / "checkpoints" / "best_val_loss.pt").is_file()


def test_an_explanation_score_on_a_data_set_without_masks_is_refused_at_validate(write, cli):
    exp = write("nomask.yaml", """\
        name: nomask
        dataset: {name: cxr16, image_size: 32}
        model: {backbone: {name: resnet18, params: {pretrained: false}}}
        train: {explanation_score: {explainer: {name: saliency}}}
        jobs: [train]
        """)
    code, _, err = cli("validate", exp)
    assert code != 0 and "train.explanation_score" in err and "'cxr16'" in err and "Traceback" not in err


def test_augmentation_moves_the_mask_with_the_image_and_draws_as_much_as_before():
    import torch
    from torchvision.transforms import v2

    from medattn.components.data import Prepared

    mask = torch.zeros(1, 32, 32)
    mask[:, 4:12, 2:20] = 1.0
    base = [{"image": mask.expand(3, -1, -1).clone(), "label": 0, "id": "a", "mask": mask.clone()}]
    augment = v2.RandomAffine(degrees=30, translate=(0.2, 0.2))
    torch.manual_seed(5)
    alone = Prepared(base, None, None, augment)[0]
    after_alone = torch.rand(1)
    torch.manual_seed(5)
    paired = Prepared(base, None, None, augment, augment_masks=True)[0]
    assert torch.equal(paired["image"], alone["image"]) and torch.equal(torch.rand(1), after_alone)
    assert not torch.equal(paired["mask"], mask)  # it moved
    assert torch.equal(paired["mask"][0] > 0.5, paired["image"][0] > 0.5)  # with the image
