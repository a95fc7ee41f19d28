"""An attribution map as a DICOM Parametric Map (highdicom): float pixels on the source image's grid, a real-world
value mapping that names the explainer, and a reference to the source instance.

The map the explainer gives is at the model's input size; its channels are summed (signed, as the explainer gave
them) and it is resized back to the source's rows and columns with the inverse of the preprocessing's resize
(bilinear, the whole image stretched), so pixel (r, c) of the map lies on pixel (r, c) of the source.

highdicom (0.28) writes a parametric map only on a source with a coordinate system (a frame of reference with
image position and orientation: CT, MR, tomosynthesis slices, slides). A projection image without one (most
mammograms, radiographs, secondary captures) gets :class:`NoGrid`, which the caller reports as a note; its SR is
written all the same.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .dicom_sr import RESEARCH_NOTE, Algorithm


class NoGrid(Exception):
    """The source image has no coordinate system that a parametric map can be written on (str(e) says why)."""


def to_source_grid(attribution: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """(C|1, h, w) or (h, w) attribution -> (rows, columns) float32: channels summed, bilinear resize."""
    import torch
    from torch.nn import functional as F

    a = np.asarray(attribution, dtype=np.float32)
    a = np.nan_to_num(a.sum(axis=0) if a.ndim == 3 else a)
    t = torch.from_numpy(np.ascontiguousarray(a))[None, None]
    if tuple(t.shape[-2:]) != (rows, columns):
        t = F.interpolate(t, size=(rows, columns), mode="bilinear", align_corners=False,
                          antialias=rows < t.shape[-2] or columns < t.shape[-1])
    return t[0, 0].numpy().astype(np.float32)


def parametric_map(source: Any, attribution: np.ndarray, method: str, algorithm: Algorithm, series_uid: str,
                   series_number: int, instance_number: int, sop_uid: str | None = None) -> Any:
    """The Parametric Map of ``attribution`` by the explainer ``method`` on the grid of ``source`` (a pydicom
    Dataset; its header is enough), in a new series of the source's study."""
    import highdicom as hd
    from highdicom.spatial import get_image_coordinate_system
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    if get_image_coordinate_system(source) is None:
        why = "no frame of reference" if "FrameOfReferenceUID" not in source else "no image position / orientation"
        raise NoGrid(f"no parametric map: the source has {why} (a projection image); highdicom writes parametric "
                     "maps on a patient or slide coordinate system only")
    values = to_source_grid(attribution, int(source.Rows), int(source.Columns))
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        hi = lo + 1.0
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=method[:16], lut_explanation=f"medattn {method} attribution ({RESEARCH_NOTE})"[:64],
        unit=codes.UCUM.NoUnits, value_range=(lo, hi), slope=1.0, intercept=0.0)
    # LINEAR_EXACT: attributions are small floats, and a LINEAR window narrower than 1 is not allowed
    window = hd.VOILUTTransformation(window_center=(lo + hi) / 2, window_width=hi - lo,
                                     voi_lut_function="LINEAR_EXACT", window_explanation=f"{method} range")
    pm = hd.pm.ParametricMap(
        source_images=[source], pixel_array=values, series_instance_uid=series_uid, series_number=series_number,
        sop_instance_uid=sop_uid or generate_uid(), instance_number=instance_number,
        manufacturer="medattn (research software)", manufacturer_model_name=algorithm.name,
        software_versions=algorithm.version, device_serial_number=algorithm.sha256[:16],
        contains_recognizable_visual_features=False, real_world_value_mappings=[mapping],
        voi_lut_transformations=[window], content_label=_label(method),
        content_description=f"{method} attribution, {RESEARCH_NOTE}"[:64])
    pm.SeriesDescription = f"medattn {method} map - RESEARCH USE ONLY"[:64]
    laterality = source.get("Laterality") or source.get("ImageLaterality")
    pm.Laterality = laterality if laterality in ("L", "R") else ""  # General Series: type 2C, empty when unknown
    return pm


def _label(method: str) -> str:
    """A Content Label (CS: upper case, digits, space, underscore; 16 characters) from an explainer's name."""
    import re

    return (re.sub(r"[^A-Z0-9_ ]", "_", method.upper()) or "ATTRIBUTION")[:16]
