"""Built-in dataset plugins (records only: factories are imported when a dataset is built)."""
from __future__ import annotations

import copy
from typing import Any

from medattn.api import Component, hookimpl

_PKG = "medattn_plugins.datasets"


def _p(type_: Any, description: str, default: Any = None, **extra: Any) -> dict[str, Any]:
    prop: dict[str, Any] = {"description": description, **extra}
    if type_ is not None:
        prop["type"] = type_
    if default is not None:
        prop["default"] = default
    return prop


ROOT = _p("string", "Data root folder (required): set with --set dataset.params.root=/path", format="path")


def _common(split: bool = True, carve: tuple[float, float] = (0.15, 0.15)) -> dict[str, Any]:
    props: dict[str, Any] = {
        "on_bad_sample": _p("string", "Missing / corrupt image: stop with an error, or skip it (listed in "
                            "skipped.csv of the run directory)", "error", enum=["error", "skip"]),
        "verify": _p("boolean", "Open every file's header at start-up to find corrupt images before "
                     "training", False),
        "cache": _p("boolean", "Cache decoded, resized images on disk (in the core's cache_dir) from the "
                    "second epoch on", True),
        "dicom_voi": _p("boolean", "DICOM: apply the VOI LUT / window stored in the file (else min-max "
                        "of the modality values)", True),
        "resize": _p("string", "stretch: each side to image_size (the papers); pad: keep the aspect ratio, "
                     "fit inside image_size and pad with black at the bottom / right (full-resolution "
                     "mammograms)", "stretch", enum=["stretch", "pad"]),
        "val_fraction": _p("number", "Fraction carved from train (by patient) for validation when the "
                           "release has no validation split", carve[0], minimum=0, maximum=0.9),
        "test_fraction": _p("number", "Fraction carved from train (by patient) for test when the release "
                            "has no test split", carve[1], minimum=0, maximum=0.9),
        "calibration_fraction": _p("number", "Fraction of the train split (after any val / test carve) moved, by "
                                   "patient and stratified by class, into a `calibration` split for "
                                   "test.conformal.split: calibration (0: none); training, model selection and "
                                   "temperature scaling never see it", 0, minimum=0, maximum=0.5),
    }
    if split:
        props["split"] = _p("string", "official: the release's split lists (missing ones carved from "
                            "train); grouped: pool everything and re-split by patient with the experiment's seed",
                            "official", enum=["official", "grouped"])
    return props


def _schema(props: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": props}
    if required:
        schema["required"] = list(required)
    return schema


def params_for(schema: dict[str, Any], params: dict[str, Any], **fixed: Any) -> dict[str, Any]:
    """Params for another dataset's reader (oct reading through image_folder's, say): the keys of ``params``
    that ``schema`` has, ``fixed`` on top, and ``schema``'s defaults for the rest, as the core fills them."""
    props = schema["properties"]
    out = {k: copy.deepcopy(p["default"]) for k, p in props.items() if "default" in p}
    out.update({k: v for k, v in params.items() if k in props})
    out.update(fixed)
    return out


def _cxr_label_props(default_finding: str = "Pleural Effusion") -> dict[str, Any]:
    return {
        "finding": _p("string", "The CheXpert label column used as the binary target", default_finding),
        "uncertain": _p("string", "What -1 (uncertain) means: zero (negative), one (positive) or ignore "
                        "(drop the image)", "zero", enum=["zero", "one", "ignore"]),
        "blank": _p("string", "What a blank label means: zero (negative, the CheXpert convention) or "
                    "ignore (drop the image)", "zero", enum=["zero", "ignore"]),
        "views": _p("array", "Keep only these view positions (e.g. [AP], [PA, AP]); empty keeps all",
                    [], items={"type": "string"}),
    }


SYNTHETIC = _schema({
    "n_train": _p("integer", "Number of training images", 320, minimum=1),
    "n_val": _p("integer", "Number of validation images", 80, minimum=1),
    "n_test": _p("integer", "Number of test images", 80, minimum=1),
    "n_calibration": _p("integer", "Number of images of a `calibration` split drawn like the test split (0: none): "
                        "a conformal calibration split (test.conformal.split: calibration) that training, model "
                        "selection and temperature scaling never see", 0, minimum=0),
    "difficulty": _p("number", "0 = high-contrast lesions and little clutter; 1 = faint lesions, more "
                     "noise, streaks and round distractors", 0.5, minimum=0, maximum=1),
    "lesion_size": _p("number", "Lesion radius as a fraction of the image side", 0.12, minimum=0.03,
                      maximum=0.25),
    "decoys": _p("number", "Expected number of fainter lesions of the other class's shape per image (where to "
                 "look then matters: the most conspicuous lesion decides the label)", 0, minimum=0, maximum=6),
    "shortcut": {
        "description": "A bright corner marker, a shortcut a model can learn instead of the lesion. A number: the "
                       "share of the train / val / test images in which the marker agrees with the label (0: no "
                       "marker), with a `shifted` test split of other images where it agrees in half. Or {agree, "
                       "strength, splits}: the agreement in train / val / test, the marker's brightness, and extra "
                       "test splits showing the test images with the marker at another agreement (flipped: 0.0, "
                       "the marker in the class-0 images; shifted: 0.5; nomarker: none, no marker)",
        "default": 0,
        "anyOf": [
            {"type": "number", "minimum": 0, "maximum": 1},
            {"type": "object", "additionalProperties": False, "required": ["agree"], "properties": {
                "agree": {"type": "number", "minimum": 0, "maximum": 1,
                          "description": "share of the train / val / test images whose marker agrees with the "
                                         "label (1: a class-1 image always has it, a class-0 image never)"},
                "strength": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.35,
                             "description": "brightness the marker adds"},
                "splits": {"type": "object", "default": {},
                           "propertyNames": {"pattern": "^[A-Za-z][A-Za-z0-9_-]*$",
                                             "not": {"enum": ["train", "val", "test", "calibration"]}},
                           "additionalProperties": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                           "description": "extra test splits: name -> agreement of the marker on the test images "
                                          "(null: no marker)"},
            }},
        ],
    },
    "seed_offset": _p("integer", "Added to the image seed to draw a different data set", 0),
    "sites": _p("integer", "Acquisition sites (0: none). Each image gets a site (metadata column `site`, for "
                "test.subgroups) drawn independently of its label; site 0 shows images as generated, later sites "
                "with lower contrast (55% at the last)", 0, minimum=0, maximum=8),
})

IMAGE_FOLDER = _schema({
    "root": ROOT,
    "classes": _p("array", "Class folder names in label order (default: sorted folder names of train)",
                  items={"type": "string"}, minItems=2),
    "extensions": _p("array", "File extensions to read",
                     [".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom"],
                     items={"type": "string"}, minItems=1),
    "group_regex": _p("string", "Regex whose first group in the file name is the patient id (default: "
                      "each file is its own group)"),
    "nested": _p("boolean", "Images may sit in sub-folders of a class folder (e.g. one folder per patient); "
                 "off: a class folder holding only folders is an error (usually a root one level too high)",
                 False),
    "masks": _p("string", "Optional folder of lesion masks (relative to root, or absolute) laid out like the "
                "images: the mask of ROOT/train/benign/a.png is MASKS/train/benign/a.<any image extension>; an "
                "image without one gets an empty mask (it trains without mask terms)", format="path"),
    "confound_masks": _p("string", "Optional folder of confound masks, laid out like `masks`: where a known "
                         "shortcut lives in each image (a ruler, a hospital token, burnt-in text), for rrr "
                         "region: confound and the energy_in_confound score; an image without one gets an empty "
                         "confound mask (skipped by the confound terms)", format="path"),
    "metadata": _p("string", "Optional CSV of per-image metadata (relative to root, or absolute): a key column "
                   "(metadata_key) naming each image, and one column per field (site, device, age band, view ...) "
                   "that test.subgroups can group the test images by; an image without a row gets blank fields",
                   format="path"),
    "metadata_key": _p("string", "The column of `metadata` that names each image: its path relative to root "
                       "(train/benign/a.png, with or without the extension) or, where names are unique, its file "
                       "name", "image"),
    **_common(),
}, ("root",))

CXR16 = _schema({
    "val_fraction": _p("number", "Fraction of the 16 images (by patient) for validation", 0.25,
                       minimum=0.05, maximum=0.45),
    "test_fraction": _p("number", "Fraction of the 16 images (by patient) for test", 0.25, minimum=0.05,
                        maximum=0.45),
    "cache": _p("boolean", "Cache decoded images on disk", False),
})

CBIS = _schema({
    "root": ROOT,
    "layout": _p("string", "original: the original code's train/val/test folders of <stem>.png + <stem>case.txt; tcia: the "
                 "official release (case-description CSVs + DICOM tree)", "tcia", enum=["original", "tcia"]),
    "image": _p("string", "tcia: full mammogram (with ROI masks) or the released ROI crop", "full",
                enum=["full", "roi_crop"]),
    "abnormality": _p("array", "tcia: which case-description CSVs to use", ["mass", "calc"],
                      items={"type": "string", "enum": ["mass", "calc"]}, minItems=1),
    "csv_dir": _p("string", format="path", description="tcia: folder of the case-description CSVs (default: root, then searched "
                  "below root)"),
    **_common(carve=(0.15, 0.0)),
}, ("root",))

MIMIC = _schema({
    "root": ROOT,
    "layout": _p("string", "original: the original code's {Train,Val,Test}_images_AP_resized/Annotations.pickle; jpg: the "
                 "MIMIC-CXR-JPG release", "jpg", enum=["original", "jpg"]),
    "trust_pickle": _p("boolean", "original layout: allow loading Annotations.pickle (a pickle runs code "
                       "when loaded: only for files you trust)", False),
    **_cxr_label_props(),
    **_common(),
}, ("root",))

CHEXPERT = _schema({
    "root": ROOT,
    **_cxr_label_props(),
    **_common(carve=(0.1, 0.0)),
}, ("root",))

OCT = _schema({
    "root": ROOT,
    "layout": _p("string", "kermany: train/test/{CNV,DME,DRUSEN,NORMAL}/*.jpeg; noor: "
                 "<class>/<subject>/<images>", "kermany", enum=["kermany", "noor"]),
    "classes": _p("array", "Class folders in label order (default: all 4 Kermany classes, or the sorted "
                  "Noor class folders; give 3 to drop one)", items={"type": "string"}, minItems=2),
    **_common(carve=(0.2, 0.2)),
}, ("root",))

IRIS = _schema({
    "root": ROOT,
    "layout": _p("string", "folders: live/ and spoof/ (optionally under train/val/test); csv: a list "
                 "file; names: label from the file name ('live' in it = live)", "folders",
                 enum=["folders", "csv", "names"]),
    "csv": _p("string", "layout csv: the list file (relative to root), columns path,label"),
    "group_regex": _p("string", "Regex whose first group in the file name is the subject id"),
    **_common(),
}, ("root",))

CSV = _schema({
    "root": ROOT,
    "csv": _p("string", "The list file, relative to root (or absolute)", "labels.csv"),
    "path_column": _p("string", "Column with the image path (relative to image_root)", "path"),
    "label_column": _p("string", "Column with the label", "label"),
    "split_column": _p("string", "Optional column with train/val/test (else carved with the experiment's seed)"),
    "group_column": _p("string", "Optional column with the patient / group id"),
    "mask_column": _p("string", "Optional column with the path of each image's lesion mask (relative to "
                      "image_root); a blank cell is an empty mask (the image trains without mask terms)"),
    "confound_mask_column": _p("string", "Optional column with the path of each image's confound mask: where a "
                               "known shortcut lives (a ruler, a token, burnt-in text); a blank cell is an empty "
                               "confound mask (skipped by the confound terms)"),
    "image_root": _p("string", "Folder the paths are relative to (default: the CSV's folder)", format="path"),
    "classes": _p("array", "Label values in class order (default: sorted distinct labels)",
                  items={"type": ["string", "integer"]}, minItems=2),
    **_common(split=True),
}, ("root",))

MEDMNIST = _schema({
    "root": ROOT,
    "file": _p("string", "The .npz file (relative to root), e.g. pneumoniamnist.npz", "data.npz"),
    "classes": _p("array", "Class names in label order (default: the label values as text)",
                  items={"type": "string"}),
    "task_column": _p("integer", "For multi-label sets: which label column is the binary target", 0,
                      minimum=0),
})


@hookimpl
def medattn_components() -> list[Component]:
    """The built-in datasets."""
    def c(name: str, module: str, description: str, schema: dict[str, Any], func: str = "build") -> Component:
        return Component(kind="dataset", name=name, factory=f"{_PKG}.{module}:{func}", description=description,
                         params_schema=schema)

    records = [
        c("synthetic_lesions", "synthetic_lesions", "Generated tissue-like images: round vs spiculated "
          "lesion, with ground-truth masks (no download)", SYNTHETIC),
        c("image_folder", "image_folder", "Class sub-folders, optionally under train/ val/ test/",
          IMAGE_FOLDER),
        c("cxr16", "cxr16", "16 embedded chest X-rays (NORMAL / PNEUMONIA), for smoke tests", CXR16),
        c("cbis_ddsm", "cbis_ddsm", "CBIS-DDSM mammography, benign vs malignant: the original code's PNG folders or the "
          "TCIA release (CSVs + DICOM, ROI masks)", CBIS),
        c("mimic_cxr", "mimic_cxr", "MIMIC-CXR(-JPG) chest X-rays, one CheXpert finding (the original code's pickles or "
          "the JPG release)", MIMIC),
        c("chexpert", "chexpert", "CheXpert train.csv / valid.csv, one finding, uncertainty policy",
          CHEXPERT),
        c("oct", "oct", "Retinal OCT B-scans: Kermany OCT2017 or Noor subject folders", OCT),
        c("iris_pad", "iris_pad", "Iris presentation attack detection: live (0) vs spoof (1)", IRIS),
        c("csv", "csv_list", "Images listed in a CSV (path, label, optional split and group columns)", CSV),
        c("medmnist_npz", "medmnist", "A MedMNIST .npz file (train/val/test images and labels)", MEDMNIST),
    ]
    return records
