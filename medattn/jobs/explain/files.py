"""What the explain job writes in the run directory (paths from :class:`medattn.store.rundir.RunDir`).

``samples``: index, ids, labels, scores, preds, targets, the un-normalised images and the masks when the data set
has them; one attributions file per method label with ``attributions`` (N, C|1, H, W) aligned with the samples,
``method`` and ``params``; ``quality`` (JSON), ``quality_curves`` (deletion / insertion curves) and
``quality_images`` (the scores of each image, CSV);
``attention_raw``: the maps the attention module exposes, when it does.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...files import atomic_write_bytes, atomic_write_text, write_rows
from ...store.rundir import RunDir


def clear(rd: RunDir) -> None:
    """Remove an earlier explain's maps and scores (the figures would draw them), also when nothing qualifies."""
    stale = [rd.samples, rd.quality, rd.quality_curves, rd.quality_images, rd.attention_raw,
             *(rd.attributions(label) for label in rd.attribution_labels())]
    for path in stale:
        path.unlink(missing_ok=True)


def write_npz(path: Path, **arrays) -> None:
    """A compressed .npz written atomically."""
    import io

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def write_samples(rd: RunDir, chosen: dict, attention: dict | None) -> None:
    """The explained images and, when the attention module has maps, those maps."""
    if attention:
        write_npz(rd.attention_raw, **attention)
    write_npz(rd.samples, **chosen)


def write_attributions(rd: RunDir, label: str, spec: dict, attributions: np.ndarray) -> Path:
    """One method's attributions, with the method name and its params."""
    path = rd.attributions(label)
    write_npz(path, attributions=attributions, method=spec["name"],
              params=json.dumps(spec.get("params") or {}, default=str))
    return path


def write_quality(rd: RunDir, scores: dict[str, dict[str, float]], curves: dict[str, np.ndarray]) -> None:
    """Scores per method label, and the curves keyed ``<label>/<curve>``."""
    if scores:
        atomic_write_text(rd.quality, json.dumps(scores, indent=2))
    if curves:
        write_npz(rd.quality_curves, **curves)


def write_quality_images(rd: RunDir, ids: list[str], per_image: dict[str, dict[str, np.ndarray]]) -> None:
    """The scores of each image (one row per method and image), for comparisons paired image by image."""
    if not per_image:
        return
    names = list(dict.fromkeys(k for scores in per_image.values() for k in scores))
    rows = []
    for method, scores in per_image.items():
        for i, image in enumerate(ids):
            values = [scores[k][i] if k in scores else float("nan") for k in names]
            rows.append([image, method, *(repr(float(v)) for v in values)])
    write_rows(rd.quality_images, ["id", "method", *names], rows)
