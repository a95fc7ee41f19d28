"""A torch Dataset over a list of image files, shared by every file-based dataset plugin.

It decodes lazily (one file per ``__getitem__``), resizes to the context's size, optionally reads ROI
masks, uses the on-disk cache, and applies the ``on_bad_sample`` policy: ``error`` raises a UserError
naming the file and where it was listed; ``skip`` records the file and reason in ``skipped.csv`` of the
run directory and serves the next good sample in its place.
"""
from __future__ import annotations

import csv
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from medattn.api import (
    BadImage,
    DataBundle,
    DataContext,
    UserError,
    is_dicom,
    mask_to_tensor,
    read_image,
    to_tensor,
)

from .splits import CALIBRATION, check_fractions, finalize_bundle, grouped_split


@dataclass
class Sample:
    """One image of a dataset, before decoding."""

    path: str
    label: int
    id: str
    group: str
    source: str = ""  # where it was listed, e.g. "calc_case_description_train_set.csv line 12"
    mask_paths: list[str] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)  # metadata columns (site, device, ...) for test.subgroups
    confound_paths: list[str] = field(default_factory=list)  # masks of where a known shortcut lives


@dataclass
class LoadOptions:
    """Decode settings shared by the samples of one dataset (they are part of the cache key)."""

    size: tuple[int, int]
    channels: int
    dicom_voi: bool
    on_bad_sample: str
    cache_dir: str | None = None
    resize: str = "stretch"


class SkipLog:
    """Skipped files and why: counted, logged and appended to the run directory's skip list (``run_dir.skipped``)."""

    def __init__(self, run_dir: Any, log: Callable[[str], None] = print) -> None:
        self.path = run_dir.skipped if run_dir is not None else None
        self.log = log
        self.count = 0

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["log"] = print  # ctx.log may not pickle into a worker process
        return state

    def add(self, file: str, reason: str, source: str = "") -> None:
        """Record one skipped file."""
        self.count += 1
        self.log(f"skipped {file}: {reason}" + (f" ({source})" if source else ""))
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        with open(self.path, "a", newline="") as fh:  # one short append per line: safe across workers
            w = csv.writer(fh)
            if new:
                w.writerow(["file", "reason", "source"])
            w.writerow([file, reason, source])


def options_from(params: dict[str, Any], ctx: DataContext) -> LoadOptions:
    """Load options from the common params (defaults filled in) and the data context."""
    cache_dir = None
    if params["cache"] and ctx.cache_dir is not None:
        cache_dir = str(ctx.cache_dir)
    return LoadOptions(size=(int(ctx.image_size[0]), int(ctx.image_size[1])), channels=int(ctx.channels),
                       dicom_voi=params["dicom_voi"], on_bad_sample=params["on_bad_sample"],
                       cache_dir=cache_dir, resize=params.get("resize", "stretch"))


def describe(sample: Sample) -> str:
    """'FILE (listed in SOURCE)' for messages."""
    return sample.path + (f" (listed in {sample.source})" if sample.source else "")


def check_files(samples: list[Sample], opts: LoadOptions, skips: SkipLog, verify: bool) -> list[Sample]:
    """Drop (skip mode) or reject (error mode) samples whose files are missing or, with verify, unreadable."""
    good = []
    for s in samples:
        problem = None
        for p in [s.path, *s.mask_paths, *s.confound_paths]:
            if not os.path.isfile(p):
                problem = (p, "file not found")
                break
            if verify:
                try:
                    _verify(Path(p))
                except BadImage as exc:
                    problem = (p, str(exc))
                    break
        if problem is None:
            good.append(s)
        elif opts.on_bad_sample == "skip":
            skips.add(problem[0], problem[1], s.source)
        else:
            where = f" (listed in {s.source})" if s.source else ""
            raise UserError(f"{problem[0]}: {problem[1]}{where}; fix or remove it, or set "
                            f"dataset.params.on_bad_sample: skip")
    return good


def _verify(path: Path) -> None:
    """Cheap integrity check of one file (header and structure, no full decode for PNG/JPEG)."""
    if is_dicom(path):
        import pydicom

        try:
            pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:
            raise BadImage(f"not a readable DICOM file: {exc}") from None
        return
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
    except Exception as exc:
        raise BadImage(f"cannot decode image: {exc}") from None


class FileDataset(Dataset):
    """Images listed as :class:`Sample` records, decoded on demand (a map-style torch Dataset)."""

    def __init__(self, samples: list[Sample], opts: LoadOptions, skips: SkipLog, has_masks: bool = False,
                 dataset: str = "", has_confound_masks: bool = False) -> None:
        self.samples = samples
        self.opts = opts
        self.skips = skips
        self.has_masks = has_masks
        self.has_confound_masks = has_confound_masks
        self._cache = None
        if opts.cache_dir is not None:
            from .cache import DiskCache

            settings = f"{dataset}|{opts.size}|{opts.channels}|voi={opts.dicom_voi}|masks={has_masks}|v1"
            if has_confound_masks:  # without them the keys stay those of caches written before the option
                settings += "|confound"
            if opts.resize != "stretch":  # stretched images keep the keys of caches written before the option
                settings += f"|resize={opts.resize}"
            self._cache = DiskCache(Path(opts.cache_dir) / "decoded", settings)
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def ids(self) -> list[str]:
        """Sample ids in order."""
        return [s.id for s in self.samples]

    def groups(self) -> list[str]:
        """Patient / group ids in order."""
        return [s.group for s in self.samples]

    def labels(self) -> list[int]:
        """Labels in order."""
        return [s.label for s in self.samples]

    def metadata(self) -> dict[str, dict[str, str]]:
        """{sample id: its metadata columns} (the csv data set's other columns): what test.subgroups reads."""
        return {s.id: dict(s.meta) for s in self.samples}

    def _decode(self, s: Sample) -> np.ndarray:
        key = None
        if self._cache is not None:
            key = self._cache.key([s.path, *s.mask_paths, *s.confound_paths])
            hit = self._from_cache(self._cache.get(key))
            if hit is not None:
                return hit
        img = to_tensor(read_image(s.path, self.opts.dicom_voi), self.opts.size, self.opts.channels,
                        self.opts.resize).numpy()
        for wanted, paths in ((self.has_masks, s.mask_paths), (self.has_confound_masks, s.confound_paths)):
            if wanted:  # an image without one gets an empty mask
                mask = np.zeros(self.opts.size, dtype=np.float32)
                for mp in paths:
                    mask = np.maximum(mask, mask_to_tensor(read_image(mp, False), self.opts.size,
                                                                self.opts.resize).numpy()[0])
                img = np.concatenate([img, mask[None]], axis=0)
        if self._cache is not None and key is not None:
            self._cache.put(key, self._for_cache(img))
        return img

    def _for_cache(self, img: np.ndarray) -> np.ndarray:
        """What the cache stores: one channel where the image's channels are copies of one grey channel (a DICOM
        or grey PNG expanded to the backbone's channels: a third of the bytes), all of them otherwise."""
        c = self.opts.channels
        if c > 1 and all(np.array_equal(img[0], img[i]) for i in range(1, c)):
            return np.concatenate([img[:1], img[c:]], axis=0)
        return img

    def _from_cache(self, arr: np.ndarray | None) -> np.ndarray | None:
        """A cached array as the decode gives it: one stored grey channel expanded to the channels; an entry of
        all the channels (written before the cache kept one) as it is; any other shape is a miss (decoded again)."""
        if arr is None or arr.ndim != 3 or tuple(arr.shape[1:]) != tuple(self.opts.size):
            return None
        c, extra = self.opts.channels, int(self.has_masks) + int(self.has_confound_masks)
        if arr.shape[0] == c + extra:
            return arr
        if arr.shape[0] == 1 + extra:
            return np.concatenate([np.repeat(arr[:1], c, axis=0), arr[1:]], axis=0)
        return None

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        n = len(self.samples)
        if not 0 <= index < n:
            raise IndexError(index)
        for step in range(n):
            i = (index + step) % n
            if i in self._bad:
                continue
            s = self.samples[i]
            try:
                arr = self._decode(s)
            except BadImage as exc:
                if self.opts.on_bad_sample != "skip":
                    where = f" (listed in {s.source})" if s.source else ""
                    raise UserError(f"{s.path}: {exc}{where}; fix or remove it, or set "
                                    "dataset.params.on_bad_sample: skip") from None
                self._bad.add(i)
                self.skips.add(s.path, str(exc), s.source)
                continue
            t = torch.from_numpy(np.ascontiguousarray(arr))
            c = self.opts.channels
            item: dict[str, Any] = {"image": t[:c], "label": s.label, "id": s.id, "group": s.group}
            if self.has_masks:
                item["mask"] = t[c:c + 1]
            if self.has_confound_masks:
                at = c + int(self.has_masks)
                item["confound_mask"] = t[at:at + 1]
            return item
        raise UserError(f"every image of this split is unreadable (last: {self.samples[index].path})")


def build_bundle(dataset: str, split_samples: dict[str, list[Sample]], class_names: list[str],
                 params: dict[str, Any], ctx: DataContext, opts: LoadOptions, skips: SkipLog, *,
                 has_masks: bool = False, info: dict[str, Any] | None = None, source: str = "",
                 has_confound_masks: bool = False) -> DataBundle:
    """Turn per-split sample lists into a checked DataBundle.

    ``split_samples`` holds "train" and whichever of "val" / "test" the release defines. Missing splits
    are carved from train by a seeded grouped split (``val_fraction`` / ``test_fraction``); with
    ``split: grouped`` every sample is pooled and re-split that way, ignoring the release's lists.
    """
    val_f = float(params["val_fraction"])
    test_f = float(params["test_fraction"])
    mode = str(params["split"])
    parts = {k: list(v) for k, v in split_samples.items()}
    where = source or f"dataset {dataset}"
    if mode == "grouped":
        pooled = [s for k in ("train", "val", "test") for s in parts.get(k, [])]
        parts = {"train": pooled}
    missing = [k for k in ("val", "test") if k not in parts]
    if missing:
        check_fractions(val_f if "val" in missing else 0.0, test_f if "test" in missing else 0.0)
        pool = parts["train"]
        if not pool:
            raise UserError(f"{where}: no samples found to split")
        fr = [1.0 - (val_f if "val" in missing else 0) - (test_f if "test" in missing else 0)]
        fr += [val_f if k == "val" else test_f for k in missing]
        idx = grouped_split([s.label for s in pool], [s.group for s in pool], fr, ctx.seed)
        parts["train"] = [pool[i] for i in idx[0]]
        for k, ix in zip(missing, idx[1:]):
            parts[k] = [pool[i] for i in ix]
    for k in ("train", "val", "test"):
        if not parts[k]:
            raise UserError(f"{where}: the '{k}' split came out empty; add data or change "
                            "dataset.params.val_fraction / test_fraction")
    cal_f = float(params.get("calibration_fraction") or 0)
    if cal_f > 0:  # a conformal calibration split, by patient, from what trains
        pool = parts["train"]
        idx = grouped_split([s.label for s in pool], [s.group for s in pool], [1.0 - cal_f, cal_f], ctx.seed)
        parts["train"], parts[CALIBRATION] = [pool[i] for i in idx[0]], [pool[i] for i in idx[1]]
        if not parts[CALIBRATION]:
            raise UserError(f"{where}: the '{CALIBRATION}' split came out empty (dataset.params.calibration_fraction "
                            f"{cal_f} of {len(pool)} training images from {len({s.group for s in pool})} patients); "
                            "raise it or add data")
    splits = {k: FileDataset(v, opts, skips, has_masks=has_masks, dataset=dataset,
                             has_confound_masks=has_confound_masks) for k, v in parts.items()}
    info = dict(info or {})
    info["split_mode"] = "carved " + "+".join(missing) if missing and mode != "grouped" else mode
    if cal_f > 0:
        info["split_mode"] += f", {CALIBRATION} carved from train"
    info["skipped_at_listing"] = skips.count
    if skips.count:
        ctx.log(f"{dataset}: skipped {skips.count} file(s) while listing"
                + (f"; see {skips.path}" if skips.path else ""))
    return finalize_bundle(splits, class_names, ctx, has_masks=has_masks, info=info, dataset=dataset,
                           source=source, has_confound_masks=has_confound_masks)
