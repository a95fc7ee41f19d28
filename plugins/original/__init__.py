"""Outputs in the format of the original research code (Gonçalves & Cardoso 2021): its text results and its
attribution files. The attribution files are opt-in: list ``original_attributions`` in ``figure.kinds``."""
from __future__ import annotations

from typing import Any

from medattn.api import Component, hookimpl

# params of original_attributions (here, so that listing plugins does not import numpy)
ATTRIBUTION_PARAMS: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "dir": {"type": ["string", "null"], "default": None,
                "description": "folder (relative to the run directory); null = <experiment>/attributes/<backbone>/"},
        "names": {"type": "object", "additionalProperties": {"type": "string"}, "default": {},
                  "description": "method label -> name in the file (the original wrote 'dl' for saliency)"},
        "variant": {"type": ["string", "null"], "default": None,
                    "description": "variant name in the file (null = the original's setting: baseline, "
                                   "baselinedaug, mldam, mldamdaug)"},
    },
}


_EMPTY = {"type": "object", "additionalProperties": False, "properties": {}}


@hookimpl
def medattn_components() -> list[Component]:
    return [
        Component("figure", "original_results", "medattn_plugins.original.results_text:run_file",
                  "the original code's text results (metrics/original_results.txt)", _EMPTY,
                  {"scope": "run"}),
        Component("figure", "original_results_summary", "medattn_plugins.original.results_text:experiment_file",
                  "the original code's text results across the variants (<experiment>/original_results.txt)",
                  _EMPTY, {"scope": "experiment"}),
        Component("figure", "original_attributions", "medattn_plugins.original.attribution_files:write",
                  "the original code's attribution files: img_{idx}_original_{label}.npy and "
                  "img_{idx}_{method}_{variant}_label_{label}.npy (listed kinds only)", ATTRIBUTION_PARAMS,
                  {"scope": "run", "opt_in": True}),
    ]
