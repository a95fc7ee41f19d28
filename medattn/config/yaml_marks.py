"""Safe YAML loading that remembers where every value came from (file, line, column).

Plain scalars resolve by the YAML 1.2 core schema, as editors and most other tools read them: ``1e-3``,
``1E5``, ``-2.5e-4`` and ``.5`` are floats, ``0o17`` and ``0x1F`` are ints, ``0755`` is 755, ``1_000``
and ``1:30`` are strings, booleans are ``true``/``false`` only (``yes``/``on`` are strings), and there are
no implicit dates. Hostile input is refused before it costs time or memory: a file over
:data:`MAX_BYTES`, collections nested deeper than :data:`MAX_DEPTH`, or more than :data:`MAX_NODES` values
once aliases are expanded (the "billion laughs"); each is one problem with FILE:LINE:COL.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent

from ..errors import ConfigError

Path_ = tuple  # a config path: ("model", "attention", "name") or ("explain", "methods", 0)

MAX_BYTES = 256 * 1024  # an experiment file is a few KB
MAX_DEPTH = 64  # mappings and lists inside each other (an experiment needs about 8)
MAX_NODES = 20_000  # values in the document with every alias expanded (an experiment has a few hundred)

TAG = "tag:yaml.org,2002:"
ALLOWED_TAGS = {TAG + t for t in ("str", "int", "float", "bool", "null", "seq", "map")}


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


_FAILED = object()


class _Limit(Exception):
    def __init__(self, mark: yaml.Mark, message: str):
        super().__init__(message)
        self.mark, self.message = mark, message


class Loader12(yaml.SafeLoader):
    """SafeLoader with the YAML 1.2 core schema, and limits on depth and on alias expansion."""

    yaml_implicit_resolvers: dict = {}

    def __init__(self, stream: str):
        super().__init__(stream)
        self._open: list[int] = []  # per collection being composed: values in it so far (aliases expanded)
        self._sizes: dict[int, int] = {}  # id(node) -> expanded size, once the node is complete

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            if node is not None:
                if id(node) not in self._sizes:
                    raise _Limit(event.start_mark, f"the alias *{event.anchor} refers to a value that contains it")
                self._count(self._sizes[id(node)], event.start_mark)
            return super().compose_node(parent, index)
        start = self.peek_event().start_mark
        if len(self._open) >= MAX_DEPTH:
            raise _Limit(start, f"values nested more than {MAX_DEPTH} deep; an experiment file needs far fewer")
        self._open.append(1)
        node = super().compose_node(parent, index)
        size = self._open.pop()
        self._sizes[id(node)] = size
        self._count(size, start)
        return node

    def _count(self, size: int, mark: yaml.Mark) -> None:
        if self._open:
            self._open[-1] += size
        if sum(self._open) + (0 if self._open else size) > MAX_NODES:
            raise _Limit(mark, f"more than {MAX_NODES} values once aliases (*name) are expanded; "
                               f"an experiment file needs far fewer")


def _bad(node: yaml.Node, what: str) -> yaml.constructor.ConstructorError:
    text = node.value if len(node.value) <= 40 else node.value[:37] + "..."
    return yaml.constructor.ConstructorError(None, None, f"cannot read {text!r} as {what}", node.start_mark)


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    text = str(loader.construct_scalar(node)).strip()
    body = text.lstrip("+-")
    sign = -1 if text.startswith("-") else 1
    try:
        if body[:2] in ("0o", "0O"):
            return sign * int(body[2:], 8)
        if body[:2] in ("0x", "0X"):
            return sign * int(body[2:], 16)
        return int(text, 10)
    except ValueError:  # an explicit !!int on text that is not one, or more digits than Python converts
        raise _bad(node, "an integer") from None


def _construct_float(loader: yaml.SafeLoader, node: yaml.Node) -> float:
    text = str(loader.construct_scalar(node)).strip()
    special = {".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}
    if text.lower() in special:
        return special[text.lower()]
    try:
        return float(text)
    except ValueError:
        raise _bad(node, "a number") from None


def _construct_bool(loader: yaml.SafeLoader, node: yaml.Node) -> bool:
    text = str(loader.construct_scalar(node)).strip().lower()
    if text not in ("true", "false"):
        raise _bad(node, "a boolean (true or false)")
    return text == "true"


Loader12.add_implicit_resolver(TAG + "null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])
Loader12.add_implicit_resolver(TAG + "bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
Loader12.add_implicit_resolver(TAG + "int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
                               list("-+0123456789"))
Loader12.add_implicit_resolver(
    TAG + "float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+.0123456789"))
Loader12.add_implicit_resolver(TAG + "merge", re.compile(r"^(?:<<)$"), ["<"])
Loader12.add_constructor(TAG + "int", _construct_int)
Loader12.add_constructor(TAG + "float", _construct_float)
Loader12.add_constructor(TAG + "bool", _construct_bool)


def _mark(file: str, m: yaml.Mark) -> Mark:
    return Mark(file, m.line + 1, m.column + 1)


def read_text(path: Path, shown: str) -> str:
    """The text of an experiment file: at most MAX_BYTES, UTF-8."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError([f"{shown}: file not found"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{shown}: is a folder, not an experiment file"]) from None
    except OSError as exc:
        raise ConfigError([f"{shown}: cannot read: {exc.strerror or exc}"]) from None
    if len(raw) > MAX_BYTES:
        raise ConfigError([f"{shown}:1:1 the file is larger than {MAX_BYTES // 1024} KiB; "
                           f"an experiment file is a few KB of YAML"])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError([f"{shown}:{line}:{col} not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
                           f"save the file as UTF-8"]) from None


def compose(text: str, shown: str) -> yaml.Node | None:
    """Parse one YAML document into nodes (tags resolved by YAML 1.2), within the limits."""
    try:
        return yaml.compose(text, Loader=Loader12)
    except _Limit as exc:
        raise ConfigError([f"{_mark(shown, exc.mark)} {exc.message}"]) from None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_yaml_problem(shown, exc)]) from None
    except yaml.reader.ReaderError as exc:
        before = text[: exc.position]
        line, col = before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1
        char = chr(exc.character) if isinstance(exc.character, int) else exc.character
        raise ConfigError([f"{shown}:{line}:{col} YAML cannot hold the character {char!r} "
                           f"(control characters are not allowed)"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{shown}: YAML error: {exc}"]) from None


def construct(node: yaml.Node, shown: str, at: Path_ = ()) -> Marked:
    """Nodes -> plain data (dicts, lists, str, int, float, bool, None) with the marks of values and keys."""
    loader = Loader12("")
    marks: dict[Path_, Mark] = {}
    keymarks: dict[Path_, Mark] = {}
    problems: list[str] = []

    def check_tag(n: yaml.Node, where: Path_) -> bool:
        if n.tag in ALLOWED_TAGS or n.tag == TAG + "merge":
            return True
        problems.append(f"{_mark(shown, n.start_mark)} {_dotted(where) or '<top>'}: the tag {n.tag} is not "
                        f"allowed; experiment files hold plain strings, numbers, booleans, null, lists and "
                        f"mappings")
        return False

    def scalar(n: yaml.Node, at: Path_) -> Any:
        try:
            return loader.construct_object(n, deep=True)
        except yaml.constructor.ConstructorError as exc:
            problems.append(f"{_mark(shown, n.start_mark)} {_dotted(at) or '<top>'}: {exc.problem}")
            return _FAILED

    def build(n: yaml.Node, at: Path_) -> Any:
        marks[at] = _mark(shown, n.start_mark)
        if not check_tag(n, at):
            return None
        if isinstance(n, yaml.MappingNode):
            loader.flatten_mapping(n)  # YAML merge keys (<<)
            out: dict = {}
            for key_node, value_node in n.value:
                if not check_tag(key_node, at):
                    continue
                key = scalar(key_node, at)
                if key is _FAILED:
                    continue
                if not isinstance(key, (str, int, bool)):
                    problems.append(f"{_mark(shown, key_node.start_mark)} {_dotted(at) or '<top>'}: "
                                    f"keys must be plain names, not {_kind(key)}")
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
        value = scalar(n, at)
        if isinstance(value, float) and math.isnan(value):
            problems.append(f"{_mark(shown, n.start_mark)} {_dotted(at) or '<top>'}: .nan is not a usable value")
        elif isinstance(value, str) and "\x00" in value:
            problems.append(f"{_mark(shown, n.start_mark)} {_dotted(at) or '<top>'}: text with a NUL character")
        return value

    try:
        data = build(node, at)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_yaml_problem(shown, exc)]) from None
    if problems:
        raise ConfigError(problems)
    return Marked(data, marks, keymarks)


def load_yaml(path: Path, display: str | None = None) -> Marked:
    """Load one YAML file safely (no tags, no code, within the limits) into a mapping with marks."""
    shown = display or str(path)
    node = compose(read_text(path, shown), shown)
    if node is None:
        raise ConfigError([f"{shown}:1:1 file is empty: an experiment file is a YAML mapping (name:, dataset:, model:, ...)"])
    if not isinstance(node, yaml.MappingNode):
        kind = {"sequence": "a list", "scalar": "a single value"}.get(node.id, node.id)
        raise ConfigError([f"{_mark(shown, node.start_mark)} the top level is {kind}; it must be a mapping "
                           f"(name:, dataset:, model:, ...)"])
    return construct(node, shown)


def load_value(text: str, shown: str, at: Path_ = ()) -> Any:
    """One YAML value (a ``--set`` value, a config written by medattn) parsed the same way as a file."""
    if len(text.encode("utf-8", "replace")) > MAX_BYTES:
        raise ConfigError([f"{shown}: the value is larger than {MAX_BYTES // 1024} KiB"])
    node = compose(text, shown)
    return None if node is None else construct(node, shown, at).data


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", type(None): "null", float: "a number"}.get(type(value),
                                                                                          type(value).__name__)


def _yaml_problem(shown: str, exc: yaml.MarkedYAMLError) -> str:
    m = exc.problem_mark or exc.context_mark
    where = f"{shown}:{m.line + 1}:{m.column + 1}" if m else shown
    what = " ".join(x for x in (exc.context, exc.problem) if x)
    return f"{where} YAML syntax error: {what}"


def _dotted(path: Path_) -> str:
    return ".".join(str(p) for p in path)


dotted = _dotted
