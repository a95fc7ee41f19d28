"""The README's demo block is what the demo prints in the reproducible mode, digit for digit.

It runs the whole demo (a few minutes on 2 cores). tox's py-latest environment sets MEDATTN_SKIP_README_DIGITS=1:
other versions than constraints.txt's give other digits. After a change that moves the digits, rerun
``python tools/refresh_demo_numbers.py`` and commit the README it rewrites.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("refresh_demo_numbers", ROOT / "tools" / "refresh_demo_numbers.py")
refresh = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(refresh)


@pytest.mark.readme_digits
@pytest.mark.skipif(os.environ.get("MEDATTN_SKIP_README_DIGITS") == "1",
                    reason="MEDATTN_SKIP_README_DIGITS=1 (tox py-latest: versions other than constraints.txt's)")
def test_the_demo_prints_the_readmes_block(tmp_path):
    printed = refresh.printed_summary(refresh.run_demo(tmp_path / "runs"))
    quoted = refresh.readme_block((ROOT / "README.md").read_text(encoding="utf-8"))
    assert printed == quoted, ("the demo's summary differs from README.md's block; if the change is meant, run "
                               "python tools/refresh_demo_numbers.py\n" + printed)


def test_the_readme_block_is_found_and_rewritten():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    stdout = "== 2 run(s) in 99s; summary in runs/demo\n| variant | x |\n|---|---|\n| none | 1 |\n"
    new = refresh.rewritten(text, refresh.printed_summary(stdout), refresh.seconds(stdout))
    assert refresh.readme_block(new) == "| variant | x |\n|---|---|\n| none | 1 |\n"
    assert "**99 s**" in new and new.count("```") == text.count("```")
