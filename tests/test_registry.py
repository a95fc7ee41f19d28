"""Registry: entry points one at a time (a broken one is isolated), clashes, listing, plugin files."""
from __future__ import annotations

import importlib
import json
import sys
import textwrap

import pytest

from medattn.errors import UserError
from medattn.registry import Registry, default_registry

FAKE_PLUGIN = """
from medattn.hookspecs import Component, hookimpl

@hookimpl
def medattn_components():
    return [Component("attention", "{name}", "builtins:dict", "a fake attention")]
"""


@pytest.fixture
def fake_site(tmp_path, monkeypatch):
    """install(dist, {entry_point: module_source}) registers modules the way pip-installed ones are found."""

    def install(dist: str, modules: dict[str, str]) -> None:
        info = tmp_path / f"{dist.replace('-', '_')}-1.2.3.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
        lines = ["[medattn]"]
        for ep, source in modules.items():
            (tmp_path / f"{ep}.py").write_text(textwrap.dedent(source))
            lines.append(f"{ep} = {ep}")
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")

    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield install
    for name in [m for m in sys.modules if m.startswith("fakeplug_")]:
        del sys.modules[name]


def test_builtins_are_listed_with_their_plugin_and_version():
    reg = default_registry()
    assert {"train", "test", "explain", "figure"} <= set(reg.names("job"))
    comp = reg.get("job", "train")
    assert comp.plugin == "medattn:jobs" and comp.version and comp.description
    assert reg.errors == []


def test_broken_entry_point_is_recorded_and_others_load(fake_site):
    fake_site("broken-dist", {"fakeplug_broken": "import does_not_exist_anywhere\n",
                              "fakeplug_good": FAKE_PLUGIN.format(name="fake_good")})
    reg = default_registry()
    assert "fake_good" in reg.names("attention")
    (err,) = [e for e in reg.errors if "fakeplug_broken" in e.plugin]
    assert err.plugin == "broken-dist:fakeplug_broken" and "does_not_exist_anywhere" in err.error
    assert "train" in reg.names("job")  # the built-ins still load


def test_clash_names_both_plugins(fake_site):
    fake_site("dist-a", {"fakeplug_a": FAKE_PLUGIN.format(name="twin")})
    fake_site("dist-b", {"fakeplug_b": FAKE_PLUGIN.format(name="twin")})
    reg = default_registry()
    with pytest.raises(UserError, match=r"attention 'twin' is provided by more than one plugin: "
                                        r"dist-a:fakeplug_a 1.2.3 and dist-b:fakeplug_b 1.2.3"):
        reg.get("attention", "twin")


def test_unknown_component_lists_known_ones():
    with pytest.raises(UserError, match="no job named 'trian'; known: explain, figure, test, train"):
        default_registry().get("job", "trian")


def test_plugin_file_and_module_are_loaded(tmp_path):
    (tmp_path / "my_plugin.py").write_text(FAKE_PLUGIN.format(name="from_file"))
    reg = Registry()
    reg.load_plugin("my_plugin.py", tmp_path)
    reg.load_plugin("my_plugin.py", tmp_path)  # loading twice is harmless
    assert reg.names("attention") == ["from_file"]
    assert reg.get("attention", "from_file").plugin == str(tmp_path / "my_plugin.py")
    with pytest.raises(UserError, match="plugin file not found"):
        reg.load_plugin("missing.py", tmp_path)


def test_cli_plugins_json(cli):
    code, out, _ = cli("plugins", "--json")
    data = json.loads(out)
    assert code == 0
    names = {(c["kind"], c["name"]) for c in data["components"]}
    assert ("job", "train") in names and ("explainer", "saliency") in names
    assert all(c["description"] and c["plugin"] for c in data["components"])
