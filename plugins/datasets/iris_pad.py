"""``iris_pad``: iris presentation attack detection, live = 0, spoof = 1 (the AG-PAD convention)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from medattn.api import DataBundle, DataContext, UserError

from . import CSV, csv_list, params_for
from .file_dataset import Sample, SkipLog, build_bundle, check_files, options_from
from .image_folder import IMAGE_EXTENSIONS, build_from_root, folder_params, group_of, list_images, require_dir

CLASSES = ["live", "spoof"]


def build(params: dict[str, Any], ctx: DataContext) -> DataBundle:
    """Factory of ``iris_pad``."""
    root = require_dir(params["root"])
    layout = params["layout"]
    if layout == "csv":
        if not params.get("csv"):  # optional in the schema: only this layout needs it
            raise UserError("dataset.params.csv is required with iris_pad layout csv")
        return csv_list.build(params_for(CSV, params, classes=CLASSES), ctx)
    if layout == "names":
        return _build_names(root, params, ctx)
    return build_from_root(root, folder_params(params, classes=CLASSES), ctx, "iris_pad")


def _build_names(root: Path, params: dict[str, Any], ctx: DataContext) -> DataBundle:
    """predict.py's rule: a file whose name contains 'live' (any case) is live, anything else spoof."""
    opts = options_from(params, ctx)
    skips = SkipLog(ctx.run_dir, ctx.log)
    files = list_images(root, IMAGE_EXTENSIONS)
    if not files:
        raise UserError(f"{root}: no images found")
    pattern = params.get("group_regex") or None
    samples = []
    for f in files:
        rel = f.relative_to(root).as_posix()
        label = 0 if re.search("live", f.name, re.IGNORECASE) else 1
        samples.append(Sample(str(f), label, rel, group_of(f.name, pattern) if pattern else rel))
    samples = check_files(samples, opts, skips, params["verify"])
    return build_bundle("iris_pad", {"train": samples}, CLASSES, params, ctx, opts, skips,
                        info={"layout": "names"}, source=f"iris_pad at {root}")
