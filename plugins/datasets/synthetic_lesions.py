"""``synthetic_lesions``: procedurally generated tissue-like images with one lesion and its mask.

Each image is a function of (seed, split, index) only, so it is generated on demand in ``__getitem__``
(about 1 ms at 64 px) and is identical in every worker process and every run.

Class 0: a round / oval lesion with a smooth edge. Class 1: a spiculated lesion (a smaller core with thin
radial spikes) of about the same integrated brightness. Both sit on smoothed noise with fibrous streaks;
``difficulty`` lowers the lesion contrast, raises the noise and adds round distractor blobs (in both
classes) and more streaks, so the spikes are the only cue; ``decoys`` adds fainter lesions of the other class's
shape, so that the most conspicuous lesion decides the label and where to look matters; ``shortcut`` adds a
corner marker that agrees with the label in a share of the images (a shortcut a model can learn instead of the
lesion), and test splits where it does not: ``shifted`` (the number form), or any named in the mapping form
(``{agree: 1.0, splits: {flipped: 0.0, nomarker: null}}``: the test images with the marker in the class-0 images,
or without it). The mask is the lesion's footprint; the confound mask is the marker's box.

No library generates such images, so the generator is hand-written (numpy only).
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medattn.api import DataBundle, DataContext

from .splits import CALIBRATION, finalize_bundle

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


def marker_box(size: tuple[int, int]) -> tuple[slice, slice]:
    """Where the marker goes: a square of 7% of the shorter side, two pixels from the top-left corner."""
    side = max(2, int(round(0.07 * min(size))))
    return slice(2, 2 + side), slice(2, 2 + side)


def _marker_drawn(seed: int, code: int, index: int, label: int, agree: float | None) -> bool:
    """Whether the marker is in an image: in class-1 images and not in class-0 ones for a share ``agree`` of the
    images (the other way round for the rest; None: never). Drawn from a generator of its own, so the rest of
    the image is the same with and without it."""
    if agree is None:
        return False
    draw = np.random.default_rng([int(seed) & 0xFFFFFFFF, code, int(index), 1]).random()
    return (label == 1) == (draw < agree)


def _split_code(split: str) -> int:
    return _SPLIT_CODE.get(split, zlib.crc32(split.encode()))


def render(seed: int, split: str, index: int, size: tuple[int, int], difficulty: float, lesion_size: float,
           decoys: float, agree: float | None = None, strength: float = 0.35, images_of: str | None = None,
           marker: bool | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """One (image, mask, label) of ``split``: the image of (seed, ``images_of`` or ``split``, index), with the
    corner marker where the agreement ``agree`` of ``split`` puts it (None: no marker), or where ``marker``
    says (True / False: the same image with and without it)."""
    code = _split_code(images_of or split)
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
    drawn = _marker_drawn(seed, _split_code(split), index, label, agree) if marker is None else marker
    if drawn:  # uses no draw of the image's generator: the image is the same with and without it
        img[marker_box(size)] += strength
    img += rng.normal(0.0, 0.02 + 0.05 * difficulty, size=(h, w)).astype(np.float32)
    return np.clip(img, 0.0, 1.0).astype(np.float32), mask, label


def generate(seed: int, split: str, index: int, size: tuple[int, int], difficulty: float, lesion_size: float,
             decoys: float, shortcut: float = 0.0) -> tuple[np.ndarray, np.ndarray, int]:
    """One (image HxW float32 in [0,1], mask HxW float32, label) for (seed, split, index).

    ``decoys``: expected number of fainter lesions of the *other* class's shape elsewhere in the image, so that
    the label is only told by the most conspicuous lesion: where to look matters (the mask is the true lesion).
    ``shortcut``: the share of images whose corner marker agrees with the label (0: no marker), a half in the
    ``shifted`` split (the number form of the param)."""
    agree = None if shortcut <= 0 else 0.5 if split == SHIFTED else shortcut
    return render(seed, split, index, size, difficulty, lesion_size, decoys, agree)


def site_of(seed: int, split: str, index: int, sites: int) -> int:
    """The acquisition site of an image (0 .. sites - 1), from a generator of its own (so the image is the same
    with and without sites, and the site does not follow the label)."""
    return int(np.random.default_rng([int(seed) & 0xFFFFFFFF, _split_code(split), int(index), 2]).integers(sites))


def site_contrast(img: np.ndarray, site: int, sites: int) -> np.ndarray:
    """The image as site ``site`` records it: site 0 as generated, later sites with contrast around mid-grey
    lowered step by step to 55% at the last one (a scanner or protocol that shows lesions less clearly)."""
    if site == 0:
        return img
    gain = 1.0 - 0.45 * site / max(1, sites - 1)
    return np.clip(0.5 + (img - 0.5) * gain, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class MarkerPlan:
    """The marker of one split: its agreement (None: no marker), brightness, and whose images it is drawn on."""

    agree: float | None = None
    strength: float = 0.35
    images_of: str | None = None  # the test split's images, for the extra splits of the mapping form

    @property
    def present(self) -> bool:
        return self.agree is not None


def marker_plans(shortcut: Any) -> dict[str, MarkerPlan]:
    """{split: MarkerPlan} of the ``shortcut`` param: a number (train / val / test at that agreement and a
    ``shifted`` split of other images at one half; 0: none), or {agree, strength, splits} (extra splits show the
    test images)."""
    if not isinstance(shortcut, dict):
        value = float(shortcut or 0)
        if value <= 0:
            return {}
        return {**{k: MarkerPlan(value) for k in _SPLIT_CODE}, SHIFTED: MarkerPlan(0.5)}
    strength = float(shortcut.get("strength", 0.35))
    plans = {k: MarkerPlan(float(shortcut["agree"]), strength) for k in _SPLIT_CODE}
    for name, agree in (shortcut.get("splits") or {}).items():
        plans[name] = MarkerPlan(None if agree is None else float(agree), strength, images_of="test")
    return plans


class SyntheticLesions(Dataset):
    """A split of ``synthetic_lesions``: items generated on demand, deterministic by (seed, split, index). With a
    marker in the data set every item carries ``confound_mask``, the marker's box (whether the marker is drawn
    in that image or not: it is where the shortcut lives), and :meth:`confound_pair` renders an image with and
    without the marker."""

    def __init__(self, split: str, n: int, seed: int, size: tuple[int, int], channels: int,
                 difficulty: float, lesion_size: float, decoys: float, plan: MarkerPlan | None = None,
                 confound: bool = False, sites: int = 0) -> None:
        self.split, self.n, self.seed, self.size, self.channels = split, n, seed, size, channels
        self.difficulty, self.lesion_size, self.decoys = difficulty, lesion_size, decoys
        self.plan, self.confound = plan or MarkerPlan(), confound
        self.sites = int(sites)

    def __len__(self) -> int:
        return self.n

    def _render(self, index: int, marker: bool | None = None) -> tuple[np.ndarray, np.ndarray, int]:
        p = self.plan
        img, mask, label = render(self.seed, self.split, index, self.size, self.difficulty, self.lesion_size,
                                  self.decoys, p.agree, p.strength, p.images_of, marker)
        if self.sites:  # only when asked, so that sites: 0 leaves every image as it was
            img = site_contrast(img, site_of(self.seed, self.split, index, self.sites), self.sites)
        return img, mask, label

    def _tensor(self, img: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(img)[None]
        return t.expand(3, -1, -1).clone() if self.channels == 3 else t

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.n:
            raise IndexError(index)
        img, mask, label = self._render(index)
        item = {"image": self._tensor(img), "label": label, "id": self.item_id(index),
                "mask": torch.from_numpy(mask)[None], "group": self.item_id(index)}
        if self.confound:
            box = torch.zeros(1, *self.size)
            box[(0, *marker_box(self.size))] = 1.0
            item["confound_mask"] = box
        return item

    @property
    def confound_pair(self) -> Any:
        """``confound_pair(index)`` -> (image with the marker, the same image without it), how much a model relies
        on the shortcut; None without a marker in the data set (no ``shortcut`` param): there is then no shortcut
        to rely on, and the test job reports no ``shortcut.reliance``."""
        return self._marker_pair if self.confound else None

    def _marker_pair(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.n:
            raise IndexError(index)
        return self._tensor(self._render(index, True)[0]), self._tensor(self._render(index, False)[0])

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
    look = {k: float(params[k]) for k in ("difficulty", "lesion_size", "decoys")}
    shortcut = params["shortcut"]
    plans = marker_plans(shortcut)
    counts = {"train": int(params["n_train"]), "val": int(params["n_val"]), "test": int(params["n_test"])}
    counts.update({name: int(params["n_test"]) for name in plans if name not in counts})  # the shortcut's splits
    if int(params.get("n_calibration") or 0):  # drawn like the test split, for test.conformal.split: calibration
        counts[CALIBRATION] = int(params["n_calibration"])
        if plans:
            plans[CALIBRATION] = plans["test"]
    confound = bool(plans)
    sites = int(params.get("sites") or 0)
    splits = {name: SyntheticLesions(name, n, seed, size, ctx.channels, **look, plan=plans.get(name),
                                     confound=confound, sites=sites) for name, n in counts.items()}
    shown = f"{look['difficulty']}:{look['lesion_size']}" + (f":{look['decoys']}" if look["decoys"] else "")
    shown += f":sites={sites}" if sites else ""
    if isinstance(shortcut, dict):
        shown += ":shortcut=" + json.dumps(shortcut, sort_keys=True)
    elif shortcut:
        shown += f":shortcut={float(shortcut)}"
    info = {"counts": counts, **look, "shortcut": shortcut if isinstance(shortcut, dict) else float(shortcut),
            "seed": seed,
            "fingerprint": f"synthetic_lesions:{seed}:{shown}:{size}:{counts}"}
    return finalize_bundle(splits, CLASS_NAMES, ctx, has_masks=True, info=info, dataset="synthetic_lesions",
                           has_confound_masks=confound)
