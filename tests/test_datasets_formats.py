"""Every dataset layout read from tiny fixture trees in the real formats, and every bad input."""
from __future__ import annotations

import csv
import functools
import gzip
import importlib.util
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from medattn_plugins.datasets import cbis_ddsm, chexpert, csv_list, iris_pad, medmnist, mimic_cxr, oct
from PIL import Image

from medattn.errors import UserError
from medattn.hookspecs import DataContext
from medattn.params import component_params
from medattn.registry import Registry, default_registry
from medattn.store.rundir import RunDir

_spec = importlib.util.spec_from_file_location("_io_tests", Path(__file__).with_name("test_image_io.py"))
_io = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_io)
write_dicom = _io.write_dicom


@functools.cache
def registry() -> Registry:
    return default_registry()


def filled(name: str, params: dict) -> dict:
    """The params of dataset ``name`` as the core hands them to the factory: validated, defaults filled in."""
    return component_params(registry(), "dataset", {"name": name, "params": params})


def ctx(run_dir: Path | None = None, size: int = 16, channels: int = 3, cache: Path | None = None) -> DataContext:
    return DataContext(seed=0, image_size=(size, size), channels=channels, run_dir=RunDir(run_dir) if run_dir else None, cache_dir=cache,
                       log=lambda m: None)


def png(path: Path, value: int = 100, shape: tuple[int, int] = (12, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, value, dtype=np.uint8)).save(path)
    return path


def write_csv(path: Path, header: list[str], rows: list[list[object]], gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(f'"{c}"' if "," in str(c) else str(c) for c in r) for r in [header, *rows]]
    text = "\n".join(lines) + "\n"
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def sizes(b) -> list[int]:
    return [len(b.splits[k]) for k in ("train", "val", "test")]


# -- csv --------------------------------------------------------------------------------------------
def _csv_tree(root: Path, n: int = 12) -> Path:
    rows = []
    for i in range(n):
        png(root / "img" / f"{i}.png", 20 * i)
        rows.append([f"img/{i}.png", "cat" if i % 2 else "dog", f"p{i // 2}"])
    return write_csv(root / "labels.csv", ["path", "label", "patient"], rows)


def test_csv_grouped_and_bad_inputs(tmp_path: Path) -> None:
    _csv_tree(tmp_path)
    b = csv_list.build(filled("csv", {"root": str(tmp_path), "group_column": "patient", "val_fraction": 0.25,
                                      "test_fraction": 0.25}), ctx(tmp_path))
    assert b.class_names == ["cat", "dog"] and sum(sizes(b)) == 12
    doc = json.loads((tmp_path / "splits.json").read_text())
    g = [set(doc["groups"][k]) for k in ("train", "val", "test")]
    assert not (g[0] & g[1] or g[0] & g[2] or g[1] & g[2])
    with pytest.raises(UserError, match=r"labels.csv line 1: missing required column\(s\) \['group'\].*'patient'"):
        csv_list.build(filled("csv", {"root": str(tmp_path), "group_column": "group"}), ctx())
    with pytest.raises(UserError, match="labels.csv line 2: label 'dog' is not one of the classes"):
        csv_list.build(filled("csv", {"root": str(tmp_path), "classes": ["cat", "bird"]}), ctx())
    with pytest.raises(UserError, match="not found"):
        csv_list.build(filled("csv", {"root": str(tmp_path), "csv": "nope.csv"}), ctx())
    with pytest.raises(UserError, match="dataset.params.root"):
        csv_list.build(filled("csv", {"root": str(tmp_path / "absent")}), ctx())
    with pytest.raises(UserError, match="required"):
        csv_list.build(filled("csv", {"root": "REQUIRED"}), ctx())
    with pytest.raises(UserError, match="class 'bird' has no samples"):
        csv_list.build(filled("csv", {"root": str(tmp_path), "classes": ["cat", "dog", "bird"]}), ctx())


def test_csv_missing_and_corrupt_images_error_and_skip(tmp_path: Path) -> None:
    _csv_tree(tmp_path)
    (tmp_path / "img" / "3.png").unlink()
    with pytest.raises(UserError, match=r"3.png: file not found \(listed in .*labels.csv line 5\)"):
        csv_list.build(filled("csv", {"root": str(tmp_path)}), ctx())
    b = csv_list.build(filled("csv", {"root": str(tmp_path), "on_bad_sample": "skip"}), ctx(tmp_path))
    assert sum(sizes(b)) == 11 and b.info["skipped_at_listing"] == 1
    (tmp_path / "img" / "5.png").write_bytes(b"corrupt")
    png(tmp_path / "img" / "3.png", 60)
    b = csv_list.build(filled("csv", {"root": str(tmp_path)}), ctx())
    with pytest.raises(UserError, match=r"5.png: cannot decode image.*labels.csv line 7"):
        for k in ("train", "val", "test"):
            for i in range(len(b.splits[k])):
                b.splits[k][i]
    with pytest.raises(UserError, match=r"5.png: cannot decode image"):
        csv_list.build(filled("csv", {"root": str(tmp_path), "verify": True}), ctx())
    b = csv_list.build(filled("csv", {"root": str(tmp_path), "on_bad_sample": "skip"}), ctx(tmp_path))
    items = [b.splits[k][i] for k in ("train", "val", "test") for i in range(len(b.splits[k]))]
    assert "img/5.png" not in {it["id"] for it in items}
    rows = list(csv.reader((tmp_path / "skipped.csv").open()))
    assert rows[0] == ["file", "reason", "source"] and any("5.png" in r[0] and "decode" in r[1] for r in rows)
    b = csv_list.build(filled("csv", {"root": str(tmp_path), "on_bad_sample": "skip", "verify": True}), ctx())
    assert sum(sizes(b)) == 11


def test_csv_split_column_and_empty_split(tmp_path: Path) -> None:
    rows = [[f"{i}.png", i % 2, ["train", "validate", "test"][i % 3]] for i in range(12)]
    for i in range(12):
        png(tmp_path / f"{i}.png")
    write_csv(tmp_path / "l.csv", ["file", "y", "set"], rows)
    b = csv_list.build(filled("csv", {"root": str(tmp_path), "csv": "l.csv", "path_column": "file", "label_column": "y",
                                      "split_column": "set"}), ctx())
    assert sizes(b) == [4, 4, 4]
    write_csv(tmp_path / "l2.csv", ["file", "y", "set"], [r[:2] + ["train"] for r in rows[:3]] + [
        ["3.png", 1, "test"]])
    with pytest.raises(UserError, match="'val' split came out empty"):
        csv_list.build(filled("csv", {"root": str(tmp_path), "csv": "l2.csv", "path_column": "file", "label_column": "y",
                                      "split_column": "set", "val_fraction": 0.0}), ctx())
    write_csv(tmp_path / "l3.csv", ["file", "y", "set"], [["0.png", 0, "holdout"]])
    with pytest.raises(UserError, match="l3.csv line 2: set 'holdout'"):
        csv_list.build(filled("csv", {"root": str(tmp_path), "csv": "l3.csv", "path_column": "file", "label_column": "y",
                                      "split_column": "set"}), ctx())


def test_cache_is_used_from_second_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medattn_plugins.datasets import file_dataset

    _csv_tree(tmp_path / "d")
    b = csv_list.build(filled("csv", {"root": str(tmp_path / "d")}), ctx(cache=tmp_path / "c"))
    ds = b.splits["train"]
    first = ds[0]["image"]
    assert len(list((tmp_path / "c").rglob("*.npy"))) == 1

    def no_decode(*a: object, **k: object) -> None:
        raise AssertionError("decoded again")

    monkeypatch.setattr(file_dataset, "read_image", no_decode)
    assert torch.allclose(first, ds[0]["image"], atol=1e-4)
    off = csv_list.build(filled("csv", {"root": str(tmp_path / "d"), "cache": False}), ctx(cache=tmp_path / "c"))
    with pytest.raises(AssertionError, match="decoded again"):
        off.splits["train"][0]


# -- cbis_ddsm --------------------------------------------------------------------------------------
MASS_HEADER = ["patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
               "abnormality type", "mass shape", "mass margins", "assessment", "pathology", "subtlety",
               "image file path", "cropped image file path", "ROI mask file path"]
CALC_HEADER = ["patient_id", "breast density", "left or right breast", "image view", "abnormality id",
               "abnormality type", "calc type", "calc distribution", "assessment", "pathology", "subtlety",
               "image file path", "cropped image file path", "ROI mask file path"]


def _cbis_tree(root: Path) -> None:
    """The NBIA downloader's folder names, which differ from the CSV paths."""
    rng = np.random.default_rng(0)
    rows: dict[tuple[str, str], list[list[object]]] = {}
    cases = [("mass", "Training", "P_00001", "BENIGN"), ("mass", "Training", "P_00004", "MALIGNANT"),
             ("mass", "Training", "P_00005", "BENIGN_WITHOUT_CALLBACK"), ("mass", "Training", "P_00007", "MALIGNANT"),
             ("mass", "Training", "P_00008", "BENIGN"), ("mass", "Training", "P_00009", "MALIGNANT"),
             ("mass", "Test", "P_00016", "MALIGNANT"), ("mass", "Test", "P_00017", "BENIGN"),
             ("calc", "Training", "P_00020", "MALIGNANT"), ("calc", "Training", "P_00021", "BENIGN"),
             ("calc", "Test", "P_00038", "BENIGN"), ("calc", "Test", "P_00039", "MALIGNANT")]
    for abn, split, pid, path in cases:
        case = f"{abn.capitalize()}-{split}_{pid}_LEFT_CC"
        su, se = f"1.3.6.1.4.1.9590.100.1.2.{rng.integers(1e9)}", f"1.3.6.1.4.1.9590.100.1.2.{rng.integers(1e9)}"
        full = rng.integers(0, 4000, (40, 30)).astype(np.uint16)
        write_dicom(root / "CBIS-DDSM" / case / "07-20-2016-DDSM-12345" / f"1.000000-full mammogram images-{se[-5:]}"
                    / "1-1.dcm", full)
        mask = np.zeros((40, 30), np.uint16)
        mask[10:20, 5:15] = 255
        roi_dir = root / "CBIS-DDSM" / f"{case}_1" / "08-29-2017-DDSM-55555" / "1.000000-ROI mask images-67890"
        write_dicom(roi_dir / "1-1.dcm", mask)
        write_dicom(roi_dir / "1-2.dcm", full[10:20, 5:15])  # the crop: smaller
        rs, rse = f"1.3.6.1.4.1.9590.100.1.2.{rng.integers(1e9)}", "1.3.6.1.4.1.9590.100.1.2.67890"
        rows.setdefault((abn, "train" if split == "Training" else "test"), []).append(
            [pid, 3, "LEFT", "CC", 1, abn, "OVAL", "CIRCUMSCRIBED", 4, path, 3,
             f"{case}/{su}/{se}/000000.dcm", f"{case}_1/{rs}/{rse}/000000.dcm",
             f"{case}_1/{rs}/{rse}/000001.dcm\n"])
    for (abn, split), r in rows.items():
        write_csv(root / f"{abn}_case_description_{split}_set.csv", MASS_HEADER if abn == "mass" else CALC_HEADER, r)


def test_cbis_tcia_full_with_masks(tmp_path: Path) -> None:
    root = tmp_path / "cbis"
    _cbis_tree(root)
    b = cbis_ddsm.build(filled("cbis_ddsm", {"root": str(root), "layout": "tcia", "val_fraction": 0.25}), ctx(tmp_path, 16, 1))
    assert b.has_masks and b.class_names == ["BENIGN", "MALIGNANT"]
    assert len(b.splits["test"]) == 4 and sum(sizes(b)) == 12
    it = b.splits["test"][0]
    assert it["mask"].shape == (1, 16, 16) and 0 < float(it["mask"].sum()) < 256
    assert it["image"].shape == (1, 16, 16) and it["group"].startswith("P_")
    labels = dict(zip(b.splits["test"].ids(), b.splits["test"].labels()))
    assert labels["Mass-Test_P_00016_LEFT_CC"] == 1 and labels["Mass-Test_P_00017_LEFT_CC"] == 0
    crop = cbis_ddsm.build(filled("cbis_ddsm", {"root": str(root), "image": "roi_crop", "abnormality": ["mass"],
                                                "val_fraction": 0.34}), ctx(None, 8, 3))
    assert not crop.has_masks and sum(sizes(crop)) == 8
    assert crop.splits["test"][0]["image"].shape == (3, 8, 8)


def test_cbis_tcia_bad_inputs(tmp_path: Path) -> None:
    root = tmp_path / "cbis"
    _cbis_tree(root)
    (root / "calc_case_description_test_set.csv").unlink()
    with pytest.raises(UserError, match="calc_case_description_test_set.csv: CBIS-DDSM case-description CSV not found"):
        cbis_ddsm.build(filled("cbis_ddsm", {"root": str(root)}), ctx())
    t = (root / "mass_case_description_test_set.csv")
    t.write_text(t.read_text().replace("MALIGNANT", "MALIGN"))
    with pytest.raises(UserError, match=r"mass_case_description_test_set.csv line 2: pathology 'MALIGN'"):
        cbis_ddsm.build(filled("cbis_ddsm", {"root": str(root), "abnormality": ["mass"]}), ctx())
    t.write_text(t.read_text().replace("pathology", "patho"))
    with pytest.raises(UserError, match=r"line 1: missing required column\(s\) \['pathology'\]; the header has"):
        cbis_ddsm.build(filled("cbis_ddsm", {"root": str(root), "abnormality": ["mass"]}), ctx())


def test_cbis_original_layout(tmp_path: Path) -> None:
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        for i in range(n):
            png(tmp_path / split / f"img{i}.png", 50 * i)
            (tmp_path / split / f"img{i}case.txt").write_text("MALIGNANT\n" if i % 2 else "BENIGN\n")
    b = cbis_ddsm.build(filled("cbis_ddsm", {"root": str(tmp_path), "layout": "original"}), ctx(None, 16, 3))
    assert b.class_names == ["BENIGN", "MALIGNANT"] and sizes(b) == [4, 2, 2]
    assert b.splits["train"][1]["label"] == 1 and b.splits["train"][0]["image"].shape == (3, 16, 16)
    (tmp_path / "val" / "img1case.txt").unlink()
    with pytest.raises(UserError, match="img1.png: its label file .*img1case.txt is missing"):
        cbis_ddsm.build(filled("cbis_ddsm", {"root": str(tmp_path), "layout": "original"}), ctx())


# -- mimic_cxr / chexpert ---------------------------------------------------------------------------
FINDINGS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
            "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
            "Pneumothorax", "Support Devices"]


def _mimic_tree(root: Path) -> None:
    lab_rows, split_rows, meta_rows = [], [], []
    values = ["1.0", "0.0", "-1.0", "", "1.0", "0.0"]
    for i in range(18):
        subject, study, dicom = f"1{i:07d}", f"5{i:07d}", f"d{i:04d}-aaaa"
        split = "test" if i >= 14 else ("validate" if i >= 11 else "train")
        v = values[i % 6]
        lab_rows.append([subject, study] + [v if f == "Pleural Effusion" else "" for f in FINDINGS])
        split_rows.append([dicom, study, subject, split])
        meta_rows.append([dicom, subject, study, "CHEST (PORTABLE AP)", "AP" if i % 3 else "PA", 20, 20,
                          21800506, 213014.531, "CHEST (PORTABLE AP)", "antero-posterior", "Erect"])
        png(root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg", 10 * i)
    write_csv(root / "mimic-cxr-2.0.0-chexpert.csv", ["subject_id", "study_id", *FINDINGS], lab_rows, gz=True)
    write_csv(root / "mimic-cxr-2.0.0-split.csv", ["dicom_id", "study_id", "subject_id", "split"], split_rows, gz=True)
    write_csv(root / "mimic-cxr-2.0.0-metadata.csv", ["dicom_id", "subject_id", "study_id",
              "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns", "StudyDate", "StudyTime",
              "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
              "PatientOrientationCodeSequence_CodeMeaning"], meta_rows, gz=False)


def test_mimic_jpg_policies_and_views(tmp_path: Path) -> None:
    _mimic_tree(tmp_path)
    b = mimic_cxr.build(filled("mimic_cxr", {"root": str(tmp_path)}), ctx(tmp_path))
    assert sizes(b) == [11, 3, 4] and b.class_names == ["negative", "Pleural Effusion"]
    ign = mimic_cxr.build(filled("mimic_cxr", {"root": str(tmp_path), "uncertain": "ignore", "blank": "ignore"}), ctx())
    assert sum(sizes(ign)) == 12
    one = mimic_cxr.build(filled("mimic_cxr", {"root": str(tmp_path), "uncertain": "one"}), ctx())
    assert sum(one.splits["train"].labels()) > sum(b.splits["train"].labels())
    ap = mimic_cxr.build(filled("mimic_cxr", {"root": str(tmp_path), "views": ["AP"]}), ctx())
    assert sum(sizes(ap)) == 12
    with pytest.raises(UserError, match="finding 'Effusion' is not a column"):
        mimic_cxr.build(filled("mimic_cxr", {"root": str(tmp_path), "finding": "Effusion"}), ctx())


def test_mimic_original_needs_trust(tmp_path: Path) -> None:
    for name in mimic_cxr.ORIGINAL_DIRS.values():
        d = tmp_path / name
        arr = np.array([[str(d / f"img{i}"), i % 2] for i in range(4)], dtype=object)
        for i in range(4):
            png(d / f"img{i}.jpg")
        with open(d / "Annotations.pickle", "wb") as fh:
            pickle.dump(arr, fh)
    with pytest.raises(UserError, match="trust_pickle.*runs any code"):
        mimic_cxr.build(filled("mimic_cxr", {"root": str(tmp_path), "layout": "original"}), ctx())
    b = mimic_cxr.build(filled("mimic_cxr", {"root": str(tmp_path), "layout": "original", "trust_pickle": True}), ctx())
    assert sizes(b) == [4, 4, 4] and b.splits["test"][1]["label"] == 1


def test_chexpert(tmp_path: Path) -> None:
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *FINDINGS]
    root = tmp_path / "CheXpert-v1.0-small"
    for name, n in (("train", 12), ("valid", 4)):
        rows = []
        for i in range(n):
            rel = f"CheXpert-v1.0-small/{name}/patient{i + (64541 if name == 'valid' else 0):05d}/study1/view1_frontal.jpg"
            png(tmp_path / rel)
            rows.append([rel, "Male", 60, "Frontal" if i % 4 else "Lateral", "AP" if i % 4 else "",
                         *[str(float(i % 2)) if f == "Pleural Effusion" else "" for f in FINDINGS]])
        write_csv(root / f"{name}.csv", header, rows)
    b = chexpert.build(filled("chexpert", {"root": str(root), "val_fraction": 0.25}), ctx())
    assert sizes(b) == [9, 3, 4]
    f = chexpert.build(filled("chexpert", {"root": str(root), "views": ["AP"], "val_fraction": 0.25}), ctx())
    assert len(f.splits["test"]) == 3


# -- oct, iris_pad, medmnist ------------------------------------------------------------------------
def test_oct_kermany_and_noor(tmp_path: Path) -> None:
    k = tmp_path / "OCT2017"
    for split in ("train", "test"):
        for cls in oct.KERMANY:
            for p in range(4):
                png(k / split / cls / f"{cls}-{1000 + p + (0 if split == 'train' else 50)}-{p}.jpeg")
    b = oct.build(filled("oct", {"root": str(tmp_path), "val_fraction": 0.25}), ctx())
    assert b.class_names == oct.KERMANY and len(b.splits["test"]) == 16
    b3 = oct.build(filled("oct", {"root": str(k), "classes": ["CNV", "DME", "NORMAL"], "val_fraction": 0.25}), ctx())
    assert len(b3.class_names) == 3 and len(b3.splits["test"]) == 12
    n = tmp_path / "noor"
    for cls in ("AMD", "DME", "NORMAL"):
        for s in range(5):
            for j in range(2):
                png(n / cls / f"{cls}{s + 1}" / f"{j}.tif")
    b = oct.build(filled("oct", {"root": str(n), "layout": "noor", "val_fraction": 0.2, "test_fraction": 0.2}), ctx(tmp_path))
    assert sum(sizes(b)) == 30
    doc = json.loads((tmp_path / "splits.json").read_text())
    g = [set(doc["groups"][s]) for s in ("train", "val", "test")]
    assert not (g[0] & g[1] or g[0] & g[2] or g[1] & g[2])


def test_iris_layouts(tmp_path: Path) -> None:
    for cls in ("live", "spoof"):
        for i in range(6):
            png(tmp_path / "f" / cls / f"{cls}_{i}.png")
            png(tmp_path / "n" / f"s{i}_{'Live' if cls == 'live' else 'print'}.png")
    b = iris_pad.build(filled("iris_pad", {"root": str(tmp_path / "f"), "val_fraction": 0.34, "test_fraction": 0.33}), ctx())
    assert b.class_names == ["live", "spoof"] and sum(sizes(b)) == 12
    b = iris_pad.build(filled("iris_pad", {"root": str(tmp_path / "n"), "layout": "names", "val_fraction": 0.34,
                                           "test_fraction": 0.33}), ctx())
    assert sorted(sum((b.splits[s].labels() for s in b.splits), [])) == [0] * 6 + [1] * 6
    write_csv(tmp_path / "f" / "list.csv", ["path", "label"],
              [[f"{c}/{c}_{i}.png", c if i % 2 else int(c == "spoof")] for c in ("live", "spoof") for i in range(6)])
    b = iris_pad.build(filled("iris_pad", {"root": str(tmp_path / "f"), "layout": "csv", "csv": "list.csv", "val_fraction": 0.34,
                                           "test_fraction": 0.33}), ctx())
    assert sum(sizes(b)) == 12
    with pytest.raises(UserError, match="csv is required"):
        iris_pad.build(filled("iris_pad", {"root": str(tmp_path / "f"), "layout": "csv"}), ctx())


def test_medmnist(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {f"{s}_images": rng.integers(0, 255, (n, 28, 28), dtype=np.uint8) for s, n in
              (("train", 10), ("val", 4), ("test", 4))}
    arrays |= {f"{s}_labels": (np.arange(n) % 2)[:, None] for s, n in (("train", 10), ("val", 4), ("test", 4))}
    np.savez(tmp_path / "pneumoniamnist.npz", **arrays)
    b = medmnist.build(filled("medmnist_npz", {"root": str(tmp_path), "file": "pneumoniamnist.npz"}), ctx(None, 32, 3))
    assert sizes(b) == [10, 4, 4] and b.splits["train"][1]["image"].shape == (3, 32, 32)
    del arrays["val_labels"]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(UserError, match=r"missing array\(s\) \['val_labels'\]"):
        medmnist.build(filled("medmnist_npz", {"root": str(tmp_path), "file": "bad.npz"}), ctx())
