"""Write the generated parts of the manual: docs/reference.md, the component reference, from what `medattn
plugins --markdown` prints, and the table of `medattn.api` in docs/plugins.md, from `medattn.api.__all__` and
each name's docstring.

    python docs/gen_reference.py           # after changing a component's params or description, or medattn.api
    python docs/gen_reference.py --check   # exit 1 when a generated part is out of date

Only the built-in components (plugin ``medattn:...``) are kept, so a plugin installed on your machine
does not end up in the committed page. tests/test_docs.py checks that both are current.
"""
from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import io
import re
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parent / "reference.md"
PLUGINS_PAGE = PAGE.parent / "plugins.md"
API_BEGIN = "<!-- generated from medattn.api.__all__ by python docs/gen_reference.py: do not edit by hand -->"
API_END = "<!-- end of the generated medattn.api table -->"
# the module a public name is imported from (its package, for a prefix ending in ".") -> the area it is listed
# under, in this order; a name from another module is listed under that module's name, after these
API_AREAS = (("medattn.hookspecs", "hooks, records, contexts"), ("medattn.errors", "errors"),
             ("medattn.files", "files"), ("medattn.image_io", "images"), ("medattn.evidence.", "metrics"),
             ("medattn.store.", "runs"), ("medattn.deprecation", "versions"))

HEADER = """# Component reference

Every built-in component, by kind, with its description and the params its schema accepts (type,
default, meaning). This page is generated from the components' own schemas by `medattn plugins
--markdown`; do not edit it by hand, run `python docs/gen_reference.py` instead.

To see the components installed on your machine, plugins included, run `medattn plugins` (or
`medattn plugins --markdown`). The jobs' own sections (`train:`, `test:`, `explain:`, `figure:`) are
described in [Training and testing](training.md) and [Explanations](explanations.md), and printed in full
by `medattn schema`.

"""

_KIND = re.compile(r"^#{1,6} (\S+)\s*$")
_COMPONENT = re.compile(r"^\*\*`[^`]+`\*\* \(([^)]*)\)")


def cli_markdown() -> str:
    """What ``medattn plugins --markdown`` prints, through the same code path as the command."""
    from medattn.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["plugins", "--markdown"])
    if status:
        raise SystemExit(f"medattn plugins --markdown exited with {status}")
    return out.getvalue()


def builtin_only(markdown: str) -> str:
    """Keep the built-in components; kind headings become second-level headings of the page."""
    kept: list[str] = []
    keep = True
    for line in markdown.splitlines():
        kind = _KIND.match(line)
        component = _COMPONENT.match(line)
        if kind:
            keep = True
            kept.append(f"## {kind.group(1)}")
        elif component:
            keep = component.group(1).startswith("medattn:")
            if keep:
                kept.append(line)
        elif keep:
            kept.append(line)
    text = "\n".join(kept)
    text = re.sub(r"## \S+\n+(?=## |\Z)", "", text)  # a kind left without components
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def metrics_table() -> str:
    """The declared metrics (medattn.evidence.metric_specs), one row each."""
    from medattn.evidence.metric_specs import METRICS

    def bound(v: float | None) -> str:
        return "∞" if v is None else f"{v:g}"

    rows = ["## Metrics", "",
            "Every metric medattn computes, from its one declaration (`medattn.evidence.metric_specs`; plugins read it "
            "with `medattn.api.metric_spec(name)`, which also takes `val_<name>`, `<split or method>.<name>`). "
            "Direction: max = higher is better. Threshold: moves with the decision threshold. CI: the test job "
            "gives a bootstrap interval. Compare: a paired difference between variants is meaningful (the test "
            "metrics among them are what `compare.metrics` accepts). History: a `train_`/`val_` column of "
            "`history.csv` that checkpoints, early stopping and schedulers can follow.", "",
            "| metric | source | direction | range | threshold | CI | compare | history | what it is |",
            "|---|---|---|---|---|---|---|---|---|"]
    tick = lambda flag: "yes" if flag else ""  # noqa: E731
    for m in METRICS:
        name = f"`{m.name}`" + (f" (`{m.pattern}`)" if m.pattern else "")
        what = m.description + (f" (= `{m.alias_of}`)" if m.alias_of else "")
        rows.append(f"| {name} | {m.source}{f' ({m.score})' if m.score else ''} | {m.direction} | "
                    f"[{bound(m.range[0])}, {bound(m.range[1])}] | {tick(m.needs_threshold)} | {tick(m.has_ci)} | "
                    f"{tick(m.comparable)} | {tick(m.history)} | {what} |")
    return "\n".join(rows) + "\n"


def reference() -> str:
    """The whole page."""
    return HEADER + builtin_only(cli_markdown()) + "\n" + metrics_table()


def api_sources() -> dict[str, str]:
    """{public name: the module medattn.api imports it from}, read from medattn/api.py's import statements."""
    api = importlib.import_module("medattn.api")
    sources = {}
    for node in ast.walk(ast.parse(Path(api.__file__).read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            for alias in node.names:
                sources[alias.asname or alias.name] = f"medattn.{node.module}" if node.module else "medattn"
    return {name: sources.get(name, "medattn.api") for name in api.__all__}


def attribute_docstring(module: str, name: str) -> str | None:
    """The string on the line after ``NAME = ...`` in a module (a constant's docstring), else None."""
    body = ast.parse(Path(importlib.import_module(module).__file__).read_text(encoding="utf-8")).body
    for node, after in zip(body, body[1:]):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets) and isinstance(after, ast.Expr) \
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str):
            return after.value.value
    return None


def one_line(doc: str) -> str:
    """The first sentence of a docstring, as Markdown that fits in a table cell."""
    paragraph = " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())
    sentence = re.split(r"(?<=[.!?])\s+(?=[A-Z`(])", paragraph)[0]
    sentence = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", sentence).replace("``", "`")
    parts = sentence.split("`")  # outside code spans (the even parts), * and _ are not emphasis
    return "`".join(re.sub(r"([*_])", r"\\\1", part) if i % 2 == 0 else part
                    for i, part in enumerate(parts)).replace("|", "\\|")


def api_table() -> str:
    """The Markdown table of medattn.api: each public name with the first sentence of its docstring, by area."""
    import medattn.api as api

    rows, missing = [], []
    for name, module in api_sources().items():
        obj = getattr(api, name)
        if inspect.isclass(obj):
            doc = obj.__dict__.get("__doc__")
            doc = None if doc and doc.startswith(f"{name}(") else doc  # a dataclass's generated signature
        elif inspect.isfunction(obj):
            doc = obj.__doc__
        else:
            doc = attribute_docstring(module, name)
        if not doc or not doc.strip():
            missing.append(name)
            continue
        order = next((i for i, (prefix, _) in enumerate(API_AREAS) if module == prefix
                      or (prefix.endswith(".") and module.startswith(prefix))), len(API_AREAS))
        area = API_AREAS[order][1] if order < len(API_AREAS) else module
        shown = f"`{name}()`" if inspect.isfunction(obj) else f"`{name}`"
        rows.append(((order, area, name.casefold()), area, shown, one_line(doc)))
    if missing:
        raise SystemExit(f"medattn.api: no docstring for {', '.join(missing)}: give each public name one (a constant: "
                         "a string on the line after its assignment)")
    lines = [API_BEGIN, "", "| area | name | what |", "|---|---|---|"]
    last = None
    for _, area, shown, what in sorted(rows):
        lines.append(f"| {area if area != last else ''} | {shown} | {what} |")
        last = area
    return "\n".join([*lines, "", API_END])


def plugins_page() -> str:
    """docs/plugins.md with its medattn.api table generated anew."""
    text = PLUGINS_PAGE.read_text(encoding="utf-8")
    start, end = text.find(API_BEGIN), text.find(API_END)
    if start < 0 or end < start:
        raise SystemExit(f"{PLUGINS_PAGE}: the markers of the generated medattn.api table are missing: put\n"
                         f"{API_BEGIN}\n{API_END}\nwhere the table goes")
    return text[:start] + api_table() + text[end + len(API_END):]


def generated() -> dict[Path, str]:
    """Each generated page and what it should hold."""
    return {PAGE: reference(), PLUGINS_PAGE: plugins_page()}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    pages = generated()
    if "--check" in argv:
        stale = [page for page, text in pages.items()
                 if (page.read_text(encoding="utf-8") if page.is_file() else "") != text]
        for page in stale:
            print(f"{page} is out of date: run python docs/gen_reference.py", file=sys.stderr)
        return 1 if stale else 0
    for page, text in pages.items():
        page.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
