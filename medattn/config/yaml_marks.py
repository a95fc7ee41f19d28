"""Safe YAML loading that remembers where every value came from (file, line, column)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

Path_ = tuple  # a config path: ("model", "attention", "name") or ("explain", "methods", 0)


@dataclass(frozen=True)
class Mark:
    """Where a value was written: a file position, or a ``--set`` argument."""

    file: str
    line: int = 0  # 1-based; 0 when not from a file
    col: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}" if self.line else self.file


@dataclass
class Marked:
    """A loaded mapping with the marks of its values and of its keys."""

    data: dict
    marks: dict[Path_, Mark]
    keymarks: dict[Path_, Mark]

    def mark(self, path: Path_, key: bool = False) -> Mark | None:
        """The mark of a path, or of its nearest marked ancestor."""
        table = self.keymarks if key else self.marks
        path = tuple(path)
        while True:
            if path in table:
                return table[path]
            if key and path in self.marks:
                return self.marks[path]
            if not path:
                return None
            path = path[:-1]


def _mark(file: str, m: yaml.Mark) -> Mark:
    return Mark(file, m.line + 1, m.column + 1)


def load_yaml(path: Path, display: str | None = None) -> Marked:
    """Load one YAML file safely (no tags, no code) into a mapping with marks."""
    shown = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{shown}: file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{shown}: cannot read: {exc}"]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_yaml_problem(shown, exc)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{shown}: YAML error: {exc}"]) from None
    if node is None:
        raise ConfigError([f"{shown}:1:1 file is empty: an experiment file is a YAML mapping (name:, dataset:, model:, ...)"])
    if not isinstance(node, yaml.MappingNode):
        kind = {"sequence": "a list", "scalar": "a single value"}.get(node.id, node.id)
        raise ConfigError([f"{_mark(shown, node.start_mark)} the top level is {kind}; it must be a mapping "
                           f"(name:, dataset:, model:, ...)"])
    loader = yaml.SafeLoader("")
    marks: dict[Path_, Mark] = {}
    keymarks: dict[Path_, Mark] = {}
    problems: list[str] = []

    def build(n: yaml.Node, at: Path_) -> Any:
        marks[at] = _mark(shown, n.start_mark)
        if isinstance(n, yaml.MappingNode):
            loader.flatten_mapping(n)  # YAML merge keys (<<)
            out: dict = {}
            for key_node, value_node in n.value:
                key = loader.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, bool)):
                    problems.append(f"{_mark(shown, key_node.start_mark)} {_dotted(at) or '<top>'}: "
                                    f"keys must be plain names, not {type(key).__name__}")
                    continue
                if key in out:
                    problems.append(f"{_mark(shown, key_node.start_mark)} {_dotted(at + (key,))}: duplicate key "
                                    f"(first at line {keymarks[at + (key,)].line})")
                    continue
                keymarks[at + (key,)] = _mark(shown, key_node.start_mark)
                out[key] = build(value_node, at + (key,))
            return out
        if isinstance(n, yaml.SequenceNode):
            return [build(v, at + (i,)) for i, v in enumerate(n.value)]
        return loader.construct_object(n, deep=True)

    try:
        data = build(node, ())
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_yaml_problem(shown, exc)]) from None
    if problems:
        raise ConfigError(problems)
    return Marked(data, marks, keymarks)


def _yaml_problem(shown: str, exc: yaml.MarkedYAMLError) -> str:
    m = exc.problem_mark or exc.context_mark
    where = f"{shown}:{m.line + 1}:{m.column + 1}" if m else shown
    what = " ".join(x for x in (exc.context, exc.problem) if x)
    return f"{where} YAML syntax error: {what}"


def _dotted(path: Path_) -> str:
    return ".".join(str(p) for p in path)


dotted = _dotted
