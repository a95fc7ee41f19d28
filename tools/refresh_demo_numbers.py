"""Run the demo in the reproducible mode and write what it prints into the README.

    python tools/refresh_demo_numbers.py           # rerun the demo (a few minutes), rewrite README.md's block
    python tools/refresh_demo_numbers.py --check   # rerun it and exit 1 when the README's block differs

The README's block is the fenced block that starts with the summary table's header (``| variant``); the
sentence before it carries the measured time (``**N s**``), which is rewritten too. No other page quotes the
demo's digits: they link to the README. tests/test_readme_digits.py runs the same comparison in CI.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DEMO = ROOT / "experiments" / "demo.yaml"
BLOCK = re.compile(r"^```\n(?P<body>\| variant .*?)^```$", re.M | re.S)
DONE = re.compile(r"^== \d+ run\(s\) in (?P<seconds>\d+)s; summary in .*$", re.M)
TIME = re.compile(r"\*\*\d+ s\*\*")
# the variables the mode pins: a caller's own settings of them must not reach the demo unannounced
PINNED_PREFIXES = ("MEDATTN_", "ATEN_", "ONEDNN_", "DNNL_", "MKL_", "OMP_", "OPENBLAS_", "NPY_")


def run_demo(output_dir: Path, timeout: float = 1200) -> str:
    """Run ``medattn run experiments/demo.yaml`` in the reproducible mode into ``output_dir``; its stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(PINNED_PREFIXES)}
    env.update(MEDATTN_REPRODUCIBLE="1", MPLBACKEND="Agg")
    res = subprocess.run([sys.executable, "-m", "medattn.cli", "run", str(DEMO), "--output-dir", str(output_dir)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"the demo failed (exit {res.returncode}):\n{res.stderr[-4000:]}")
    return res.stdout


def printed_summary(stdout: str) -> str:
    """The summary the demo prints last: every line after ``== N run(s) in ...``."""
    found = list(DONE.finditer(stdout))
    if not found:
        raise ValueError("the demo's output has no '== N run(s) in ...' line")
    return stdout[found[-1].end():].strip("\n") + "\n"


def seconds(stdout: str) -> int:
    """The demo's own measure of its time (``== N run(s) in Ss``)."""
    return int(list(DONE.finditer(stdout))[-1]["seconds"])


def _block(text: str) -> re.Match:
    """The README's fenced block that starts with ``| variant``; a ValueError when it has none."""
    found = BLOCK.search(text)
    if found is None:
        raise ValueError("README.md has no fenced block that starts with '| variant'")
    return found


def readme_block(text: str) -> str:
    """The README's quoted summary (the fenced block that starts with ``| variant``)."""
    return _block(text)["body"]


def rewritten(text: str, summary: str, secs: int) -> str:
    """The README with its block replaced by ``summary`` and the time before it by ``secs``."""
    block = _block(text)
    head = text[:block.start()]
    times = list(TIME.finditer(head))
    if times:  # the last **N s** before the block is the demo's measured time
        last = times[-1]
        head = head[:last.start()] + f"**{secs} s**" + head[last.end():]
    return head + f"```\n{summary}```" + text[block.end():]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on a difference")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="medattn-demo-") as tmp:
        stdout = run_demo(Path(tmp))
    summary, secs = printed_summary(stdout), seconds(stdout)
    text = README.read_text(encoding="utf-8")
    if args.check:
        same = readme_block(text) == summary
        print(f"README.md: the demo's block is {'current' if same else 'different:'}")
        if not same:
            print(summary, end="")
        return 0 if same else 1
    README.write_text(rewritten(text, summary, secs), encoding="utf-8")
    print(f"README.md: block rewritten; the demo took {secs} s in the reproducible mode")
    return 0


if __name__ == "__main__":
    sys.exit(main())
