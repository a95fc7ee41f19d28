"""Rewrite the generated plugin reference in README.md from the installed components.

    python docs/update_readme.py        # after changing any component's params schema or description
"""
from __future__ import annotations

import sys
from pathlib import Path

from medattn.cli import markdown_reference
from medattn.registry import default_registry

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- plugin-reference:start -->", "<!-- plugin-reference:end -->"


def reference() -> str:
    """The generated block: every built-in component (kinds in contract order) with its params table."""
    comps = [c for c in default_registry().all() if c.plugin.startswith("medattn:")]
    return f"{START}\n{markdown_reference(comps)}{END}"


def main() -> int:
    text = README.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    README.write_text(head + reference() + tail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
