"""``synthetic_lesions``: procedurally generated tissue-like images with one lesion and its mask.

Each image is a function of (seed, split, index) only, so it is generated on demand in ``__getitem__``
(about 1 ms at 64 px) and is identical in every worker process and every run.

Class 0: a round / oval lesion with a smooth edge. Class 1: a spiculated lesion (a smaller core with thin
radial spikes) of about the same integrated brightness. Both sit on smoothed noise with fibrous streaks;
``difficulty`` lowers the lesion contrast, raises the noise and adds round distractor blobs (in both
classes) and more streaks, so the spikes are the only cue; ``decoys`` adds fainter lesions of the other class's
shape, so that the most conspicuous lesion decides the label and where to look matters; ``shortcut`` adds a
corner marker that agrees with the label in that share of the images, and a ``shifted`` test split where it does
not (a shortcut a model can learn instead of the lesion). The mask is the lesion's footprint.

No library generates such images, so the generator is hand-written (numpy only).
"""
from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medattn.api import DataBundle, DataContext

from .splits import finalize_bundle

CLASS_NAMES = ["round", "spiculated"]
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
SHIFTED = "shifted"  # the extra test split of the shortcut: the marker independent of the label


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Bilinearly upsampled (cells x cells) Gaussian noise at (h, w): a cheap smooth texture."""
    g = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    ys = np.linspace(0, cells, h, dtype=np.float32)
    xs = np.linspace(0, cells, w, dtype=np.float32)
    y0 = np.minimum(ys.astype(np.int64), cells - 1)
    x0 = np.minimum(xs.astype(np.int64), cells - 1)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    a = g[y0][:, x0]
    b = g[y0][:, x0 + 1]
    c = g[y0 + 1][:, x0]
    d = g[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def _soft_disk(dist: np.ndarray, radius: float, edge: float) -> np.ndarray:
    """1 inside ``radius``, 0 outside, with a logistic edge of width ``edge``."""
    return 1.0 / (1.0 + np.exp(np.clip((dist - radius) / edge, -30.0, 30.0)))


def _segment_intensity(yy: np.ndarray, xx: np.ndarray, p0: tuple[float, float], angle: float, length: float,
                       width: float) -> np.ndarray:
    """Gaussian ridge along the segment from p0 in direction ``angle`` (0 outside its length)."""
    dy, dx = np.sin(angle), np.cos(angle)
    ry, rx = yy - p0[0], xx - p0[1]
    t = ry * dy + rx * dx  # position along the segment
    d = ry * dx - rx * dy  # signed distance from the line
    along = np.clip(1.0 - np.abs(2.0 * t / length - 1.0), 0.0, 1.0) ** 0.5  # 0 at both ends, 1 mid
    along = np.where((t >= 0) & (t <= length), along, 0.0)
    return along * np.exp(-(d * d) / (2.0 * width * width))


def _lesion(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float, edge: float,
            label: int) -> np.ndarray:
    """The intensity (0..1) of a lesion of class ``label`` centred at (cy, cx): round/oval (0) or spiculated (1)."""
    if label == 0:
        aspect = rng.uniform(0.75, 1.3)
        rot = rng.uniform(0, np.pi)
        ry, rx = yy - cy, xx - cx
        u = (rx * np.cos(rot) + ry * np.sin(rot)) * aspect
        v = (-rx * np.sin(rot) + ry * np.cos(rot)) / aspect
        return _soft_disk(np.sqrt(u * u + v * v), r, edge)
    dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    lesion = _soft_disk(dist, 0.72 * r, edge)
    n_spikes = int(rng.integers(5, 10))
    base = rng.uniform(0, 2 * np.pi)
    spikes = np.zeros_like(lesion)
    for k in range(n_spikes):
        ang = base + 2 * np.pi * k / n_spikes + rng.normal(0, 0.25)
        length = rng.uniform(1.0, 1.6) * r
        spikes = np.maximum(spikes, _segment_intensity(yy, xx, (cy, cx), ang, 2 * length, max(0.8, 0.08 * r)))
    return np.maximum(lesion, spikes)


def _tissue(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, difficulty: float) -> np.ndarray:
    """Two octaves of smooth noise plus fibrous streaks with a dominant orientation."""
    h, w = yy.shape
    s = float(min(h, w))
    img = 0.42 + 0.10 * _smooth_noise(rng, h, w, 4) + 0.05 * _smooth_noise(rng, h, w, 12)
    theta0 = rng.uniform(0, np.pi)
    for _ in range(int(4 + round(8 * difficulty))):
        ang = theta0 + rng.normal(0, 0.35)
        p0 = (rng.uniform(-0.2, 1.2) * h, rng.uniform(-0.2, 1.2) * w)
        img += rng.uniform(0.03, 0.08) * _segment_intensity(yy, xx, p0, ang, rng.uniform(0.4, 1.0) * s,
                                                            rng.uniform(0.4, 1.0) * s / 64)
    return img


def _marker(seed: int, code: int, index: int, label: int, split: str, shortcut: float, img: np.ndarray) -> None:
    """The shortcut: a bright square in the top-left corner, present in class-1 images and absent in class-0 ones
    for a share ``shortcut`` of the images (the other way round for the rest); in the ``shifted`` split it is
    present in half the images whatever their label. Drawn from a generator of its own, so the rest of the
    image is the same with and without it."""
    agree = 0.5 if split == SHIFTED else shortcut
    draw = np.random.default_rng([int(seed) & 0xFFFFFFFF, code, int(index), 1]).random()
    if (label == 1) == (draw < agree):
        side = max(2, int(round(0.07 * min(img.shape))))
        img[2:2 + side, 2:2 + side] += 0.35


def generate(seed: int, split: str, index: int, size: tuple[int, int], difficulty: float, lesion_size: float,
             decoys: float, shortcut: float = 0.0) -> tuple[np.ndarray, np.ndarray, int]:
    """One (image HxW float32 in [0,1], mask HxW float32, label) for (seed, split, index).

    ``decoys``: expected number of fainter lesions of the *other* class's shape elsewhere in the image, so that
    the label is only told by the most conspicuous lesion: where to look matters (the mask is the true lesion).
    ``shortcut``: the share of images whose corner marker agrees with the label (0: no marker; see _marker)."""
    code = _SPLIT_CODE.get(split, zlib.crc32(split.encode()))
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, code, int(index)])
    h, w = size
    s = float(min(h, w))
    label = int(index) % 2  # balanced classes; everything else is drawn from the seed
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = _tissue(rng, yy, xx, difficulty)
    r = lesion_size * s * rng.uniform(0.8, 1.2)
    margin = 2.2 * r + 2
    cy = rng.uniform(margin, max(margin + 1, h - margin))
    cx = rng.uniform(margin, max(margin + 1, w - margin))
    contrast = (0.30 - 0.20 * difficulty) * rng.uniform(0.85, 1.15)
    edge = max(0.6, 0.06 * r)
    lesion = _lesion(rng, yy, xx, cy, cx, r, edge, label)
    mask = (lesion > 0.3).astype(np.float32)
    img += contrast * lesion

    # distractors: round blobs of lesion-like brightness but smaller, in both classes
    n_distract = int(rng.poisson(2.5 * difficulty))
    for _ in range(n_distract):
        br = r * rng.uniform(0.35, 0.7)
        by, bx = rng.uniform(0, h), rng.uniform(0, w)
        bd = np.sqrt((yy - by) ** 2 + (xx - bx) ** 2)
        img += contrast * rng.uniform(0.6, 1.0) * _soft_disk(bd, br, edge) * (1.0 - mask)
    if decoys > 0:  # drawn only when asked, so that decoys: 0 leaves every image as it was
        for _ in range(int(rng.poisson(decoys))):
            dr = r * rng.uniform(0.7, 0.9)
            dy, dx = rng.uniform(dr, h - dr), rng.uniform(dr, w - dr)
            img += 0.5 * contrast * _lesion(rng, yy, xx, dy, dx, dr, edge, 1 - label) * (1.0 - mask)
    if shortcut > 0:  # only when asked, so that shortcut: 0 leaves every image as it was
        _marker(seed, code, index, label, split, shortcut, img)
    img += rng.normal(0.0, 0.02 + 0.05 * difficulty, size=(h, w)).astype(np.float32)
    return np.clip(img, 0.0, 1.0).astype(np.float32), mask, label


def site_of(seed: int, split: str, index: int, sites: int) -> int:
    """The acquisition site of an image (0 .. sites - 1), from a generator of its own (so the image is the same
    with and without sites, and the site does not follow the label)."""
    code = _SPLIT_CODE.get(split, zlib.crc32(split.encode()))
    return int(np.random.default_rng([int(seed) & 0xFFFFFFFF, code, int(index), 2]).integers(sites))


def site_contrast(img: np.ndarray, site: int, sites: int) -> np.ndarray:
    """The image as site ``site`` records it: site 0 as generated, later sites with contrast around mid-grey
    lowered step by step to 55% at the last one (a scanner or protocol that shows lesions less clearly)."""
    if site == 0:
        return img
    gain = 1.0 - 0.45 * site / max(1, sites - 1)
    return np.clip(0.5 + (img - 0.5) * gain, 0.0, 1.0).astype(np.float32)


class SyntheticLesions(Dataset):
    """A split of ``synthetic_lesions``: items generated on demand, deterministic by (seed, split, index)."""

    def __init__(self, split: str, n: int, seed: int, size: tuple[int, int], channels: int,
                 difficulty: float, lesion_size: float, decoys: float, shortcut: float = 0.0, sites: int = 0) -> None:
        self.split, self.n, self.seed, self.size, self.channels = split, n, seed, size, channels
        self.difficulty, self.lesion_size, self.decoys, self.shortcut = difficulty, lesion_size, decoys, shortcut
        self.sites = int(sites)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.n:
            raise IndexError(index)
        img, mask, label = generate(self.seed, self.split, index, self.size, self.difficulty, self.lesion_size,
                                     self.decoys, self.shortcut)
        if self.sites:  # only when asked, so that sites: 0 leaves every image as it was
            img = site_contrast(img, site_of(self.seed, self.split, index, self.sites), self.sites)
        t = torch.from_numpy(img)[None]
        if self.channels == 3:
            t = t.expand(3, -1, -1).clone()
        return {"image": t, "label": label, "id": self.item_id(index), "mask": torch.from_numpy(mask)[None],
                "group": self.item_id(index)}

    def item_id(self, index: int) -> str:
        """The sample id of one index."""
        return f"{self.split}-{index:05d}"

    def ids(self) -> list[str]:
        """Every sample id, in order."""
        return [self.item_id(i) for i in range(self.n)]

    def groups(self) -> list[str]:
        """Every group (one image per synthetic 'patient')."""
        return self.ids()

    def labels(self) -> list[int]:
        """Every label (alternating, so the classes are balanced)."""
        return [i % 2 for i in range(self.n)]

    def metadata(self) -> dict[str, dict[str, str]]:
        """{id: {"site": "site<k>"}} with ``sites``; empty without (what test.subgroups reads)."""
        if not self.sites:
            return {}
        return {self.item_id(i): {"site": f"site{site_of(self.seed, self.split, i, self.sites)}"}
                for i in range(self.n)}


def build(params: dict[str, Any], ctx: DataContext) -> DataBundle:
    """Factory of ``synthetic_lesions`` (params validated, defaults filled in)."""
    seed = int(ctx.seed) + int(params["seed_offset"])  # ctx.seed: dataset.seed, else the experiment's seed
    size = (int(ctx.image_size[0]), int(ctx.image_size[1]))
    look = {k: float(params[k]) for k in ("difficulty", "lesion_size", "decoys", "shortcut")}
    counts = {"train": int(params["n_train"]), "val": int(params["n_val"]), "test": int(params["n_test"])}
    if look["shortcut"] > 0:  # the test split of the marker that no longer agrees with the label
        counts[SHIFTED] = int(params["n_test"])
    sites = int(params.get("sites") or 0)
    splits = {name: SyntheticLesions(name, n, seed, size, ctx.channels, **look, sites=sites)
              for name, n in counts.items()}
    shown = f"{look['difficulty']}:{look['lesion_size']}" + (f":{look['decoys']}" if look["decoys"] else "")
    shown += f":shortcut={look['shortcut']}" if look["shortcut"] else ""
    shown += f":sites={sites}" if sites else ""
    info = {"counts": counts, **look, "seed": seed,
            "fingerprint": f"synthetic_lesions:{seed}:{shown}:{size}:{counts}"}
    return finalize_bundle(splits, CLASS_NAMES, ctx, has_masks=True, info=info, dataset="synthetic_lesions")
