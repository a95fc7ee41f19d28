"""The experiment schema: the core's own keys composed with every component's ``params`` fragment.

A *slot* is a place in the config that selects a component: ``{name: ..., params: {...}}`` (a bare
string is short for ``{name: string}``). Job schemas mark their slots with ``{"$medattn_slot": kind}``;
the core marks dataset / backbone / attention / head. The composed schema is plain JSON Schema
(Draft 2020-12: one ``if/then`` per component name), so editors can use it as it is.
"""
from __future__ import annotations

import copy
import difflib
from collections.abc import Callable
from typing import Any

from jsonschema import Draft202012Validator

from ..errors import UserError
from ..registry import Registry
from .yaml_marks import Marked, dotted

SLOT = "$medattn_slot"
DRAFT = "https://json-schema.org/draft/2020-12/schema"


def slot(kind: str, description: str = "", extra: dict | None = None) -> dict:
    """Marker for a place that selects a component of ``kind`` (resolved by :func:`compose`)."""
    marker: dict[str, Any] = {SLOT: kind, "description": description}
    if extra:
        marker["extra"] = extra
    return marker


def core_schema(reg: Registry) -> dict:
    """The core schema with slot markers (before composition)."""
    job_props = {}
    for name in reg.names("job"):
        job_props[name] = copy.deepcopy(dict(reg.get("job", name).params_schema))
    dataset_extra = {
        "image_size": {"description": "input size the images are resized to: an int (square) or [height, width]",
                       "anyOf": [{"type": "integer", "minimum": 8},
                                 {"type": "array", "items": {"type": "integer", "minimum": 8},
                                  "minItems": 2, "maxItems": 2}],
                       "default": 224},
        "normalize": {"description": "auto (the backbone's mean/std), none (scale to [0, 1] only), "
                                     "imagenet, or {mean: [...], std: [...]}",
                      "anyOf": [{"enum": ["auto", "none", "imagenet"]},
                                {"type": "object", "required": ["mean", "std"], "additionalProperties": False,
                                 "properties": {"mean": {"type": "array", "items": {"type": "number"}},
                                                "std": {"type": "array",
                                                        "items": {"type": "number", "exclusiveMinimum": 0}}}}],
                      "default": "auto"},
        "num_workers": {"type": "integer", "minimum": 0, "default": 0,
                        "description": "DataLoader worker processes (0: load in the main process)"},
    }
    return {
        "$schema": DRAFT,
        "title": "medattn experiment",
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "dataset", "model"],
        "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$",
                     "description": "experiment name; runs go to OUTPUT_DIR/NAME/VARIANT"},
            "description": {"type": "string", "description": "free text"},
            "extends": {"description": "file(s) this one deep-merges over, relative to this file",
                        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
            "seed": {"type": "integer", "minimum": 0, "default": 42, "description": "seed for python, numpy, torch"},
            "device": {"type": "string", "pattern": "^(auto|cpu|mps|cuda(:[0-9]+)?)$", "default": "auto",
                       "description": "auto | cpu | cuda | cuda:N | mps"},
            "output_dir": {"type": "string", "default": "runs",
                           "description": "where runs are written (relative to the working directory)"},
            "plugins": {"type": "array", "items": {"type": "string"}, "default": [],
                        "description": "extra plugin modules or .py files to load (this runs their code)"},
            "dataset": slot("dataset", "the data set", dataset_extra),
            "model": {
                "type": "object", "additionalProperties": False, "required": ["backbone"],
                "description": "backbone -> attention -> head -> logits",
                "properties": {
                    "backbone": slot("backbone", "feature extractor giving several levels in one pass"),
                    "attention": slot("attention", "attention module over the backbone's levels"),
                    "head": slot("head", "maps attention output to logits; default: the attention's paper head"),
                    "output": {"enum": ["auto", "sigmoid", "softmax"], "default": "auto",
                               "description": "sigmoid: 1 output + BCE-with-logits; softmax: one output per "
                                              "class + cross-entropy; auto: sigmoid for 2 classes"},
                },
            },
            "jobs": {"type": "array", "uniqueItems": True, "items": {"enum": reg.names("job")},
                     "default": [n for n in ("train", "test") if n in reg.names("job")],
                     "description": "jobs to run, in order"},
            "matrix": {"type": "object", "additionalProperties": {"type": "array", "minItems": 1},
                       "description": "dotted key -> list of values; one run per combination"},
            **job_props,
        },
    }


def compose(schema: Any, reg: Registry) -> Any:
    """Replace slot markers by JSON Schema: name enum + one if/then per component's params fragment."""
    if isinstance(schema, list):
        return [compose(s, reg) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if SLOT in schema:
        kind = schema[SLOT]
        names = reg.names(kind)
        props: dict[str, Any] = {
            "name": {"enum": names, "description": f"one of the registered {kind} components"},
            "params": {"type": "object", "description": f"parameters of the chosen {kind}"},
        }
        props.update(compose(schema.get("extra", {}), reg))
        return {
            "type": "object",
            "description": schema.get("description", ""),
            "required": ["name"],
            "additionalProperties": False,
            "properties": props,
            "allOf": [{"if": {"properties": {"name": {"const": n}}, "required": ["name"]},
                       "then": {"properties": {"params": dict(reg.get(kind, n).params_schema)}}}
                      for n in names],
        }
    return {k: compose(v, reg) for k, v in schema.items()}


def composed_schema(reg: Registry) -> dict:
    return compose(core_schema(reg), reg)


def walk_slots(schema: Any, data: Any, fn: Callable[[str, dict, Any], Any], at: tuple = ()) -> Any:
    """Walk data along the marked schema, calling ``fn(kind, marker, value)`` at each slot; returns new data."""
    if not isinstance(schema, dict):
        return data
    if SLOT in schema:
        data = fn(schema[SLOT], schema, data)
        if isinstance(data, dict):
            for key, sub in schema.get("extra", {}).items():
                if key in data:
                    data[key] = walk_slots(sub, data[key], fn, at + (key,))
        return data
    if isinstance(data, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in data:
                data[key] = walk_slots(sub, data[key], fn, at + (key,))
    elif isinstance(data, list) and isinstance(schema.get("items"), dict):
        return [walk_slots(schema["items"], d, fn, at + (i,)) for i, d in enumerate(data)]
    return data


def expand_shorthand(schema: dict, data: dict) -> dict:
    """``attention: mldam`` -> ``attention: {name: mldam}`` wherever a slot sits."""
    return walk_slots(schema, data, lambda kind, marker, v: {"name": v} if isinstance(v, str) else v)


def fill_defaults(schema: Any, data: Any, reg: Registry | None = None) -> Any:
    """Fill schema ``default`` values into data, including the params of selected components."""
    if not isinstance(schema, dict):
        return data
    if SLOT in schema:
        if isinstance(data, dict) and reg is not None and "name" in data:
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


def validate(marked: Marked, reg: Registry, schema: dict | None = None) -> list[str]:
    """Every problem of a config, each rendered ``FILE:LINE:COL dotted.path: message``."""
    raw = schema or core_schema(reg)
    marked.data = expand_shorthand(raw, marked.data)
    validator = Draft202012Validator(compose(raw, reg))
    problems = []
    for err in validator.iter_errors(marked.data):
        problems.extend(render(err, marked))
    problems.extend(_clash_problems(raw, marked, reg))
    return sorted(set(problems), key=_sort_key)


def _clash_problems(raw: dict, marked: Marked, reg: Registry) -> list[str]:
    from ..registry import clash_message

    out: list[str] = []

    def check(kind: str, marker: dict, value: Any) -> Any:
        if isinstance(value, dict) and (kind, value.get("name")) in reg.clashes:
            out.append(f"{kind} {value['name']!r}: {clash_message(reg.clashes[(kind, value['name'])])}")
        return value

    walk_slots(raw, marked.data, check)
    return out


def render(err: Any, marked: Marked) -> list[str]:
    path = tuple(err.absolute_path)
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        known = list(err.schema.get("properties", {}))
        out = []
        for key in err.instance:
            if key in known:
                continue
            hint = _did_you_mean(str(key), known)
            out.append(f"{marked.mark(path + (key,), key=True)} {dotted(path + (key,))}: unknown key{hint}")
        return out
    where = marked.mark(path)
    if err.validator == "enum":
        hint = _did_you_mean(str(err.instance), [str(v) for v in err.validator_value])
        msg = f"{_short(err.instance)} is not one of {_short(err.validator_value, 300)}{hint}"
    elif err.validator == "type":
        msg = f"expected {err.validator_value}, got {type(err.instance).__name__} {_short(err.instance)}"
    elif err.validator == "anyOf":
        msg = f"{_short(err.instance)} is not valid here; expected {err.schema.get('description') or 'another form'}"
    else:
        msg = err.message if len(err.message) < 300 else err.message[:297] + "..."
    return [f"{where} {dotted(path) or '<top>'}: {msg}"]


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    if options and len(options) <= 12:
        return f" (known: {', '.join(options)})"
    return ""


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _sort_key(line: str) -> tuple:
    head = line.split(" ", 1)[0]
    parts = head.rsplit(":", 2)
    if len(parts) == 3 and parts[1].isdigit():
        return (parts[0], int(parts[1]), int(parts[2]) if parts[2].isdigit() else 0, line)
    return (head, 0, 0, line)


def component_params(reg: Registry, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Params of a component with its schema defaults filled in (validated when not from a file)."""
    comp = reg.get(kind, spec["name"])
    params = dict(spec.get("params") or {})
    errors = list(Draft202012Validator(dict(comp.params_schema)).iter_errors(params))
    if errors:
        raise UserError(f"{kind} {spec['name']!r} params: {errors[0].message}")
    return fill_defaults(comp.params_schema, params, reg)
