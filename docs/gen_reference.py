"""Write docs/reference.md, the component reference, from what `medattn plugins --markdown` prints.

    python docs/gen_reference.py           # after changing any component's params schema or description
    python docs/gen_reference.py --check   # exit 1 when docs/reference.md is out of date

Only the built-in components (plugin ``medattn:...``) are kept, so a plugin installed on your machine
does not end up in the committed page. tests/test_docs.py checks that the page is current.
"""
from __future__ import annotations

import contextlib
import io
import re
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parent / "reference.md"

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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = reference()
    if "--check" in argv:
        current = PAGE.read_text(encoding="utf-8") if PAGE.is_file() else ""
        if current != text:
            print(f"{PAGE} is out of date: run python docs/gen_reference.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
