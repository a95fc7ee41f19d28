"""synthetic_lesions' marker per split (shortcut: {agree, strength, splits}): flipped and nomarker show the test
images with the marker moved or gone, every item carries the marker's box as its confound mask, and every image
can be rendered with and without the marker; the number form keeps its images byte for byte."""
from __future__ import annotations

import hashlib

import numpy as np
import torch
from medattn_plugins.datasets.synthetic_lesions import build, generate

from medattn.hookspecs import DataContext

# shortcut: 0.9 images (train, test, shifted) as generated before the mapping form existed (computed on that commit)
NUMBER_FORM = "945511cab9c5998809623c7e7eb1cacb44a4e480135ff24948d65f4e6d9af654"
PARAMS = {"n_train": 40, "n_val": 8, "n_test": 40, "difficulty": 0.5, "lesion_size": 0.12, "decoys": 0.0,
          "seed_offset": 0}


def bundle(shortcut, size: int = 32):
    ctx = DataContext(seed=5, image_size=(size, size), channels=1, cache_dir=None, run_dir=None, log=print)
    return build({**PARAMS, "shortcut": shortcut}, ctx)


def test_the_number_form_keeps_its_images_byte_for_byte():
    h = hashlib.sha256()
    for split in ("train", "test", "shifted"):
        for i in range(6):
            img, mask, _ = generate(11, split, i, (40, 40), 0.7, 0.12, 1.0, 0.9)
            h.update(img.tobytes())
            h.update(mask.tobytes())
    assert h.hexdigest() == NUMBER_FORM
    splits = bundle(0.9).splits
    assert set(splits) == {"train", "val", "test", "shifted"}
    img, _, _ = generate(5, "shifted", 3, (32, 32), 0.5, 0.12, 0.0, 0.9)
    assert np.array_equal(splits["shifted"][3]["image"][0].numpy(), img)


def marker_on(item: dict) -> bool:
    return bool(item["image"][0][item["confound_mask"][0] > 0].mean() > 0.6)


def test_each_split_has_its_own_agreement_on_the_same_test_images():
    b = bundle({"agree": 1.0, "strength": 0.5, "splits": {"flipped": 0.0, "nomarker": None, "shifted": 0.5}})
    assert b.has_confound_masks and {"flipped", "nomarker", "shifted"} <= set(b.splits)
    for split, want in (("train", lambda y: y == 1), ("test", lambda y: y == 1), ("flipped", lambda y: y == 0),
                        ("nomarker", lambda y: False)):
        items = [b.splits[split][i] for i in range(40)]
        assert [marker_on(it) for it in items] == [want(it["label"]) for it in items], split
    shifted = [marker_on(b.splits["shifted"][i]) for i in range(40)]
    assert 0.2 < np.mean(shifted) < 0.8
    box = b.splits["test"][0]["confound_mask"][0] > 0
    for i in range(40):  # the same lesions and noise: only the marker's box differs from the test image
        test, flipped = b.splits["test"][i], b.splits["flipped"][i]
        assert torch.equal(test["image"][0][~box], flipped["image"][0][~box])
        assert torch.equal(test["mask"], flipped["mask"]) and test["label"] == flipped["label"]


def test_every_image_renders_with_and_without_the_marker():
    b = bundle({"agree": 1.0, "splits": {"flipped": 0.0}})
    test = b.splits["test"]
    box = test[0]["confound_mask"][0] > 0
    assert box.sum() == 4  # 2 x 2 pixels at 32 px
    for i in range(6):
        with_it, without = test.confound_pair(i)
        assert torch.equal(with_it[0][~box], without[0][~box]) and (with_it[0][box] > without[0][box]).all()
        assert torch.equal(test[i]["image"], with_it if test[i]["label"] == 1 else without)


def test_without_a_marker_there_is_no_reliance_to_report():
    """A data set without a shortcut offers no (with, without) pair, so the test job reports no reliance on a
    marker the model never saw."""
    from medattn.jobs.test import confound_reliance

    b = bundle(0)
    assert b.splits["test"].confound_pair is None and "confound_mask" not in b.splits["test"][0]
    assert confound_reliance(torch.nn.Identity(), b.splits["test"], "cpu", 4) == {}


def test_a_shortcut_split_may_not_take_the_name_of_the_calibration_split(tmp_path):
    """A ``calibration`` split of the shortcut would show the test images, and test.conformal.split: calibration
    would then fit the conformal sets on the test images: the name is refused, naming the field."""
    import pytest

    from medattn.config import ConfigError, load_experiment

    from .conftest import BASE

    path = tmp_path / "e.yaml"
    path.write_text(BASE.replace("image_size: 32}", "image_size: 32, params: {shortcut: {agree: 1.0, splits: "
                                                    "{calibration: 0.5}}}}"))
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert any("shortcut.splits" in line for line in info.value.problems), info.value.problems
