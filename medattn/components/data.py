"""Data assembly: the selected dataset's splits, train-time augmentation, normalisation, loaders."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ..errors import UserError
from ..hookspecs import DataBundle, DataContext, TransformContext
from ..registry import Registry
from .losses import needs_masks
from .model import image_size

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
SPLITS = ("train", "val", "test")


class Prepared(Dataset):
    """A split with the train-time transform (if any) and the normalisation applied to ``image``."""

    def __init__(self, base: Dataset, mean: torch.Tensor | None, std: torch.Tensor | None,
                 augment: Callable[[torch.Tensor], torch.Tensor] | None = None, augment_masks: bool = False):
        self.base, self.mean, self.std, self.augment = base, mean, std, augment
        self.augment_masks = augment_masks  # a loss term uses the masks: they must move with the image

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.base[i])
        image = item["image"]
        masks = [k for k in ("mask", "confound_mask") if k in item]
        if self.augment is not None and self.augment_masks and masks:
            image, moved = self._augment_pair(image, [item[k] for k in masks])
            item.update(zip(masks, moved))
        elif self.augment is not None:
            image = self.augment(image)
        item["raw"] = image  # the un-normalised image, for figures
        item["image"] = self.normalised(image)
        return item

    def normalised(self, image: torch.Tensor) -> torch.Tensor:
        """A [0, 1] image as the model gets it."""
        return (image - self.mean) / self.std if self.mean is not None else image

    def confound_pair(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(with, without) the confound, normalised, when the split renders them (AttributeError otherwise)."""
        with_it, without = self.base.confound_pair(i)  # type: ignore[attr-defined]
        return self.normalised(with_it), self.normalised(without)

    def _augment_pair(self, image: torch.Tensor, masks: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The image augmented, and its masks by the same random draws (the generator replayed), binarised; the
        generator ends where the image's augmentation alone leaves it."""
        state = torch.get_rng_state()
        image = self.augment(image)
        after = torch.get_rng_state()
        out = []
        for mask in masks:
            torch.set_rng_state(state)
            moved = self.augment(mask.expand(image.shape[0], -1, -1).clone())[:1]
            out.append((moved > 0.5).to(mask.dtype))
        torch.set_rng_state(after)
        return image, out


def normalisation(config: dict, backbone: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Mean/std tensors (C, 1, 1) from ``dataset.normalize``; (None, None) for ``none``."""
    mode = config["dataset"]["normalize"]
    channels = int(getattr(backbone, "in_chans", 3))
    if mode == "none":
        return None, None
    if mode == "auto":
        mean, std = getattr(backbone, "mean", IMAGENET[0]), getattr(backbone, "std", IMAGENET[1])
    elif mode == "imagenet":
        mean, std = IMAGENET
    else:
        mean, std = mode["mean"], mode["std"]
    mean, std = list(mean), list(std)
    if len(mean) != channels:  # a 1-channel model fed with 3-channel statistics: average them
        if len(mean) == 3 and channels == 1:
            mean, std = [sum(mean) / 3], [sum(std) / 3]
        else:
            raise UserError(f"dataset.normalize: {len(mean)} mean/std values for a {channels}-channel backbone")
    return torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)


def build_data(reg: Registry, config: dict, backbone: Any, run_dir: Path | None,
               log: Callable[[str], None] = print, cache_dir: Path | None = None
               ) -> tuple[DataBundle, dict[str, Prepared]]:
    """The raw bundle and the prepared splits (augmented train, normalised everywhere); ``cache_dir`` is where
    datasets may keep decoded images (shared by every run that reads the same files)."""
    spec = config["dataset"]
    channels = int(getattr(backbone, "in_chans", 3))
    data_seed = spec["seed"] if spec.get("seed") is not None else config["seed"]
    ctx = DataContext(seed=int(data_seed), image_size=image_size(config), channels=channels,
                      cache_dir=cache_dir, run_dir=run_dir, log=log)
    bundle = reg.build("dataset", spec, ctx)
    missing = [s for s in SPLITS if s not in bundle.splits]
    if missing:
        raise UserError(f"dataset {spec['name']!r} gave no {', '.join(missing)} split")
    mean, std = normalisation(config, backbone)
    augment = None
    aug_spec = (config.get("train") or {}).get("augment")
    if aug_spec:
        tctx = TransformContext(image_size=image_size(config), channels=channels)
        augment = reg.build("transform", aug_spec, tctx)
    moved = augment is not None and needs_masks(reg, config)
    prepared = {s: Prepared(bundle.splits[s], mean, std, augment if s == "train" else None, moved and s == "train")
                for s in [*SPLITS, *(x for x in bundle.splits if x not in SPLITS)]}  # extra splits: test.splits
    return bundle, prepared
