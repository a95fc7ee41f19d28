"""A component's ``params``: the slot marker that places a component in a schema, schema defaults, and the check
of one component's params against its record's schema (what :meth:`medattn.registry.Registry.build` fills in).

Importing this module imports no jsonschema: listing plugins stays fast; the checker is made on first use.
"""
from __future__ import annotations

import copy
import functools
from typing import Any

from .errors import UserError

SLOT = "$medattn_slot"


def slot(kind: str, description: str = "", extra: dict | None = None) -> dict:
    """Marker for a place that selects a component of ``kind`` (resolved by :func:`medattn.config.schema.compose`)."""
    marker: dict[str, Any] = {SLOT: kind, "description": description}
    if extra:
        marker["extra"] = extra
    return marker


def fill_defaults(schema: Any, data: Any, reg: Any = None) -> Any:
    """Fill schema ``default`` values into data, including the params of the components selected in slots
    (``reg``: the :class:`medattn.registry.Registry` that knows them; this module does not import it).

    After :func:`medattn.config.load_experiment` every key that has a default is present (``seed``,
    ``train.epochs``, a component's params, ...): read ``config["seed"]``, never ``config.get("seed", 42)``.
    """
    if not isinstance(schema, dict):
        return data
    if SLOT in schema:
        if isinstance(data, dict) and reg is not None and isinstance(data.get("name"), str):
            data.setdefault("params", {})
            if (schema[SLOT], data["name"]) in reg.components:
                frag = reg.get(schema[SLOT], data["name"]).params_schema
                data["params"] = fill_defaults(frag, data["params"], reg)
            fill_defaults({"properties": schema.get("extra", {})}, data, reg)
        return data
    if isinstance(data, dict):
        for key, sub in schema.get("properties", {}).items():
            if not isinstance(sub, dict):
                continue
            if key not in data and "default" in sub:
                data[key] = copy.deepcopy(sub["default"])
            if key in data:
                data[key] = fill_defaults(sub, data[key], reg)
    elif isinstance(data, list) and isinstance(schema.get("items"), dict):
        return [fill_defaults(schema["items"], d, reg) for d in data]
    return data


def component_params(reg: Any, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Params of a component with its schema defaults filled in (validated when not from a file)."""
    comp = reg.get(kind, spec["name"])
    params = dict(spec.get("params") or {})
    errors = list(checker_class()(dict(comp.params_schema)).iter_errors(params))
    if errors:
        where = "".join(f".{p}" for p in errors[0].absolute_path)
        raise UserError(f"{kind} {spec['name']!r} params{where}: {errors[0].message}")
    return fill_defaults(comp.params_schema, params, reg)


@functools.cache
def checker_class() -> Any:
    """jsonschema's Draft 2020-12 validator with a linear-time ``uniqueItems``."""
    from jsonschema import Draft202012Validator, validators

    return validators.extend(Draft202012Validator, {"uniqueItems": _unique_items})


def _unique_items(validator: Any, unique: Any, instance: Any, schema: dict) -> Any:
    """``uniqueItems`` in linear time (jsonschema compares every pair of mappings: minutes on a hostile list)."""
    from jsonschema import ValidationError

    if unique and validator.is_type(instance, "array"):
        seen = set()
        for item in instance:
            key = _canonical(item)
            if key in seen:
                yield ValidationError(f"{short_repr(item)} is listed twice")
                return
            seen.add(key)


def _canonical(value: Any) -> Any:
    """A hashable stand-in equal for JSON-equal values (1 == 1.0, but true is not 1)."""
    if isinstance(value, bool) or value is None:
        return ("b", value)
    if isinstance(value, dict):
        return ("d", frozenset((k, _canonical(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("l", tuple(_canonical(v) for v in value))
    return ("v", value)


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
