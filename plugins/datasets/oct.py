"""``oct``: Kermany OCT2017 (train/test/<CLASS>/<CLASS>-<patient>-<n>.jpeg) or Noor (<class>/<subject>/*)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from medattn.api import DataBundle, DataContext, UserError

from .file_dataset import Sample, SkipLog, build_bundle, check_files, options_from
from .image_folder import (
    IMAGE_EXTENSIONS,
    build_from_root,
    find_split_dirs,
    folder_params,
    list_images,
    require_dir,
)

KERMANY = ["CNV", "DME", "DRUSEN", "NORMAL"]
KERMANY_PATIENT = r"^[A-Za-z]+-(\d+)-"


def build(params: dict[str, Any], ctx: DataContext) -> DataBundle:
    """Factory of ``oct``."""
    root = require_dir(params["root"])
    if params["layout"] == "noor":
        return _build_noor(root, params, ctx)
    base = root
    if "train" not in find_split_dirs(base):
        subs = [c for c in root.iterdir() if c.is_dir() and "train" in find_split_dirs(c)]
        if not subs:
            raise UserError(f"{root}: no train/ folder found (oct layout kermany expects "
                            f"{root}/train/{{CNV,DME,DRUSEN,NORMAL}} and {root}/test/...)")
        base = subs[0]
    # classes has no schema default: it depends on the layout (Kermany's four, or Noor's folders)
    p = folder_params(params, classes=params.get("classes") or KERMANY, group_regex=KERMANY_PATIENT)
    return build_from_root(base, p, ctx, "oct")


def _build_noor(root: Path, params: dict[str, Any], ctx: DataContext) -> DataBundle:
    classes = params.get("classes") or sorted(c.name for c in root.iterdir()
                                              if c.is_dir() and not c.name.startswith("."))
    if len(classes) < 2:
        raise UserError(f"{root}: expected class folders (e.g. AMD, DME, NORMAL) each with subject folders")
    opts = options_from(params, ctx)
    skips = SkipLog(ctx.run_dir, ctx.log)
    samples: list[Sample] = []
    for label, cls in enumerate(classes):
        cdir = root / cls
        if not cdir.is_dir():
            raise UserError(f"{cdir}: class folder '{cls}' not found (classes: {classes})")
        subjects = sorted(s for s in cdir.iterdir() if s.is_dir())
        if not subjects:
            raise UserError(f"{cdir}: class '{cls}' has no subject folders")
        for subj in subjects:
            for f in list_images(subj, IMAGE_EXTENSIONS):
                rel = f.relative_to(root).as_posix()
                samples.append(Sample(str(f), label, rel, f"{cls}/{subj.name}"))
        if not any(s.label == label for s in samples):
            raise UserError(f"{cdir}: class '{cls}' has no images")
    samples = check_files(samples, opts, skips, params["verify"])
    return build_bundle("oct", {"train": samples}, list(classes), params, ctx, opts, skips,
                        info={"layout": "noor", "root": str(root)}, source=f"oct at {root}")
