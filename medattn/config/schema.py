"""The experiment schema: the core's own keys composed with every component's ``params`` fragment.

A *slot* is a place in the config that selects a component: ``{name: ..., params: {...}}`` (a bare
string is short for ``{name: string}``). Job schemas mark their slots with ``{"$medattn_slot": kind}``;
the core marks dataset / backbone / attention / head. The composed schema (:func:`composed_schema`, what
``medattn schema`` prints) is plain JSON Schema, Draft 2020-12: a slot is a name or ``{name, params}`` with
one ``if/then`` per component name, ``matrix`` knows every dotted key, a file with ``extends`` may leave
out what its parents give. Editors use it as it is, and ``validate`` checks every run against it.
"""
from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Callable
from typing import Any

from ..evidence.metric_specs import CORRECTIONS, MCNEMAR_TESTS, comparable_metrics, metric_names
from ..params import SLOT, checker_class, fill_defaults, slot
from ..params import short_repr as _short
from ..registry import Registry
from .sweep_schema import sweep_schema, sweep_section
from .yaml_marks import Marked, dotted

__all__ = ["SLOT", "slot", "fill_defaults", "compose", "composed_schema", "core_schema", "validate", "validator"]

DRAFT = "https://json-schema.org/draft/2020-12/schema"


COMPARE = {
    "type": ["object", "null"], "additionalProperties": False, "default": None,
    "description": "paired comparisons of the variants on the same test images (comparisons.csv and .md)",
    "properties": {
        "reference": {"anyOf": [{"type": ["string", "null"]},
                                {"type": "object", "additionalProperties": {"type": "string"}}],
                      "default": None,
                      "description": "a variant name (every other variant against it); none (each variant against "
                                     "its variant without attention); {variant: reference}; null: the first variant"},
        "metrics": {"type": "array", "minItems": 1, "uniqueItems": True,
                    "items": {"type": "string", "if": {"pattern": "\\."},
                              "then": {"pattern": "^([A-Za-z0-9_-]+\\.(" + "|".join(
                                  [*comparable_metrics(), *metric_names(comparable=True, source="quality")])
                                  + ")|shortcut\\.(" + "|".join(metric_names(comparable=True, source="shortcut"))
                                  + ")|[^=.]+=.*\\.(" + "|".join(comparable_metrics()) + "))$"},
                              "else": {"enum": list(comparable_metrics())}},
                    "default": ["roc_auc", "accuracy"],
                    "description": "metrics to compare: a test metric (roc_auc), the same on another split of "
                                   "test.splits (shifted.roc_auc), an explanation-quality score of a method, "
                                   "paired image by image (saliency.energy_in_mask), the reliance on a "
                                   "confound, paired image by image (shortcut.reliance), or a test metric on the "
                                   "test images of one subgroup, column=value (site=north.roc_auc; the column "
                                   "must be one of test.subgroups)"},
        "correction": {"enum": list(CORRECTIONS), "default": "holm",
                       "description": "multiple-comparison correction over the whole table"},
        "mcnemar": {"enum": list(MCNEMAR_TESTS), "default": "exact",
                    "description": "accuracy with one seed: exact (the exact binomial test below 25 discordant pairs, "
                                   "the uncorrected chi-square from 25) or mid_p (the mid-p binomial test, less "
                                   "conservative)"},
        "checkpoint": {"type": ["string", "null"], "default": None,
                       "description": "tested checkpoint compared (null: the first of test.checkpoints)"},
        "resamples": {"type": "integer", "minimum": 1, "default": 2000,
                      "description": "bootstrap resamples, where a bootstrap is used"},
    },
}


CARD = {
    "type": ["object", "null"], "additionalProperties": False, "default": None,
    "description": "what the model card of report.html takes from the authors (the rest comes from the run)",
    "properties": {
        "intended_use": {"type": ["string", "null"], "default": None,
                         "description": "what the model is for, for whom, and what it is not for"},
        "caveats": {"type": ["string", "null"], "default": None,
                    "description": "known limits, populations and settings it was not tested on"},
        "authors": {"type": ["string", "null"], "default": None, "description": "who built and reports it"},
        "contact": {"type": ["string", "null"], "default": None, "description": "where to report problems"},
    },
}


def core_schema(reg: Registry) -> dict:
    """The core schema with slot markers (before composition)."""
    job_props = {}
    for name in reg.names("job"):
        job_props[name] = copy.deepcopy(dict(reg.get("job", name).params_schema))
    dataset_extra = {
        "image_size": {"description": "input size the images are resized to: an int (square) or [height, width]",
                       "anyOf": [{"type": "integer", "minimum": 8, "maximum": 4096},
                                 {"type": "array", "items": {"type": "integer", "minimum": 8, "maximum": 4096},
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
        "seed": {"type": ["integer", "null"], "minimum": 0, "default": None,
                 "description": "seed of the data: carved splits and generated images (null: the experiment's "
                                "seed); fix it to keep one test set across repeated seeds, so comparisons are "
                                "paired image by image"},
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
                        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}},
                                  {"type": "null"}]},
            "seed": {"type": "integer", "minimum": 0, "default": 42, "description": "seed for python, numpy, torch"},
            "seeds": {"type": ["array", "null"], "items": {"type": "integer", "minimum": 0}, "minItems": 1,
                      "uniqueItems": True, "default": None,
                      "description": "repeats, in place of seed: every variant runs once per seed, in "
                                     "VARIANT/seed-N/ (null: one run with seed)"},
            "compare": COMPARE,
            "card": CARD,
            "sweep": sweep_section(),
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
                    "attention": {**slot("attention", "attention module over the backbone's levels (default: none)"),
                                  "default": {"name": "none"}},
                    "head": slot("head", "maps attention output to logits; default: the attention's paper head"),
                    "output": {"enum": ["auto", "sigmoid", "softmax"], "default": "auto",
                               "description": "sigmoid: 1 output + BCE-with-logits; softmax: one output per "
                                              "class + cross-entropy; auto: sigmoid for 2 classes"},
                },
            },
            "jobs": {"type": "array", "uniqueItems": True, "items": {"enum": reg.names("job")},
                     "default": default_jobs(reg),
                     "description": "jobs to run, in order"},
            "matrix": {"description": "one run per combination (composed_schema spells out its forms)"},
            **job_props,
        },
    }


def default_jobs(reg: Registry) -> list[str]:
    """The jobs run when a file names none: those whose record says ``defaults={"default_order": N}``, by N."""
    marked = [(reg.get("job", n).defaults.get("default_order"), n) for n in reg.names("job")]
    return [n for order, n in sorted((o, n) for o, n in marked if o is not None)]


def compose(schema: Any, reg: Registry) -> Any:
    """Replace slot markers by JSON Schema: a component name (the shorthand), or ``{name, params}`` with one
    ``if/then`` per component name checking its params fragment."""
    if isinstance(schema, list):
        return [compose(s, reg) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if SLOT not in schema:
        return {k: compose(v, reg) for k, v in schema.items()}
    kind = schema[SLOT]
    names = reg.names(kind)
    props: dict[str, Any] = {
        "name": {"enum": names, "description": f"one of the registered {kind} components"},
        "params": {"type": "object", "description": f"parameters of the chosen {kind}"},
    }
    props.update(compose(schema.get("extra", {}), reg))
    cases = []
    for n in names:
        frag = dict(reg.get(kind, n).params_schema)
        then: dict[str, Any] = {"properties": {"params": frag}}
        if frag.get("required"):  # {name: x} alone would skip the params fragment
            then["required"] = ["params"]
        cases.append({"if": {"properties": {"name": {"const": n}}, "required": ["name"]}, "then": then})
    description = schema.get("description", "")
    return {
        "description": f"{description}: one of the {kind} names, or {{name: ..., params: {{...}}}}".lstrip(": "),
        "anyOf": [
            {"type": "string", "enum": names},
            {"type": "object", "required": ["name"], "additionalProperties": False, "properties": props,
             "allOf": cases},
        ],
    }


ROOT = "#/$defs/experiment"


def composed_schema(reg: Registry) -> dict:
    """The schema of experiment files, as ``medattn schema`` prints it: plain JSON Schema (Draft 2020-12).

    It takes a file as written: component names alone, ``matrix`` lists and bundles, ``extends`` (a file
    that extends another may leave out what its parents give), ``plugins``. ``validate`` checks every
    variant of an experiment against this same schema after ``extends``, ``--set`` and the matrix.
    """
    full = compose(core_schema(reg), reg)
    del full["$schema"]
    exact, patterns = _dotted_paths(full)
    refs = {p: _ref(ptrs) for p, ptrs in exact.items()}
    prefs = {p: _ref(ptrs) for p, ptrs in patterns.items()}
    bundle = {"$ref": "#/$defs/matrix_bundle"}

    def dim(ref: dict) -> dict:
        return {"anyOf": [{"type": "array", "minItems": 1, "items": ref}, bundle]}

    full["properties"]["matrix"] = {
        "type": ["object", "null"],
        "description": "one run per combination: dotted.key: [value, ...], or a bundle label: "
                       "{option: {dotted.key: value, ...}, ...} whose options set several keys and name the run",
        "properties": {p: dim(r) for p, r in refs.items()},
        "patternProperties": {p: dim(r) for p, r in prefs.items()},
        "additionalProperties": bundle,
    }
    full["properties"]["sweep"] = sweep_schema(list(exact), list(patterns))
    partial = _without_required({k: v for k, v in full.items() if k != "properties"})
    partial["properties"] = {k: _without_required(v) for k, v in full["properties"].items() if k != "matrix"}
    partial["properties"]["matrix"] = {"$ref": ROOT + "/properties/matrix"}
    return {
        "$schema": DRAFT,
        "title": "medattn experiment",
        "description": "an experiment file; a file that extends others is checked without required keys",
        "$defs": {
            "experiment": full,
            "partial": partial,
            "matrix_bundle": {"type": "object", "minProperties": 1, "description": "option name -> settings",
                              "additionalProperties": {"$ref": "#/$defs/matrix_option"}},
            "matrix_option": {"type": "object", "minProperties": 1, "additionalProperties": False,
                              "description": "dotted.key -> value, set together by this option",
                              "properties": refs, "patternProperties": prefs},
        },
        "if": {"required": ["extends"], "properties": {"extends": {"type": ["string", "array"], "minItems": 1}}},
        "then": {"$ref": "#/$defs/partial"},
        "else": {"$ref": ROOT},
    }


def _dotted_paths(full: dict) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Every dotted key a matrix may set -> JSON pointers of its schema: exact keys, and regex patterns
    (list positions, the params of a component, whose schema depends on the chosen name)."""
    exact: dict[str, list[str]] = {}
    patterns: dict[str, list[str]] = {}

    def walk(node: Any, pointer: str, path: list[str], pattern: bool) -> None:
        if not isinstance(node, dict):
            return
        for i, branch in enumerate(node.get("anyOf", [])):
            walk(branch, f"{pointer}/anyOf/{i}", path, pattern)
        for key, sub in node.get("properties", {}).items():
            if not path and key in ("matrix", "extends", "sweep"):
                continue
            seg = re.escape(key) if pattern else key
            here = f"{pointer}/properties/{_escape(key)}"
            (patterns if pattern else exact).setdefault(_join(path + [seg], pattern), []).append(here)
            if key == "params" and isinstance(node.get("allOf"), list):  # a component's params: any key
                patterns.setdefault(_join(_escaped(path, pattern) + [re.escape(key), "[^.].*"], True), []).append("")
                continue
            walk(sub, here, path + [seg], pattern)
        items = node.get("items")
        if isinstance(items, dict):
            seg_path = _escaped(path, pattern) + ["[0-9]+"]
            patterns.setdefault(_join(seg_path, True), []).append(f"{pointer}/items")
            walk(items, f"{pointer}/items", seg_path, True)

    walk(full, "", [], False)
    return exact, patterns


def _escaped(path: list[str], already: bool) -> list[str]:
    return path if already else [re.escape(p) for p in path]


def _join(path: list[str], pattern: bool) -> str:
    return "^" + r"\.".join(path) + "$" if pattern else ".".join(path)


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _ref(pointers: list[str]) -> dict:
    if "" in pointers:  # anything goes
        return {}
    refs = [{"$ref": ROOT + p} for p in dict.fromkeys(pointers)]
    return refs[0] if len(refs) == 1 else {"anyOf": refs}


def _without_required(schema: Any) -> Any:
    """The schema with every ``required`` dropped, except inside ``if`` (which picks a component by name)."""
    if isinstance(schema, list):
        return [_without_required(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    return {k: (v if k == "if" else _without_required(v)) for k, v in schema.items() if k != "required"}


def walk_slots(schema: Any, data: Any, fn: Callable[[str, dict, Any, tuple], Any], at: tuple = ()) -> Any:
    """Walk data along the marked schema, calling ``fn(kind, marker, value, path)`` at each slot; returns new
    data."""
    if not isinstance(schema, dict):
        return data
    if SLOT in schema:
        data = fn(schema[SLOT], schema, data, at)
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
    """``attention: NAME`` -> ``attention: {name: NAME, params: {}}`` wherever a slot sits."""

    def expand(kind: str, marker: dict, value: Any, at: tuple) -> Any:
        if isinstance(value, str):
            value = {"name": value}
        if isinstance(value, dict) and "name" in value and "params" not in value:
            value["params"] = {}
        return value

    return walk_slots(schema, data, expand)


Checker = checker_class()


def validator(reg: Registry) -> Any:
    """A validator of experiment files and of each variant: the schema ``medattn schema`` prints."""
    return Checker(composed_schema(reg))


def validate(marked: Marked, reg: Registry, checker: Any = None, raw: dict | None = None) -> list[str]:
    """Every problem of one variant's config, each rendered ``FILE:LINE:COL dotted.path: message``."""
    raw = raw or core_schema(reg)
    marked.data = expand_shorthand(raw, marked.data)
    problems = []
    for err in (checker or validator(reg)).iter_errors(marked.data):
        problems.extend(render(err, marked))
    problems.extend(_clash_problems(raw, marked, reg))
    return sorted(_with_load_note(set(problems), raw, marked, reg), key=_sort_key)


def _with_load_note(problems: set[str], raw: dict, marked: Marked, reg: Registry) -> list[str]:
    """The problems, those about a component name that no plugin provides ending with which plugins failed to
    load (the name may be missing because of one of them)."""
    note = reg.load_note()
    if not note:
        return list(problems)
    heads: set[str] = set()

    def unknown(kind: str, marker: dict, value: Any, at: tuple) -> Any:
        name = value.get("name") if isinstance(value, dict) else None
        if isinstance(name, str) and (kind, name) not in reg.components:
            heads.add(f"{marked.mark(at + ('name',))} {dotted(at + ('name',))}: ")
        return value

    walk_slots(raw, marked.data, unknown)
    return [p + note if any(p.startswith(h) for h in heads) else p for p in problems]


def _clash_problems(raw: dict, marked: Marked, reg: Registry) -> list[str]:
    from ..registry import clash_message

    out: list[str] = []

    def check(kind: str, marker: dict, value: Any, at: tuple) -> Any:
        if isinstance(value, dict) and isinstance(value.get("name"), str) and (kind, value["name"]) in reg.clashes:
            out.append(f"{marked.mark(at + ('name',))} {dotted(at + ('name',))}: "
                       f"{clash_message(reg.clashes[(kind, value['name'])])}")
        return value

    walk_slots(raw, marked.data, check)
    return out


def render(err: Any, marked: Marked) -> list[str]:
    """One jsonschema error as ``FILE:LINE:COL dotted.path: message`` lines (with a did-you-mean)."""
    path = tuple(err.absolute_path)
    if err.validator in ("anyOf", "oneOf"):
        fitting = _fitting(err)
        if fitting:
            return [line for sub in fitting for line in render(sub, marked)]
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        known = list(err.schema.get("properties", {}))
        out = []
        patterns = list(err.schema.get("patternProperties", {}))
        for key in err.instance:
            if key in known or any(re.search(p, str(key)) for p in patterns):
                continue
            hint = _did_you_mean(str(key), known)
            out.append(f"{marked.mark(path + (key,), key=True)} {dotted(path + (key,))}: unknown key{hint}")
        return out
    if err.validator == "required" and isinstance(err.instance, dict):
        return [f"{marked.mark(path)} {dotted(path + (key,))}: missing; this key is required"
                for key in err.validator_value if key not in err.instance]
    where = marked.mark(path)
    if err.validator == "enum":
        hint = _did_you_mean(str(err.instance), [str(v) for v in err.validator_value])
        msg = f"{_short(err.instance)} is not one of {_short(err.validator_value, 300)}{hint}"
    elif err.validator == "type":
        want = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        msg = f"expected {' or '.join(want)}, got {_json_type(err.instance)} {_short(err.instance)}{_hint(want, err.instance)}"
    elif err.validator in ("anyOf", "oneOf"):
        msg = f"{_short(err.instance)} is not valid here; expected {err.schema.get('description') or 'another form'}"
    else:
        msg = err.message if len(err.message) < 300 else err.message[:297] + "..."
    return [f"{where} {dotted(path) or '<top>'}: {msg}"]


def _fitting(err: Any) -> list:
    """The errors of the alternatives of an anyOf that fit the value's type (e.g. the ``{name, params}``
    form of a component, or the integer form of a size), so the message says what is wrong inside it."""
    branches: dict[int, list] = {}
    for sub in err.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    fit = []
    for subs in branches.values():
        at_top = [s for s in subs if not s.relative_path]
        if any(s.validator == "type" for s in at_top):
            continue
        if any(s.validator in ("enum", "const") and not _same_type(s) for s in at_top):
            continue
        fit.extend(subs)
    return fit


def _same_type(err: Any) -> bool:
    values = err.validator_value if err.validator == "enum" else [err.validator_value]
    return any(_json_type(v) == _json_type(err.instance) for v in values)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", dict: "object", list: "array", type(None): "null"}.get(type(value), type(value).__name__)


NUMBER_LIKE = re.compile(r"[-+]?[0-9][0-9_]*(\.[0-9_]*)?([eE][-+]?[0-9]+)?")


def _hint(want: list[str], value: Any) -> str:
    """Why a value the user meant as a boolean or number was read as text (YAML 1.2)."""
    if not isinstance(value, str):
        return ""
    if "boolean" in want and value.lower() in ("yes", "no", "on", "off", "y", "n"):
        return " (YAML 1.2: write true or false)"
    if {"integer", "number"} & set(want) and NUMBER_LIKE.fullmatch(value) and "_" in value:
        return f" (write {value.replace('_', '')}: no _ in numbers)"
    return ""


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    if options and len(options) <= 12:
        return f" (known: {', '.join(options)})"
    return ""


def _sort_key(line: str) -> tuple:
    head = line.split(" ", 1)[0]
    parts = head.rsplit(":", 2)
    if len(parts) == 3 and parts[1].isdigit():
        return (parts[0], int(parts[1]), int(parts[2]) if parts[2].isdigit() else 0, line)
    return (head, 0, 0, line)

