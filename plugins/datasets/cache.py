"""On-disk cache of decoded, resized images (keyed by file, mtime, size and the decode settings).

The first epoch decodes each file and writes the resized result; later epochs (and later runs with the
same settings) read a small .npy instead of decoding DICOM or large PNGs again. The augmentation is
applied after the cache, so the cache never depends on the transform.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np


class DiskCache:
    """Decoded images as uint16 .npy files under ``root``, one per (file, mtime, size, settings)."""

    def __init__(self, root: str | Path, settings: str) -> None:
        self.root = Path(root)
        self.settings = settings
        self.root.mkdir(parents=True, exist_ok=True)

    def key(self, paths: list[str]) -> str:
        """The cache key of one sample (its files' identity plus the settings)."""
        h = hashlib.sha1(self.settings.encode())
        for p in paths:
            try:
                st = os.stat(p)
                ident = f"{os.path.abspath(p)}|{st.st_mtime_ns}|{st.st_size}"
            except OSError:
                ident = f"{os.path.abspath(p)}|missing"
            h.update(ident.encode())
        return h.hexdigest()

    def _file(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str) -> Any | None:
        """The cached array (C, H, W) float32 in [0, 1], or None."""
        f = self._file(key)
        try:
            arr = np.load(f, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        return arr.astype(np.float32) / 65535.0

    def put(self, key: str, arr: np.ndarray) -> None:
        """Store (C, H, W) float in [0, 1] atomically (temp file + rename, safe across workers)."""
        f = self._file(key)
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_name(f"{f.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, np.round(np.clip(arr, 0, 1) * 65535.0).astype(np.uint16), allow_pickle=False)
        os.replace(tmp, f)
