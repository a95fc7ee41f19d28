"""``synthetic_lesions``: procedurally generated tissue-like images with one lesion and its mask.

Each image is a function of (seed, split, index) only, so it is generated on demand in ``__getitem__``
(about 1 ms at 64 px) and is identical in every worker process and every run.

Class 0: a round / oval lesion with a smooth edge. Class 1: a spiculated lesion (a smaller core with thin
radial spikes) of about the same integrated brightness. Both sit on smoothed noise with fibrous streaks;
``difficulty`` lowers the lesion contrast, raises the noise and adds round distractor blobs (in both
classes) and more streaks, so the spikes are the only cue. The mask is the lesion's footprint.

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


def generate(seed: int, split: str, index: int, size: tuple[int, int], difficulty: float = 0.5,
             lesion_size: float = 0.12) -> tuple[np.ndarray, np.ndarray, int]:
    """One (image HxW float32 in [0,1], mask HxW float32, label) for (seed, split, index)."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, _SPLIT_CODE.get(split, zlib.crc32(split.encode())),
                                 int(index)])
    h, w = size
    s = float(min(h, w))
    label = int(index) % 2  # balanced classes; everything else is drawn from the seed
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    # tissue: two octaves of smooth noise plus fibrous streaks with a dominant orientation
    img = 0.42 + 0.10 * _smooth_noise(rng, h, w, 4) + 0.05 * _smooth_noise(rng, h, w, 12)
    theta0 = rng.uniform(0, np.pi)
    n_streaks = int(4 + round(8 * difficulty))
    for _ in range(n_streaks):
        ang = theta0 + rng.normal(0, 0.35)
        p0 = (rng.uniform(-0.2, 1.2) * h, rng.uniform(-0.2, 1.2) * w)
        img += rng.uniform(0.03, 0.08) * _segment_intensity(yy, xx, p0, ang, rng.uniform(0.4, 1.0) * s,
                                                            rng.uniform(0.4, 1.0) * s / 64)

    # the lesion
    r = lesion_size * s * rng.uniform(0.8, 1.2)
    margin = 2.2 * r + 2
    cy = rng.uniform(margin, max(margin + 1, h - margin))
    cx = rng.uniform(margin, max(margin + 1, w - margin))
    contrast = (0.30 - 0.20 * difficulty) * rng.uniform(0.85, 1.15)
    edge = max(0.6, 0.06 * r)
    if label == 0:
        aspect = rng.uniform(0.75, 1.3)
        rot = rng.uniform(0, np.pi)
        ry, rx = yy - cy, xx - cx
        u = (rx * np.cos(rot) + ry * np.sin(rot)) * aspect
        v = (-rx * np.sin(rot) + ry * np.cos(rot)) / aspect
        dist = np.sqrt(u * u + v * v)
        lesion = _soft_disk(dist, r, edge)
    else:
        core_r = 0.72 * r
        dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        lesion = _soft_disk(dist, core_r, edge)
        n_spikes = int(rng.integers(5, 10))
        base = rng.uniform(0, 2 * np.pi)
        spikes = np.zeros_like(lesion)
        for k in range(n_spikes):
            ang = base + 2 * np.pi * k / n_spikes + rng.normal(0, 0.25)
            length = rng.uniform(1.0, 1.6) * r
            spikes = np.maximum(spikes, _segment_intensity(yy, xx, (cy, cx), ang, 2 * length,
                                                           max(0.8, 0.08 * r)))
        lesion = np.maximum(lesion, spikes)
    mask = (lesion > 0.3).astype(np.float32)
    img += contrast * lesion

    # distractors: round blobs of lesion-like brightness but smaller, in both classes
    n_distract = int(rng.poisson(2.5 * difficulty))
    for _ in range(n_distract):
        br = r * rng.uniform(0.35, 0.7)
        by, bx = rng.uniform(0, h), rng.uniform(0, w)
        bd = np.sqrt((yy - by) ** 2 + (xx - bx) ** 2)
        blob = _soft_disk(bd, br, edge)
        img += contrast * rng.uniform(0.6, 1.0) * blob * (1.0 - mask)

    img += rng.normal(0.0, 0.02 + 0.05 * difficulty, size=(h, w)).astype(np.float32)
    return np.clip(img, 0.0, 1.0).astype(np.float32), mask, label


class SyntheticLesions(Dataset):
    """A split of ``synthetic_lesions``: items generated on demand, deterministic by (seed, split, index)."""

    def __init__(self, split: str, n: int, seed: int, size: tuple[int, int], channels: int,
                 difficulty: float, lesion_size: float) -> None:
        self.split, self.n, self.seed, self.size, self.channels = split, n, seed, size, channels
        self.difficulty, self.lesion_size = difficulty, lesion_size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.n:
            raise IndexError(index)
        img, mask, label = generate(self.seed, self.split, index, self.size, self.difficulty, self.lesion_size)
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


def build(params: dict[str, Any], ctx: DataContext) -> DataBundle:
    """Factory of ``synthetic_lesions``."""
    seed = int(ctx.seed) + int(params.get("seed_offset", 0))
    size = (int(ctx.image_size[0]), int(ctx.image_size[1]))
    difficulty = float(params.get("difficulty", 0.5))
    lesion_size = float(params.get("lesion_size", 0.12))
    counts = {"train": int(params.get("n_train", 320)), "val": int(params.get("n_val", 80)),
              "test": int(params.get("n_test", 80))}
    splits = {name: SyntheticLesions(name, n, seed, size, ctx.channels, difficulty, lesion_size)
              for name, n in counts.items()}
    info = {"counts": counts, "difficulty": difficulty, "lesion_size": lesion_size, "seed": seed,
            "fingerprint": f"synthetic_lesions:{seed}:{difficulty}:{lesion_size}:{size}:{counts}"}
    return finalize_bundle(splits, CLASS_NAMES, ctx, has_masks=True, info=info, dataset="synthetic_lesions")
