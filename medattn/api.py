"""The public surface of medattn for plugin authors: import this module and nothing else from medattn.

Everything else under ``medattn.*`` is internal and may change between releases; lint (ruff banned-api)
fails for built-in plugins and examples that import it.

- hooks and records: :data:`hookimpl`, :class:`Component`, the factory contexts, :class:`DataBundle` and
  :class:`LossBatch` (what a loss term is called with); :data:`MAP_KINDS` and :func:`attention_map_kinds` (what
  kind each attention map is)
- errors: :class:`UserError` (bad input, one clear message, exit 2), :class:`NotApplicable`, and
  :func:`failure_reason` (a library's exception in one line, for a message that names the field)
- files: :func:`atomic_write_text`, :func:`atomic_write_bytes`, :func:`write_csv`, :func:`write_rows`,
  :func:`format_table`, :func:`save_figure`
- images: :func:`read_image` (PNG, JPEG, TIFF, DICOM; 8/16-bit), :func:`to_tensor`, :func:`mask_to_tensor`,
  :func:`is_dicom`, :class:`BadImage`
- metrics: :func:`metric_spec` (the declaration of a metric: direction, range, description, ...),
  :func:`metric_names`, :class:`MetricSpec`, and :func:`bootstrap_chunks` (the one bootstrap resampler)
- read-only views: :class:`RunView`, :class:`ExperimentView`, with the paths of :class:`RunDir` and
  :class:`ExperimentDir`
- versions: :data:`API_VERSION` (major.minor of this surface), :class:`MedattnDeprecationWarning` and
  :func:`warn_renamed` (a renamed or removed name keeps a warning shim for one minor release)
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .deprecation import API_VERSION, MedattnDeprecationWarning, warn_renamed
from .errors import NotApplicable, UserError, failure_reason
from .evidence.metric_specs import MetricSpec, metric_names, metric_spec
from .files import atomic_write_bytes, atomic_write_text, format_table, write_csv, write_rows
from .hookspecs import (
    KINDS,
    MAP_KINDS,
    AttentionContext,
    Backbone,
    Component,
    DataBundle,
    DataContext,
    ExplainContext,
    FeatureInfo,
    HeadContext,
    LossBatch,
    LossContext,
    ModelContext,
    TransformContext,
    attention_map_kinds,
    hookimpl,
)
from .store.rundir import ExperimentDir, RunDir
from .store.views import ExperimentView, RunView, save_figure

if TYPE_CHECKING:  # imported on first use below
    from .evidence.metrics import bootstrap_chunks
    from .image_io import BadImage, is_dicom, mask_to_tensor, read_image, to_tensor

_IMAGES = ("BadImage", "is_dicom", "mask_to_tensor", "read_image", "to_tensor")


def __getattr__(name: str):
    """The image readers and the resampler, imported on first use: listing plugins and printing the schema
    import no numpy."""
    if name in _IMAGES:
        from . import image_io

        return getattr(image_io, name)
    if name == "bootstrap_chunks":
        from .evidence.metrics import bootstrap_chunks

        return bootstrap_chunks
    raise AttributeError(f"module 'medattn.api' has no attribute {name!r}")


__all__ = [
    "API_VERSION", "KINDS", "MAP_KINDS", "AttentionContext", "Backbone", "BadImage", "Component",
    "MedattnDeprecationWarning",
    "MetricSpec", "bootstrap_chunks", "metric_names", "metric_spec", "DataBundle", "DataContext",
    "ExperimentDir", "ExperimentView", "ExplainContext", "FeatureInfo", "HeadContext", "LossBatch", "LossContext",
    "ModelContext",
    "NotApplicable", "RunDir", "RunView", "TransformContext", "UserError", "atomic_write_bytes",
    "atomic_write_text", "attention_map_kinds", "failure_reason", "format_table", "hookimpl", "is_dicom",
    "mask_to_tensor",
    "read_image", "save_figure", "to_tensor", "warn_renamed", "write_csv", "write_rows",
]
