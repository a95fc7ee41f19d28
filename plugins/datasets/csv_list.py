"""``csv``: images listed in a CSV file with path and label columns, optional split and group columns; any other
column (site, device, age band, ...) is metadata that test.subgroups can group the test images by."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from medattn.api import DataBundle, DataContext, UserError

from .file_dataset import Sample, SkipLog, build_bundle, check_files, options_from
from .image_folder import require_dir
from .tables import Table

SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "validate": "val", "test": "test", "testing": "test"}


def build(params: dict[str, Any], ctx: DataContext) -> DataBundle:
    """Factory of ``csv``."""
    root = require_dir(params["root"])
    csv_path = Path(str(params["csv"]))
    csv_path = csv_path if csv_path.is_absolute() else root / csv_path
    if not csv_path.is_file():
        raise UserError(f"{csv_path}: CSV not found (dataset.params.csv)")
    pcol = params["path_column"]
    lcol = params["label_column"]
    scol = params.get("split_column") or None  # split_column, group_column, image_root, classes: optional
    gcol = params.get("group_column") or None
    mcol = params.get("mask_column") or None
    ccol = params.get("confound_mask_column") or None
    columns = [c for c in (pcol, lcol, scol, gcol, mcol, ccol) if c]  # the others are metadata (test.subgroups)
    table = Table(csv_path, columns)
    image_root = Path(str(params["image_root"])) if params.get("image_root") else csv_path.parent
    if not image_root.is_absolute():
        image_root = root / image_root
    rows = list(table.rows())
    if not rows:
        raise UserError(f"{csv_path}: CSV has a header but no rows")
    given = params.get("classes")
    classes = [str(c) for c in given] if given else sorted({r[lcol].strip() for _, r in rows})
    index = {c: i for i, c in enumerate(classes)}
    opts = options_from(params, ctx)
    skips = SkipLog(ctx.run_dir, ctx.log)
    parts: dict[str, list[Sample]] = {}
    for line, r in rows:
        where = table.where(line)
        label = r[lcol].strip()
        if label not in index and given and label.isdigit() and int(label) < len(classes):
            label = classes[int(label)]  # numeric labels index the given classes
        if label not in index:
            raise UserError(f"{where}: label '{label}' is not one of the classes {classes}")
        split = "train"
        if scol:
            split = SPLIT_NAMES.get(r[scol].strip().lower(), "")
            if not split:
                raise UserError(f"{where}: {scol} '{r[scol]}' is not train, val or test")
        rel = r[pcol].strip()
        if not rel:
            raise UserError(f"{where}: empty {pcol}")
        path = Path(rel) if Path(rel).is_absolute() else image_root / rel
        group = r[gcol].strip() if gcol else rel
        sample = Sample(str(path), index[label], rel, group or rel, where,
                        meta={k: str(v).strip() for k, v in r.items() if k not in columns})
        mask = r[mcol].strip() if mcol else ""
        if mask:
            sample.mask_paths = [str(Path(mask) if Path(mask).is_absolute() else image_root / mask)]
        confound = r[ccol].strip() if ccol else ""
        if confound:
            sample.confound_paths = [str(Path(confound) if Path(confound).is_absolute() else image_root / confound)]
        parts.setdefault(split, []).append(sample)
    if "train" not in parts:
        raise UserError(f"{csv_path}: no row has {scol} = train")
    for k in parts:
        parts[k] = check_files(parts[k], opts, skips, params["verify"])
    for c, name in enumerate(classes):
        if not any(s.label == c for v in parts.values() for s in v):
            raise UserError(f"{csv_path}: class '{name}' has no samples")
    return build_bundle("csv", parts, classes, params, ctx, opts, skips, has_masks=mcol is not None,
                        info={"csv": str(csv_path)}, source=str(csv_path), has_confound_masks=ccol is not None)
