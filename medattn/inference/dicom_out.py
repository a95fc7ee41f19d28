"""Predictions written as DICOM: a Comprehensive SR per input instance (:mod:`.dicom_sr`) and, with an explainer,
a Parametric Map (:mod:`.parametric_map`), into a folder, atomically, in new series of the source's study.

Files are named after the source instance: ``<source SOP instance UID>.sr.dcm`` and
``<source SOP instance UID>.<method>.pm.dcm`` (after the new SR's own UID where the source's is not a valid UID,
so that no name leaves the folder; with ``-2``, ``-3`` ... where two sources of one run share a UID); each is
written to a temporary file beside and renamed, so the folder never holds half a file. Every source series gets one new SR series (number 9001) and one map series
(9002) per command; the patient and study attributes are copied from the source by highdicom.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .dicom_sr import Algorithm, Finding, model_uncertainty, structured_report
from .parametric_map import NoGrid, parametric_map

SR_SERIES_NUMBER = 9001
MAP_SERIES_NUMBER = 9002


def dataset_bytes(ds: Any) -> bytes:
    """A dataset as a DICOM file (preamble, file meta) in memory."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def save_dataset(ds: Any, path: Path) -> Path:
    """Write ``ds`` as a DICOM file at ``path`` atomically (temporary file beside, then rename)."""
    from ..files import atomic_write_bytes

    atomic_write_bytes(Path(path), dataset_bytes(ds))
    return Path(path)


def finding_of(predictor: Any, probabilities: np.ndarray, index: int) -> Finding:
    """One input's :class:`Finding` from a predictor's class probabilities and predicted index."""
    probs = np.asarray(probabilities, dtype=np.float32)
    return Finding(list(predictor.class_names), probs, int(index), predictor.threshold,
                   model_uncertainty(predictor, probs))


@dataclass
class Written:
    """What was made for one source instance: the SR (and map) datasets, their files, and a note when something
    could not be made (no map on a projection image, an SR highdicom refused)."""

    sr: Any = None
    map: Any = None
    files: list[Path] = field(default_factory=list)
    note: str = ""


class DicomWriter:
    """Makes (and, with a folder, writes) the SRs and maps of one model's predictions."""

    def __init__(self, predictor: Any, folder: str | Path | None = None, method: str | None = None) -> None:
        self.predictor = predictor
        self.folder = Path(folder) if folder is not None else None
        self.method = method
        self.algorithm = Algorithm.of(predictor.file, predictor.meta)
        self._series: dict[tuple[str, str], list[Any]] = {}  # (source series, kind) -> [uid, instances so far]
        self._stems: set[str] = set()  # the file stems used in this run (a repeated source gets a suffix)

    def _next(self, source: Any, kind: str) -> tuple[str, int]:
        from pydicom.uid import generate_uid

        entry = self._series.setdefault((str(source.get("SeriesInstanceUID", "")), kind), [generate_uid(), 0])
        entry[1] += 1
        return entry[0], entry[1]

    def stem(self, source: Any, sr: Any) -> str:
        """The file stem of a source's results: its SOP instance UID when that is a valid UID (nothing else can
        name a path outside the folder), else the new SR's own UID; ``-2``, ``-3`` ... on a stem used already."""
        from pydicom.uid import UID

        stem = str(source.get("SOPInstanceUID", ""))
        if not UID(stem).is_valid:
            stem = str(sr.SOPInstanceUID)
        name, n = stem, 1
        while name in self._stems:
            n += 1
            name = f"{stem}-{n}"
        self._stems.add(name)
        return name

    def write(self, source: Any, probabilities: np.ndarray, index: int, attribution: np.ndarray | None = None
              ) -> Written:
        """The SR of one prediction on ``source`` (a pydicom Dataset), and its map when ``attribution`` is given;
        written into the folder when there is one. A source highdicom cannot report on gives a note instead."""
        out = Written()
        finding = finding_of(self.predictor, probabilities, index)
        uid, number = self._next(source, "sr")
        try:
            out.sr = structured_report(source, finding, self.algorithm, uid, SR_SERIES_NUMBER, number)
        except (AttributeError, ValueError, TypeError, KeyError) as exc:
            out.note = f"no SR written: {type(exc).__name__}: {exc}"
            return out
        if attribution is not None and self.method:
            uid, number = self._next(source, "map")
            try:
                out.map = parametric_map(source, attribution, self.method, self.algorithm, uid, MAP_SERIES_NUMBER,
                                         number)
            except NoGrid as exc:
                out.note = str(exc)
            except (AttributeError, ValueError, TypeError, KeyError) as exc:
                out.note = f"no parametric map: {type(exc).__name__}: {exc}"
        if self.folder is not None:
            stem = self.stem(source, out.sr)
            out.files.append(save_dataset(out.sr, self.folder / f"{stem}.sr.dcm"))
            if out.map is not None:
                out.files.append(save_dataset(out.map, self.folder / f"{stem}.{self.method}.pm.dcm"))
        return out


def dicom_header(path: str | Path) -> Any:
    """A DICOM file's dataset without its pixel data (what an SR or a map needs of its source)."""
    import pydicom

    return pydicom.dcmread(path, stop_before_pixels=True)
