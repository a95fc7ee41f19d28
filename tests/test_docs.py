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
    for command in ("pip install -c constraints.txt -e .", "medattn run experiments/demo.yaml", "medattn predict", "medattn export",
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
