"""Putting an experiment together: ``extends`` (deep merge), ``--set`` overrides, ``matrix`` expansion."""
from __future__ import annotations

import copy
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .yaml_marks import Mark, Marked, dotted, load_value, load_yaml

MAX_FILES = 64  # files read for one experiment through ``extends``


def load_with_extends(path: Path, display: str | None = None, _stack: tuple[Path, ...] = (),
                      _read: list[int] | None = None) -> Marked:
    """Load a file and the files it ``extends`` (relative to it), deep-merged, child over parent."""
    here = load_yaml(path, display)
    read = [0] if _read is None else _read
    read[0] += 1
    parents = here.data.pop("extends", None)
    if parents is None:
        return here
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise ConfigError([f"{here.mark(('extends',))} extends: must be a file path or a list of file paths"])
    merged = Marked({}, {}, {})
    chain = _stack + (path.resolve(),)
    for i, parent in enumerate(parents):
        where = f"{here.mark(('extends', i))} extends"
        target = _parent_file(path, parent, chain, where)
        if read[0] >= MAX_FILES:
            raise ConfigError([f"{where}: more than {MAX_FILES} files to read; an experiment extends a few"])
        shown = str(Path(display or str(path)).parent / parent)
        merge_into(merged, load_with_extends(target, shown, chain, read))
    merge_into(merged, here)
    return merged


def _parent_file(path: Path, parent: str, chain: tuple[Path, ...], where: str) -> Path:
    try:
        target = (path.parent / parent).resolve()
        found = target.is_file()
    except (OSError, ValueError, RuntimeError) as exc:  # a NUL byte, a name too long, a symlink loop
        shown = parent if len(parent) <= 60 else parent[:57] + "..."
        raise ConfigError([f"{where}: cannot use {shown!r}: {type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"]) from None
    if target in chain:
        cycle = " -> ".join(str(p.name) for p in chain + (target,))
        raise ConfigError([f"{where}: cycle: {cycle}"])
    if not found:
        raise ConfigError([f"{where}: file not found: {parent} (looked for {target})"])
    return target


REPLACED = {("matrix",)}  # a child's grid replaces its parent's: merging two grids is never what one means


def merge_into(base: Marked, top: Marked) -> None:
    """Deep-merge ``top`` into ``base``: mappings merge (except ``matrix``), anything else replaces."""

    replaced: set[tuple] = set()

    def rec(b: dict, t: dict, at: tuple) -> None:
        for key, value in t.items():
            if isinstance(value, dict) and isinstance(b.get(key), dict) and at + (key,) not in REPLACED:
                rec(b[key], value, at + (key,))
            else:
                if key in b:
                    replaced.add(at + (key,))
                b[key] = copy.deepcopy(value)

    rec(base.data, top.data, ())
    if replaced:  # the parent's marks under a replaced value go (one pass, however many keys)
        for table in (base.marks, base.keymarks):
            for p in [p for p in table if any(p[:i] in replaced for i in range(1, len(p) + 1))]:
                del table[p]
    base.marks.update(top.marks)
    base.keymarks.update(top.keymarks)


def parse_override(text: str) -> tuple[tuple, Any]:
    """``a.b.0.c=value`` -> (("a", "b", 0, "c"), value parsed as YAML 1.2, like a file's values)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or not re.fullmatch(DOTTED, key):
        raise ConfigError([f"--set {text}: expected KEY=VALUE with a dotted key, e.g. train.epochs=3"])
    path = _path(key)
    try:
        value = load_value(raw, "<value>", path) if raw.strip() else ""
    except ConfigError as exc:  # the value is one short line: name the argument, not a line and column
        raise ConfigError([f"--set {text}: {re.sub(r'^<value>(:[0-9]+:[0-9]+)?:? ', '', p)}"
                           for p in exc.problems]) from None
    return path, value


def set_path(marked: Marked, path: tuple, value: Any, mark: Mark, keymark: Mark | None = None) -> str | None:
    """Set a dotted path, creating mappings on the way; returns a problem text or None."""
    node: Any = marked.data
    for i, part in enumerate(path[:-1]):
        if isinstance(node, list) and isinstance(part, int):
            if part >= len(node):
                return f"{dotted(path[: i + 1])}: index {part} is past the end of the list ({len(node)} items)"
            node = node[part]
            continue
        if not isinstance(node, dict):
            return f"{dotted(path[:i])}: is not a mapping, cannot set {dotted(path)}"
        if not isinstance(node.get(part), (dict, list)):
            node[part] = {}
            marked.marks.setdefault(path[: i + 1], mark)
            marked.keymarks.setdefault(path[: i + 1], keymark or mark)
        node = node[part]
    last = path[-1]
    if isinstance(node, list):
        if not isinstance(last, int) or last >= len(node):
            return f"{dotted(path)}: not a valid list index"
        node[last] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        return f"{dotted(path[:-1])}: is not a mapping, cannot set {dotted(path)}"
    for table in (marked.marks, marked.keymarks):
        for p in [p for p in table if p[: len(path)] == path]:
            del table[p]
    marked.marks[path] = mark
    marked.keymarks[path] = keymark or mark
    return None


def apply_overrides(marked: Marked, overrides: list[str]) -> None:
    """Apply ``--set`` overrides; a set path that is also a matrix key pins that matrix dimension."""
    problems = []
    for text in overrides:
        path, value = parse_override(text)
        mark = Mark(f"--set {text}")
        problem = set_path(marked, path, value, mark)
        if problem:
            problems.append(f"--set {text}: {problem}")
        matrix = marked.data.get("matrix")
        if isinstance(matrix, dict):
            problems.extend(f"--set {text}: {p}" for p in pin(matrix, dotted(path), value))
    if problems:
        raise ConfigError(problems)


def pin(matrix: dict, key: str, value: Any) -> list[str]:
    """A ``--set`` on a matrix key pins it: a list dimension goes away; a bundle keeps only the options that
    set the key to that value (or do not set it). Returns problems (no option left)."""
    matrix.pop(key, None)
    problems = []
    for name, options in list(matrix.items()):
        if not isinstance(options, dict) or not all(isinstance(o, dict) for o in options.values()):
            continue
        kept = {o: opt for o, opt in options.items() if key not in opt or opt[key] == value}
        if not kept:
            problems.append(f"no option of matrix.{name} sets {key} to {value!r} "
                            f"(they set {', '.join(repr(opt[key]) for opt in options.values())})")
        elif len(kept) < len(options):
            matrix[name] = kept
    return problems


@dataclass
class Variant:
    """One run of an experiment: the config with one choice per matrix key."""

    name: str
    config: Marked
    choices: dict[str, Any]


def expand_matrix(marked: Marked) -> list[Variant]:
    """Cartesian product of the ``matrix:`` dimensions, each combination a named variant.

    A dimension is either ``dotted.key: [value, ...]`` or a *bundle*: ``label: {option: {dotted.key: value, ...}}``,
    whose options each set several keys at once and name the variant part. No matrix: one variant, ``default``.
    """
    matrix = marked.data.pop("matrix", None)
    if matrix is None or matrix == {}:
        return [Variant("default", marked, {})]
    if not isinstance(matrix, dict):
        raise ConfigError([f"{marked.mark(('matrix',))} matrix: must be a mapping of dotted keys to lists of values"])
    problems = []
    dims: list[list[tuple[str, list[tuple]]]] = []  # per dimension: (name part, [(path, value, at, key_at)])
    for key, values in matrix.items():
        where = marked.mark(("matrix", key))
        if isinstance(values, list) and values and re.fullmatch(DOTTED, str(key)):
            dims.append([(_part_name(v), [(_path(key), v, ("matrix", key, i), ("matrix", key))])
                         for i, v in enumerate(values)])
        elif isinstance(values, dict) and values and all(isinstance(o, dict) and o for o in values.values()):
            bad = [f"{o}.{k}" for o, opt in values.items() for k in opt if not re.fullmatch(DOTTED, str(k))]
            if bad:
                problems.append(f"{where} matrix.{key}: not dotted keys: {', '.join(bad)}")
            dims.append([(_slug(o), [(_path(k), v, ("matrix", key, o, k), ("matrix", key, o, k)) for k, v in opt.items()])
                         for o, opt in values.items()])
        elif isinstance(values, list) and values:
            problems.append(f"{marked.mark(('matrix', key), key=True)} matrix.{key}: not a dotted key")
        else:
            problems.append(f"{where} matrix.{key}: must be a non-empty list of values, or a mapping of option "
                            f"names to {{dotted.key: value}} mappings")
    if problems:
        raise ConfigError(problems)
    runs = math.prod(len(d) for d in dims)
    values = sum(1 for p in marked.marks if p[:1] != ("matrix",))
    if runs > MAX_VARIANTS or runs * values > MAX_EXPANDED:
        raise ConfigError([f"{marked.mark(('matrix',))} matrix: {' x '.join(str(len(d)) for d in dims)} = {runs} "
                           f"runs of {values} values each; at most {MAX_VARIANTS} runs and "
                           f"{MAX_EXPANDED} values in all (split the experiment, or pin keys with --set)"])
    variants = []
    for combo in itertools.product(*dims):
        cfg = Marked(copy.deepcopy(marked.data), dict(marked.marks), dict(marked.keymarks))
        for _, settings in combo:
            for path, value, at, key_at in settings:
                problem = set_path(cfg, path, copy.deepcopy(value), marked.mark(at), marked.mark(key_at, key=True))
                for table, source in ((cfg.marks, marked.marks), (cfg.keymarks, marked.keymarks)):
                    for p, m in source.items():  # marks inside a mapping value follow it
                        if len(p) > len(at) and p[: len(at)] == at:
                            table[path + p[len(at):]] = m
                if problem:
                    problems.append(f"{marked.mark(key_at, key=True)} matrix.{dotted(path)}: {problem}")
        choices = {dotted(path): value for _, settings in combo for path, value, _, _ in settings}
        variants.append(Variant("_".join(part for part, _ in combo), cfg, choices))
    if problems:
        raise ConfigError(sorted(set(problems)))
    names = [v.name for v in variants]
    if len(set(names)) != len(names):  # values alone collide: number the variants
        for i, v in enumerate(variants):
            v.name = f"{i:02d}_{v.name}"
    return variants


MAX_VARIANTS = 1000  # runs in one experiment
MAX_EXPANDED = 200_000  # values over all runs: each run is a copy of the config, checked on its own
DOTTED = r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*"


def _path(key: Any) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in str(key).split("."))


def _part_name(value: Any) -> str:
    """A variant name part: the value, or ``x`` for a component choice ``{name: x, ...}``."""
    return _slug(value["name"] if isinstance(value, dict) and "name" in value else value)


def _slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9._\-]+", "-", str(value)).strip("-") or "x"
