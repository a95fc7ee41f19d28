"""``medmnist_npz``: a MedMNIST .npz file (train/val/test _images and _labels), held in memory."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from medattn.api import DataBundle, DataContext, UserError, to_tensor

from .image_folder import require_dir
from .splits import finalize_bundle


class NpzSplit(Dataset):
    """One split of a MedMNIST file: uint8 images (N, H, W[, 3]) and integer labels."""

    def __init__(self, name: str, images: np.ndarray, labels: np.ndarray, size: tuple[int, int], channels: int):
        self.name, self.images, self._labels, self.size, self.channels = name, images, labels, size, channels

    def __len__(self) -> int:
        return len(self.images)

    def ids(self) -> list[str]:
        """Sample ids."""
        return [f"{self.name}-{i:06d}" for i in range(len(self))]

    def labels(self) -> list[int]:
        """Labels."""
        return [int(x) for x in self._labels]

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        img = to_tensor(self.images[i].astype(np.float32) / 255.0, self.size, self.channels)
        return {"image": img, "label": int(self._labels[i]), "id": f"{self.name}-{i:06d}",
                "group": f"{self.name}-{i:06d}"}


def build(params: dict[str, Any], ctx: DataContext) -> DataBundle:
    """Factory of ``medmnist_npz``."""
    root = require_dir(params["root"])
    f = Path(str(params["file"]))
    f = f if f.is_absolute() else root / f
    if not f.is_file():
        raise UserError(f"{f}: MedMNIST .npz file not found (dataset.params.file)")
    try:
        data = np.load(f, allow_pickle=False)
        keys = set(data.files)
    except Exception as exc:
        raise UserError(f"{f}: not a readable .npz file: {exc}") from None
    need = [f"{s}_{k}" for s in ("train", "val", "test") for k in ("images", "labels")]
    missing = [k for k in need if k not in keys]
    if missing:
        raise UserError(f"{f}: missing array(s) {missing}; the file has {sorted(keys)}")
    col = int(params["task_column"])
    splits = {}
    all_labels = []
    for s in ("train", "val", "test"):
        imgs, labs = data[f"{s}_images"], np.asarray(data[f"{s}_labels"])
        labs = labs.reshape(len(labs), -1)
        if col >= labs.shape[1]:
            raise UserError(f"dataset.params.task_column: {col} but {f} has {labs.shape[1]} label column(s)")
        if imgs.ndim not in (3, 4) or len(imgs) != len(labs):
            raise UserError(f"{f}: {s}_images has shape {imgs.shape} for {len(labs)} labels")
        labs = labs[:, col].astype(np.int64)
        all_labels.append(labs)
        splits[s] = NpzSplit(s, imgs, labs, (int(ctx.image_size[0]), int(ctx.image_size[1])), ctx.channels)
    n_classes = int(max(int(x.max()) for x in all_labels if len(x)) + 1)
    names = [str(c) for c in params.get("classes") or range(n_classes)]  # no schema default: from the data
    if len(names) < n_classes:
        raise UserError(f"dataset.params.classes: {len(names)} names for labels 0..{n_classes - 1} in {f}")
    return finalize_bundle(splits, names, ctx, has_masks=False, info={"file": str(f)}, dataset="medmnist_npz",
                           source=str(f))


