"""``chexpert``: CheXpert(-v1.0-small) train.csv / valid.csv; valid is the test split, val is carved."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from medattn.api import DataBundle, DataContext, UserError

from .chest_labels import binary_label, check_finding
from .file_dataset import Sample, SkipLog, build_bundle, check_files, options_from
from .image_folder import group_of, require_dir
from .tables import Table

REQUIRED = ["Path", "Frontal/Lateral", "AP/PA"]


def _resolve(root: Path, rel: str) -> Path:
    """CSV paths start with the release folder (CheXpert-v1.0-small/...): accept root above or at it."""
    rel = rel.strip().replace("\\", "/")
    cands = [root / rel, root.parent / rel]
    if "/" in rel:
        cands.append(root / rel.split("/", 1)[1])
    return next((c for c in cands if c.exists()), cands[-1])


def build(params: dict[str, Any], ctx: DataContext) -> DataBundle:
    """Factory of ``chexpert``."""
    root = require_dir(params["root"])
    finding = params["finding"]
    views = [v.upper() for v in params["views"]]
    opts = options_from(params, ctx)
    skips = SkipLog(ctx.run_dir, ctx.log)
    parts: dict[str, list[Sample]] = {}
    for split, name in (("train", "train.csv"), ("test", "valid.csv")):
        f = root / name
        if not f.is_file():
            hits = sorted(root.glob(f"*/{name}"))
            if not hits:
                raise UserError(f"{f}: CheXpert {name} not found under dataset.params.root")
            f = hits[0]
        t = Table(f, REQUIRED)
        check_finding(finding, t.header, t.path, 5)
        samples = []
        for line, r in t.rows():
            where = t.where(line)
            lab = binary_label(r[finding], params, where)
            if lab is None:
                continue
            view = r["AP/PA"].strip().upper() if r["Frontal/Lateral"].strip() == "Frontal" else "LATERAL"
            if views and view not in views:
                continue
            rel = r["Path"].strip()
            samples.append(Sample(str(_resolve(root, rel)), lab, rel, group_of(rel, r"(patient\d+)"), where))
        parts[split] = check_files(samples, opts, skips, params["verify"])
    return build_bundle("chexpert", parts, ["negative", finding], params, ctx, opts, skips,
                        info={"finding": finding, "views": views, "root": str(root)},
                        source=f"chexpert at {root}")
