"""The manual (docs/ and README.md) stays true: its experiment examples validate, its generated component
reference is current, its pages are all in the navigation, and the README stays a front door.

Which YAML blocks are checked: every fenced ```yaml block in README.md and docs/*.md is parsed. A block
whose YAML document has a top-level ``dataset:`` or ``extends:`` key is an *experiment*, and it must
validate through medattn's own loader (``medattn.config.load_experiment``), as if the block were a file at
the repository root (so ``extends: experiments/demo.yaml`` works). A block that only shows part of a file
(a ``train:`` section, say) is a *fragment*: it is parsed but not validated. An experiment-looking block
that is deliberately incomplete is marked with ``<!-- fragment -->`` on the line before its fence.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from medattn.config import ConfigError, load_experiment
from medattn.registry import default_registry

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
FRAGMENT = "<!-- fragment -->"
EXPERIMENT_KEYS = ("dataset", "extends")
README_MAX_LINES = 200


def yaml_blocks(path: Path) -> list[tuple[str, str, bool]]:
    """(id, body, marked as fragment) of every ```yaml block of a Markdown file."""
    text = path.read_text(encoding="utf-8")
    found = []
    for m in FENCE.finditer(text):
        if m.group("lang").strip().split(" ")[0] not in ("yaml", "yml"):
            continue
        line = text.count("\n", 0, m.start()) + 1
        before = [s.strip() for s in text[:m.start()].splitlines() if s.strip()]
        indent = m.group("indent")
        body = "\n".join(s[len(indent):] if s.startswith(indent) else s for s in m.group("body").splitlines())
        found.append((f"{path.relative_to(ROOT)}:{line}", body + "\n", bool(before) and before[-1] == FRAGMENT))
    return found


BLOCKS = [b for page in [ROOT / "README.md", *PAGES] for b in yaml_blocks(page)]


def is_experiment(documents: list) -> bool:
    return any(isinstance(d, dict) and any(k in d for k in EXPERIMENT_KEYS) for d in documents)


@pytest.fixture(scope="module")
def registry():
    return default_registry()


def test_the_docs_have_yaml_examples_to_check():
    experiments = [b for b in BLOCKS if not b[2] and is_experiment(list(yaml.safe_load_all(b[1])))]
    assert len(experiments) >= 5, "the rule that picks experiment blocks found almost none: is the fence regex broken?"


@pytest.mark.parametrize("block", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_yaml_block_parses_and_experiments_validate(block, tmp_path, registry):
    where, body, fragment = block
    try:
        documents = list(yaml.safe_load_all(body))
    except yaml.YAMLError as exc:
        pytest.fail(f"{where}: not YAML: {exc}")
    if fragment or not is_experiment(documents):
        return
    (tmp_path / "experiments").symlink_to(ROOT / "experiments", target_is_directory=True)
    (tmp_path / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    for i, text in enumerate(re.split(r"^---[ \t]*\n", body, flags=re.M)):
        if not is_experiment([yaml.safe_load(text)]):
            continue
        file = tmp_path / f"block{i}.yaml"
        file.write_text(text, encoding="utf-8")
        try:
            load_experiment(file, registry=registry)
        except ConfigError as exc:
            pytest.fail(f"{where}: the experiment does not validate:\n" + "\n".join(exc.problems))


def test_fragment_marker_is_only_used_before_yaml_blocks():
    for page in [ROOT / "README.md", *PAGES]:
        lines = page.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if line.strip() == FRAGMENT:
                following = next((s for s in lines[i + 1:] if s.strip()), "")
                assert following.strip().startswith("```yaml"), f"{page.name}:{i + 1}: {FRAGMENT} before no yaml block"


def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES
    for command in ("pip install -e . -c constraints.txt", "medattn run experiments/demo.yaml", "medattn predict", "medattn export",
                    "tox"):
        assert command in text, command
    for link in re.findall(r"\]\((docs/[^)#\s]+)", text):
        assert (ROOT / link).is_file(), f"README links to a missing file: {link}"


def _gen_reference():
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_component_reference_is_current():
    generated = _gen_reference().reference()
    assert "## attention" in generated and "`mldam`" in generated
    assert (DOCS / "reference.md").read_text(encoding="utf-8") == generated, "run: python docs/gen_reference.py"


class _IgnoreTags(yaml.SafeLoader):
    """mkdocs.yml names Python objects (!!python/name:...); the navigation needs none of them."""


_IgnoreTags.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)


def _nav_pages(nav) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [p for v in nav.values() for p in _nav_pages(v)]
    return [p for item in nav or [] for p in _nav_pages(item)]


def test_every_page_is_in_the_navigation():
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=_IgnoreTags)  # noqa: S506
    nav = _nav_pages(config["nav"])
    assert sorted(nav) == sorted(p.name for p in PAGES)


def test_every_original_flag_is_mapped_to_an_experiment_key():
    text = (DOCS / "papers.md").read_text(encoding="utf-8")
    for flag in ("--data_dir", "--dataset", "--backbone", "--use_attention", "--nr_classes", "--gpu_id",
                 "--batchsize", "--epochs", "--use_daug"):
        assert f"| `{flag}" in text, flag


def test_seed_means_only_the_random_seed():
    """The original research code is 'the original' or its paper id, never 'the seed'."""
    pattern = re.compile(r"the seed's|seed (?:project|code|repository|scripts?|flags?|study)|as the seed\b", re.I)
    for page in [ROOT / "README.md", *PAGES]:
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            assert not pattern.search(line), f"{page.name}:{n}: {line.strip()}"


# -- the generated medattn.api table --------------------------------------------------------------------------
def test_the_api_table_is_generated_from_all_and_current():
    import medattn.api as api

    gen = _gen_reference()
    table = gen.api_table()
    names = re.findall(r"^\|[^|]*\| `(\w+)(?:\(\))?` \|", table, re.M)
    assert sorted(names) == sorted(api.__all__)
    for name in ("LossContext", "LossBatch", "metric_spec", "metric_names", "MetricSpec", "bootstrap_chunks",
                 "failure_reason"):
        assert name in names
    assert (DOCS / "plugins.md").read_text(encoding="utf-8") == gen.plugins_page(), "run: python docs/gen_reference.py"
    assert gen.main(["--check"]) == 0


def test_the_api_table_notices_a_new_public_name(monkeypatch):
    """A name added to medattn.api.__all__ makes the committed table stale; one without a docstring is refused."""
    import medattn.api as api

    gen = _gen_reference()

    def loss_weight(step):
        """The weight of a loss term at ``step``."""

    monkeypatch.setattr(api, "loss_weight", loss_weight, raising=False)
    monkeypatch.setattr(api, "__all__", [*api.__all__, "loss_weight"])
    assert "| `loss_weight()` | The weight of a loss term at `step`. |" in gen.api_table()
    assert (DOCS / "plugins.md").read_text(encoding="utf-8") != gen.plugins_page()
    loss_weight.__doc__ = None
    with pytest.raises(SystemExit, match="no docstring for loss_weight"):
        gen.api_table()


# -- the run directory page against medattn.store.rundir --------------------------------------------------------
def _run_layout_section() -> str:
    text = (DOCS / "run-directory.md").read_text(encoding="utf-8")
    return text[text.index("## Layout of a run"):text.index("\n## ", text.index("## Layout of a run") + 1)]


def documented_run_paths(section: str) -> list[str]:
    """The paths of the table's first column: each `code` item; one without a folder is in the first item's folder
    (`metrics/test_<ckpt>.json`, `roc_<ckpt>.csv` names metrics/roc_<ckpt>.csv)."""
    out = []
    for row in re.findall(r"^\| (`[^|]*`) \|", section, re.M):
        items = re.findall(r"`([^`]+)`", row)
        folder = items[0][:items[0].rfind("/") + 1]
        out += [item if "/" in item else folder + item for item in items]
    return out


def test_the_run_directory_page_names_every_path_of_rundir_and_no_other():
    from medattn.store.rundir import RunDir

    layout = RunDir.layout()
    documented = documented_run_paths(_run_layout_section())
    assert len(documented) == len(set(documented)), "a path is listed twice"
    unknown = sorted(set(documented) - set(layout))
    assert not unknown, f"docs/run-directory.md names paths that medattn.store.rundir.RunDir does not know: {unknown}"
    missing = [p for p in layout if p not in documented and not (p.endswith("/") and any(d.startswith(p) for d in documented))]
    assert not missing, f"docs/run-directory.md's table lacks {missing} (RunDir.layout())"
    for path in ("explanations/quality_images.csv", "metrics/predictions_<ckpt>.<split>.csv"):
        assert path in documented


def test_the_run_directory_tree_lists_the_top_of_the_layout():
    from medattn.store.rundir import RunDir

    section = _run_layout_section()
    tree = section[section.index("```\n") + 4:section.index("\n```", section.index("```\n"))]
    entries = [m.group(1) for m in re.finditer(r"^  (\S+)", tree, re.M)]
    top = sorted({p.split("/")[0] + "/" if "/" in p else p for p in RunDir.layout()})
    named = set(re.findall(r"[\w.<>-]+/?", tree))
    assert set(entries) <= set(top), f"the tree names entries RunDir does not know: {sorted(set(entries) - set(top))}"
    assert not [t for t in top if t not in named], f"the tree lacks {[t for t in top if t not in named]}"
    for name in ("quality_images.csv", "predictions_<ckpt>.<split>.csv"):
        assert name in tree


def test_the_run_directory_check_notices_a_new_file(monkeypatch):
    """A path added to RunDir and not to the page fails the page check."""
    from medattn.store import rundir

    monkeypatch.setattr(rundir.RunDir, "calibration", rundir._at("metrics", "calibration.json"), raising=False)
    assert "metrics/calibration.json" in rundir.RunDir.layout()
    with pytest.raises(AssertionError, match="lacks.*metrics/calibration.json"):
        test_the_run_directory_page_names_every_path_of_rundir_and_no_other()


# -- the CLI synopsis in docs/cli.md against argparse ----------------------------------------------------------
def _subparsers():
    import argparse

    from medattn.cli import parser

    ap = parser()
    [sub] = [a for a in ap._actions if isinstance(a, argparse._SubParsersAction)]
    return ap, sub.choices


def synopsis_rows() -> dict[str, str]:
    """{command: its synopsis} of the Commands table of docs/cli.md (``--version`` for ``medattn --version``)."""
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    return {m.group(1): m.group(2) for m in re.finditer(r"^\| `medattn (\S+)((?: [^`]*)?)` \|", text, re.M)}


def test_the_cli_synopsis_matches_argparse():
    ap, commands = _subparsers()
    rows = synopsis_rows()
    assert sorted(rows) == sorted([*commands, "--version"])
    assert "--version" in ap._option_string_actions
    for command, synopsis in rows.items():
        if command == "--version":
            continue
        assert synopsis.count("[") == synopsis.count("]"), f"{command}: unbalanced brackets in {synopsis!r}"
        actions = [a for a in commands[command]._actions if a.dest != "help"]
        named = re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", synopsis)
        known = {s for a in actions for s in a.option_strings}
        assert set(named) <= known, f"medattn {command}: the synopsis names {sorted(set(named) - known)}, unknown to argparse"
        for a in actions:
            if a.option_strings:
                assert set(a.option_strings) & set(named), f"medattn {command}: the synopsis lacks {a.option_strings[0]}"
        # positionals, in order: the upper-case words that are no option's value and no KEY=VALUE
        words = re.sub(r"[\[\]]|\.\.\.", " ", synopsis).split()
        values = {i + 1 for i, w in enumerate(words) if w in known
                  and next(a for a in actions if w in a.option_strings).nargs != 0}
        shown = [w for i, w in enumerate(words) if i not in values and re.fullmatch(r"[A-Z_]+", w)]
        expected = [a.metavar or a.dest.upper() for a in actions if not a.option_strings]
        assert shown == expected, f"medattn {command}: positionals {shown}, argparse has {expected}"
