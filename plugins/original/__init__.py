"""Outputs in the format of the original research code (Gonçalves & Cardoso 2021): its text results."""
from __future__ import annotations

from medattn.api import Component, hookimpl

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
    ]
