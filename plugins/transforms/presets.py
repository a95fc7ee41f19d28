"""Augmentation presets of the three reproduced papers, and ``custom`` torchvision.transforms.v2 pipelines.

Each factory returns a callable mapping one float image tensor (C, H, W) in [0, 1] to another of the same
shape. Randomness comes from torch's global generator, which the core seeds.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from medattn.api import TransformContext, UserError


def build_none(params: dict[str, Any], ctx: TransformContext) -> Any:
    """Identity."""
    return v2.Identity()


def build_goncalves2021(params: dict[str, Any], ctx: TransformContext) -> Any:
    """goncalves2021's training augmentation exactly (its Resize to 224 is done by the dataset)."""
    return v2.Compose([
        v2.RandomAffine(degrees=10, translate=(0.05, 0.1), scale=(0.95, 1.05), shear=0,
                        interpolation=v2.InterpolationMode.NEAREST, fill=0),
        v2.RandomHorizontalFlip(0.5),
    ])


class KerasAffine(torch.nn.Module):
    """Keras ImageDataGenerator's random affine: rotation, shifts, shear (degrees), independent x/y zoom.

    torchvision has no anisotropic zoom nor Keras' 'nearest' (edge-replicating) fill, so this is
    hand-written on affine_grid / grid_sample (bilinear, like Keras' order-1 interpolation).
    Ranges follow Keras: shifts are fractions of the side, zoom z in [1 - zoom, 1 + zoom] samples the
    input at z times the output coordinate (z < 1 magnifies), shear is an angle in degrees.
    """

    _PAD = {"nearest": "border", "constant": "zeros", "reflect": "reflection"}

    def __init__(self, rotation: float = 0.0, width_shift: float = 0.0, height_shift: float = 0.0,
                 shear: float = 0.0, zoom: float = 0.0, fill_mode: str = "nearest") -> None:
        super().__init__()
        self.rotation, self.width_shift, self.height_shift = rotation, width_shift, height_shift
        self.shear, self.zoom, self.padding = shear, zoom, self._PAD[fill_mode]

    @staticmethod
    def _u(r: float) -> float:
        return float(torch.empty(()).uniform_(-r, r)) if r else 0.0

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """Apply one random draw to a (C, H, W) or (B, C, H, W) tensor."""
        squeeze = img.ndim == 3
        x = img[None] if squeeze else img
        h, w = x.shape[-2:]
        th = math.radians(self._u(self.rotation))
        sh = math.radians(self._u(self.shear))
        zx = 1.0 + self._u(self.zoom)
        zy = 1.0 + self._u(self.zoom)
        tx = self._u(self.width_shift) * w
        ty = self._u(self.height_shift) * h
        rot = torch.tensor([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]], dtype=torch.float64)
        shear = torch.tensor([[1.0, -math.sin(sh)], [0.0, math.cos(sh)]], dtype=torch.float64)
        zoom = torch.diag(torch.tensor([zx, zy], dtype=torch.float64))
        a = rot @ shear @ zoom  # pixel-space map from output to input coordinates, about the centre
        d = torch.diag(torch.tensor([w / 2.0, h / 2.0], dtype=torch.float64))
        theta = torch.zeros(2, 3, dtype=torch.float64)
        theta[:, :2] = torch.linalg.inv(d) @ a @ d
        theta[:, 2] = torch.linalg.inv(d) @ torch.tensor([tx, ty], dtype=torch.float64)
        theta = theta.to(x.dtype)[None].expand(x.shape[0], 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode=self.padding, align_corners=False)
        return out[0] if squeeze else out


def build_mishra2019(params: dict[str, Any], ctx: TransformContext) -> Any:
    """ImageDataGenerator(width_shift_range=40, shear_range=0.2, zoom_range=0.2, horizontal_flip=True)."""
    return v2.Compose([
        KerasAffine(rotation=params["rotation"], width_shift=min(40.0 / params["reference_size"], 1.0),
                    shear=0.2, zoom=0.2),
        v2.RandomHorizontalFlip(0.5),
    ])


def build_agpad2021(params: dict[str, Any], ctx: TransformContext) -> Any:
    """ImageDataGenerator(shear 0.1, zoom 0.1, rotation 10, width/height shift 0.1, horizontal_flip)."""
    return v2.Compose([
        KerasAffine(rotation=10.0, width_shift=0.1, height_shift=0.1, shear=0.1, zoom=0.1),
        v2.RandomHorizontalFlip(0.5),
    ])


def _convert(key: str, value: Any, where: str) -> Any:
    if key == "interpolation" and isinstance(value, str):
        try:
            return v2.InterpolationMode(value.lower())
        except ValueError:
            names = [m.value for m in v2.InterpolationMode]
            raise UserError(f"{where}.interpolation: '{value}' is not one of {names}") from None
    if isinstance(value, list):
        return tuple(value)
    return value


def build_custom(params: dict[str, Any], ctx: TransformContext) -> Any:
    """Compose the listed torchvision.transforms.v2 ops (names are v2 class names)."""
    ops = []
    known = sorted(n for n in dir(v2) if isinstance(getattr(v2, n), type)
                   and issubclass(getattr(v2, n), v2.Transform) and not n.startswith("_"))
    for i, op in enumerate(params["ops"]):
        name = op["name"]
        where = f"train.augment.params.ops.{i}"
        if name not in known:
            import difflib

            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UserError(f"{where}.name: '{name}' is not a torchvision.transforms.v2 transform{hint}")
        kwargs = {k: _convert(k, v, f"{where}.params") for k, v in op["params"].items()}
        try:
            ops.append(getattr(v2, name)(**kwargs))
        except (TypeError, ValueError) as exc:
            raise UserError(f"{where}.params: {name}: {exc}") from None
    return v2.Compose(ops) if ops else v2.Identity()
