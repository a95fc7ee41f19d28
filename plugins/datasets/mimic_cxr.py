"""``mimic_cxr``: the original code's Annotations.pickle folders, or the MIMIC-CXR-JPG release as downloaded."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from medattn.api import DataBundle, DataContext, UserError

from .chest_labels import binary_label, check_finding
from .file_dataset import Sample, SkipLog, build_bundle, check_files, options_from
from .image_folder import require_dir
from .tables import Table, find_table

ORIGINAL_DIRS = {"train": "Train_images_AP_resized", "val": "Val_images_AP_resized", "test": "Test_images_AP_resized"}
SPLITS = {"train": "train", "validate": "val", "test": "test"}
PREFIX = "mimic-cxr-2.0.0-"


def build(params: dict[str, Any], ctx: DataContext) -> DataBundle:
    """Factory of ``mimic_cxr``."""
    root = require_dir(params["root"])
    if params["layout"] == "original":
        return _build_original(root, params, ctx)
    return _build_jpg(root, params, ctx)


def _build_original(root: Path, params: dict[str, Any], ctx: DataContext) -> DataBundle:
    if not params["trust_pickle"]:
        raise UserError("dataset.params.trust_pickle: the mimic_cxr original layout stores its labels in "
                        "Annotations.pickle, and loading a pickle runs any code it contains. Set "
                        "trust_pickle: true only if you made these files or trust their source")
    import pickle

    import numpy as np

    opts = options_from(params, ctx)
    skips = SkipLog(ctx.run_dir, ctx.log)
    parts = {}
    for split, name in ORIGINAL_DIRS.items():
        f = root / name / "Annotations.pickle"
        if not f.is_file():
            raise UserError(f"{f}: not found (mimic_cxr layout original expects {', '.join(ORIGINAL_DIRS.values())} "
                            "folders each with Annotations.pickle)")
        try:
            with open(f, "rb") as fh:
                arr = np.asarray(pickle.load(fh), dtype=object)  # noqa: S301 - trust_pickle is set
        except Exception as exc:
            raise UserError(f"{f}: cannot load the pickle: {type(exc).__name__}: {exc}") from None
        if arr.ndim != 2 or arr.shape[1] < 2:
            raise UserError(f"{f}: expected an (N, 2) array of [path without .jpg, 0/1 label], got shape "
                            f"{arr.shape}")
        samples = []
        for i, (p, lab) in enumerate(arr[:, :2]):
            where = f"{f} row {i}"
            try:
                label = int(float(lab))
            except (TypeError, ValueError):
                raise UserError(f"{where}: label {lab!r} is not 0 or 1") from None
            if label not in (0, 1):
                raise UserError(f"{where}: label {lab!r} is not 0 or 1")
            p = str(p)
            cands = [Path(p + ".jpg"), root / name / (Path(p).name + ".jpg"), root / (p + ".jpg")]
            path = next((c for c in cands if c.is_file()), cands[1])
            m = re.search(r"p(\d{8})", p)
            group = m.group(1) if m else f"{split}/{Path(p).name}"
            samples.append(Sample(str(path), label, f"{split}/{Path(p).name}", group, where))
        parts[split] = check_files(samples, opts, skips, params["verify"])
    return build_bundle("mimic_cxr", parts, ["negative", params["finding"]], params,
                        ctx, opts, skips, info={"layout": "original", "root": str(root)},
                        source=f"mimic_cxr at {root}")


def _build_jpg(root: Path, params: dict[str, Any], ctx: DataContext) -> DataBundle:
    finding = params["finding"]
    views = [v.upper() for v in params["views"]]
    labels_t = Table(find_table(root, PREFIX + "chexpert.csv"), ["subject_id", "study_id"])
    check_finding(finding, labels_t.header, labels_t.path, 2)
    split_t = Table(find_table(root, PREFIX + "split.csv"), ["dicom_id", "study_id", "subject_id", "split"])
    study_label: dict[str, tuple[int | None, str]] = {}
    for line, r in labels_t.rows():
        study_label[r["study_id"].strip()] = (binary_label(r[finding], params, labels_t.where(line)),
                                              labels_t.where(line))
    view_of: dict[str, str] = {}
    if views:
        meta_t = Table(find_table(root, PREFIX + "metadata.csv"), ["dicom_id", "ViewPosition"])
        view_of = {r["dicom_id"].strip(): r["ViewPosition"].strip().upper() for _, r in meta_t.rows()}
    opts = options_from(params, ctx)
    skips = SkipLog(ctx.run_dir, ctx.log)
    parts: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    dropped = {"no_label": 0, "policy": 0, "view": 0}
    files = root / "files" if (root / "files").is_dir() else root
    for line, r in split_t.rows():
        where = split_t.where(line)
        split = SPLITS.get(r["split"].strip())
        if split is None:
            raise UserError(f"{where}: split '{r['split']}' is not one of {sorted(SPLITS)}")
        dicom, study, subject = r["dicom_id"].strip(), r["study_id"].strip(), r["subject_id"].strip()
        if views and view_of.get(dicom, "") not in views:
            dropped["view"] += 1
            continue
        lab = study_label.get(study)
        if lab is None:
            dropped["no_label"] += 1
            continue
        if lab[0] is None:
            dropped["policy"] += 1
            continue
        path = files / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"
        parts[split].append(Sample(str(path), lab[0], f"p{subject}/s{study}/{dicom}", subject, where))
    for k in parts:
        parts[k] = check_files(parts[k], opts, skips, params["verify"])
    info = {"layout": "jpg", "finding": finding, "views": views, "dropped": dropped, "root": str(root)}
    return build_bundle("mimic_cxr", parts, ["negative", finding], params, ctx, opts, skips, info=info,
                        source=f"mimic_cxr at {root}")
