"""``image_folder``: class sub-folders, optionally inside train/ val/ test/ split folders."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from medattn.api import DataBundle, DataContext, UserError

from . import IMAGE_FOLDER, params_for
from .file_dataset import Sample, SkipLog, build_bundle, check_files, options_from
from .tables import Table

IMAGE_EXTENSIONS = tuple(IMAGE_FOLDER["properties"]["extensions"]["default"])
SPLIT_DIRS = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}


def require_dir(root: Any, field: str = "dataset.params.root") -> Path:
    """The data root as a Path, or a UserError naming the field."""
    if root in (None, "", "REQUIRED"):
        raise UserError(f"{field} is required: set it in the experiment file or with --set {field}=/path")
    p = Path(str(root)).expanduser()
    if not p.is_dir():
        raise UserError(f"{field}: data directory not found: {p}")
    return p


def group_of(name: str, pattern: str | None) -> str:
    """The patient/group id: the first regex group (or whole match) of ``pattern`` in ``name``, else name."""
    if pattern:
        m = re.search(pattern, name)
        if m:
            return m.group(1) if m.groups() else m.group(0)
    return name


def list_images(folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted, hidden files ignored)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in extensions
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def find_split_dirs(root: Path) -> dict[str, Path]:
    """The train/val/test folders present under root (case-insensitive names)."""
    found: dict[str, Path] = {}
    children = {c.name.lower(): c for c in root.iterdir() if c.is_dir()}
    for split, names in SPLIT_DIRS.items():
        for n in names:
            if n in children:
                found[split] = children[n]
                break
    return found


def _check_flat(cdir: Path, cls: str, files: list[Path]) -> None:
    """Without ``nested``, images must sit directly in their class folder; a class folder of folders usually
    means the root is one level too high (the parent folders became the classes)."""
    if any(f.parent == cdir for f in files) or not files:
        return
    subs = sorted(c.name for c in cdir.iterdir() if c.is_dir() and not c.name.startswith("."))
    raise UserError(f"{cdir}: class folder '{cls}' holds only folders ({', '.join(subs[:6])}"
                    f"{', ...' if len(subs) > 6 else ''}), no images. If those are the classes, the root is one "
                    f"level too high: set dataset.params.root={cdir}. If they are per-patient folders, set "
                    "dataset.params.nested: true")


def build(params: dict[str, Any], ctx: DataContext) -> DataBundle:
    """Factory of ``image_folder``."""
    root = require_dir(params["root"])
    return build_from_root(root, params, ctx, "image_folder")


def folder_params(params: dict[str, Any], **fixed: Any) -> dict[str, Any]:
    """Another dataset's params as :func:`build_from_root` reads them: image_folder's keys among ``params``,
    ``fixed`` on top, image_folder's defaults for the rest (e.g. ``nested``, ``extensions``)."""
    return params_for(IMAGE_FOLDER, params, **fixed)


def build_from_root(root: Path, params: dict[str, Any], ctx: DataContext, dataset: str) -> DataBundle:
    """Class folders (with or without split folders) under ``root`` -> DataBundle (``params``: image_folder's,
    defaults filled in; see :func:`folder_params`)."""
    exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in params["extensions"])
    pattern = params.get("group_regex") or None
    split_dirs = find_split_dirs(root)
    if "train" not in split_dirs:
        split_dirs = {"train": root}
        if any(k in split_dirs for k in ("val", "test")):
            raise UserError(f"{root}: has val/test folders but no train/ folder")
    masks = mask_root(root, params.get("masks"))
    confounds = mask_root(root, params.get("confound_masks"), "confound_masks")
    skipped = {m.resolve() for m in (masks, confounds) if m is not None}
    class_dirs: dict[str, set[str]] = {}
    for split, d in split_dirs.items():
        class_dirs[split] = {c.name for c in d.iterdir() if c.is_dir() and not c.name.startswith(".")
                             and c.resolve() not in skipped}
    classes = params.get("classes") or sorted(class_dirs["train"])  # no schema default: read from the data
    if not classes:
        raise UserError(f"{split_dirs['train']}: no class sub-folders found (expected e.g. "
                        f"{split_dirs['train']}/<class>/<image>.png)")
    for split, names in class_dirs.items():
        unknown = sorted(names - set(classes))
        if unknown and not params.get("classes"):
            raise UserError(f"{split_dirs[split]}: class folder(s) {unknown} are not in the train classes "
                            f"{classes}; set dataset.params.classes to choose the classes")
    opts = options_from(params, ctx)
    skips = SkipLog(ctx.run_dir, ctx.log)
    parts: dict[str, list[Sample]] = {}
    for split, d in split_dirs.items():
        samples = []
        for label, cls in enumerate(classes):
            cdir = d / cls
            if not cdir.is_dir():
                raise UserError(f"{d}: class folder '{cls}' is missing (classes: {classes})")
            files = list_images(cdir, exts)
            if not params["nested"]:
                _check_flat(cdir, cls, files)
            if not files:
                raise UserError(f"{cdir}: class '{cls}' has no images with extensions {list(exts)}")
            for f in files:
                rel = f.relative_to(root).as_posix()
                samples.append(Sample(path=str(f), label=label, id=rel, group=group_of(f.name, pattern) if pattern else rel))
        parts[split] = check_files(samples, opts, skips, params["verify"])
    info = {"root": str(root), "layout": "+".join(sorted(split_dirs))}
    if masks is not None:
        info["masks"] = attach_masks(parts, root, masks, exts)
        ctx.log(f"{dataset}: masks for {info['masks']['with_mask']} of {info['masks']['images']} images ({masks})")
    if confounds is not None:
        info["confound_masks"] = attach_masks(parts, root, confounds, exts, "confound_masks")
        ctx.log(f"{dataset}: confound masks for {info['confound_masks']['with_mask']} of "
                f"{info['confound_masks']['images']} images ({confounds})")
    if params.get("metadata"):
        info["metadata"] = attach_metadata(parts, root, params["metadata"], params.get("metadata_key") or "image",
                                           ctx.log, dataset)
    return build_bundle(dataset, parts, list(classes), params, ctx, opts, skips, has_masks=masks is not None,
                        info=info, source=f"{dataset} at {root}", has_confound_masks=confounds is not None)


def mask_root(root: Path, given: Any, param: str = "masks") -> Path | None:
    """The folder of lesion masks (``masks``) or confound masks (``confound_masks``), or None when there is none."""
    if not given:
        return None
    path = Path(str(given)).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.is_dir():
        raise UserError(f"dataset.params.{param}: mask folder not found: {path}")
    return path


def attach_masks(parts: dict[str, list[Sample]], root: Path, masks: Path, exts: tuple[str, ...],
                 param: str = "masks") -> dict[str, int]:
    """Give each sample the mask at the same relative path under ``masks`` (any image extension)."""
    found = {p.relative_to(masks).with_suffix("").as_posix(): p for p in list_images(masks, exts)}
    images = with_mask = 0
    for samples in parts.values():
        for s in samples:
            images += 1
            hit = found.get(Path(s.path).relative_to(root).with_suffix("").as_posix())
            if hit is not None:
                if param == "masks":
                    s.mask_paths = [str(hit)]
                else:
                    s.confound_paths = [str(hit)]
                with_mask += 1
    if not with_mask:
        raise UserError(f"dataset.params.{param}: no mask in {masks} matches an image (the mask of "
                        f"{root}/<split>/<class>/<name>.png is {masks}/<split>/<class>/<name>.<ext>)")
    return {"images": images, "with_mask": with_mask}


def _key(text: str) -> str:
    """A metadata key or relative path as compared: slashes forward, no leading ./, case kept."""
    key = text.strip().replace("\\", "/")
    while key.startswith("./"):
        key = key[2:]
    return key


def attach_metadata(parts: dict[str, list[Sample]], root: Path, given: Any, key_column: str, log: Any,
                    dataset: str) -> dict[str, Any]:
    """Give each sample the fields of its row in the metadata CSV (``dataset.params.metadata``).

    A row names its image by the path relative to root (with or without the extension) or by the file name (with
    or without the extension) when only one image has it. Two rows for one image, or a file name shared by several
    images, are errors naming the line; rows that name no image and images without a row are counted in the log
    (a metadata sheet often covers more images than a folder holds)."""
    path = Path(str(given)).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        raise UserError(f"dataset.params.metadata: metadata CSV not found: {path}")
    table = Table(path, [key_column])
    fields = [c for c in table.header if c != key_column]
    if not fields:
        raise UserError(f"{path} line 1: the metadata CSV has only its key column {key_column!r}; add a column per "
                        "field (site, device, ...)")
    samples = [s for split in parts.values() for s in split]
    exact: dict[str, Sample] = {}  # the path relative to root
    loose: dict[str, list[Sample]] = {}  # the path without extension, the file name with and without it
    for s in samples:
        rel = Path(s.path).relative_to(root)
        exact[rel.as_posix()] = s
        for name in {rel.with_suffix("").as_posix(), rel.name, rel.stem}:
            loose.setdefault(name, []).append(s)
    seen: dict[int, int] = {}  # id(sample) -> the line that gave its fields
    unmatched: list[str] = []
    for line, row in table.rows():
        key = _key(row[key_column])
        if not key:
            raise UserError(f"{table.where(line)}: empty {key_column}")
        hit = exact.get(key)
        if hit is None:
            named = loose.get(key, [])
            if len(named) > 1:
                shown = ", ".join(Path(s.path).relative_to(root).as_posix() for s in named[:3])
                raise UserError(f"{table.where(line)}: {key!r} names {len(named)} images ({shown}"
                                f"{', ...' if len(named) > 3 else ''}); give the path relative to {root}, "
                                "with its extension")
            hit = named[0] if named else None
        if hit is None:
            unmatched.append(key)
            continue
        if id(hit) in seen:
            raise UserError(f"{table.where(line)}: a second row for {hit.id} (the first is line {seen[id(hit)]})")
        seen[id(hit)] = line
        hit.meta.update({c: row[c].strip() for c in fields})
    if not seen:
        raise UserError(f"{path}: no row of the metadata CSV names an image under {root} (column {key_column!r}: "
                        "the path relative to root, e.g. train/<class>/<name>.png, or the file name)")
    for s in samples:
        for c in fields:
            s.meta.setdefault(c, "")
    missing = len(samples) - len(seen)
    if unmatched or missing:
        notes = ([f"{missing} without a row get blank fields"] if missing else []) + (
            [f"{len(unmatched)} row(s) name no image (e.g. {unmatched[0]})"] if unmatched else [])
        log(f"{dataset}: metadata for {len(seen)} of {len(samples)} images ({path}); {'; '.join(notes)}")
    return {"file": str(path), "fields": fields, "images": len(samples), "with_metadata": len(seen)}
