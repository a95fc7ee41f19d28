"""Checkpoint files: written atomically (temporary file, then rename) so a kill leaves a loadable file."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .errors import UserError


def save(state: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise UserError(f"{path}: checkpoint not found") from None
    except Exception as exc:
        raise UserError(f"{path}: cannot read checkpoint: {type(exc).__name__}: {exc}") from None
