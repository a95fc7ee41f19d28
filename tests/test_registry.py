"""Registry: entry points one at a time (a broken one is isolated), registration checks (hook names, factory
strings, params schemas), MEDATTN_DISABLE_PLUGINS, clashes, listing, plugin files, ``check_factories``."""
from __future__ import annotations

import importlib
import json
import sys
import textwrap

import pytest

from medattn.api import UserError
from medattn.registry import Registry, default_registry

FAKE_PLUGIN = """
from medattn.api import Component, hookimpl

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
                                        r"dist-a:fakeplug_a 1.2.3 and dist-b:fakeplug_b 1.2.3; uninstall or rename "
                                        r"one, or switch one off, e.g. MEDATTN_DISABLE_PLUGINS=dist-b$"):
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
    (err,) = reg.load_plugin("missing.py", tmp_path)  # recorded and returned, not raised
    assert err.message == f"plugin file not found: {tmp_path / 'missing.py'}" and reg.errors == [err]
    with pytest.raises(UserError, match="^plugin file not found: .*missing.py$"):
        default_registry(["missing.py"], tmp_path)


def test_cli_plugins_json(cli):
    code, out, _ = cli("plugins", "--json")
    data = json.loads(out)
    assert code == 0
    names = {(c["kind"], c["name"]) for c in data["components"]}
    assert ("job", "train") in names and ("explainer", "saliency") in names
    assert all(c["description"] and c["plugin"] for c in data["components"])


# -- registration checks ----------------------------------------------------------------------------------------
def _load_file(tmp_path, source: str, name: str = "my_plugin.py") -> Registry:
    (tmp_path / name).write_text(textwrap.dedent(source))
    reg = Registry()
    reg.load_plugin(name, tmp_path)
    return reg


def test_a_plugin_file_is_imported_once_until_it_is_edited(tmp_path):
    """A second registry in the same process (a notebook running again) gets the module it already imported while
    the file is unchanged, and the file's new code once it was edited."""
    first = _load_file(tmp_path, FAKE_PLUGIN.format(name="v1"))
    again = Registry()
    again.load_plugin("my_plugin.py", tmp_path)
    assert again.names("attention") == first.names("attention") == ["v1"]
    assert again.pm.get_plugins() == first.pm.get_plugins()  # the same module object
    edited = _load_file(tmp_path, FAKE_PLUGIN.format(name="v2"))
    assert edited.names("attention") == ["v2"] and not edited.errors


def test_misspelled_hook_is_a_load_error_naming_the_plugin(tmp_path):
    reg = _load_file(tmp_path, FAKE_PLUGIN.replace("def medattn_components", "def medattn_component")
                     .format(name="lost"))
    (err,) = reg.errors
    assert err.plugin == str(tmp_path / "my_plugin.py")
    assert "unknown hook 'medattn_component' (did you mean 'medattn_components'?)" in err.error
    assert reg.names("attention") == [] and not reg.pm.get_plugins()


def test_misspelled_hook_of_an_installed_plugin_spares_the_others(fake_site):
    fake_site("typo-dist", {"fakeplug_typo": FAKE_PLUGIN.replace("def medattn_components", "def medattn_componets")
                            .format(name="typo")})
    reg = default_registry()
    (err,) = [e for e in reg.errors if e.plugin == "typo-dist:fakeplug_typo"]
    assert "unknown hook 'medattn_componets'" in err.error
    assert "typo" not in reg.names("attention") and "train" in reg.names("job")


def test_a_plugin_without_the_hook_is_reported(tmp_path):
    reg = _load_file(tmp_path, "def medattn_components():\n    return []\n")  # no @hookimpl
    (err,) = reg.errors
    assert "provides no medattn_components hook" in err.error and "@medattn.api.hookimpl" in err.error


@pytest.mark.parametrize("factory", ["no colon here", "pkg.mod:", ":fn", "pkg..mod:fn", "pkg.mod:fn()", "a-b:c"])
def test_bad_factory_string_is_a_load_error_naming_plugin_and_component(tmp_path, factory):
    reg = _load_file(tmp_path, f"""
        from medattn.api import Component, hookimpl

        @hookimpl
        def medattn_components():
            return [Component("head", "bad", {factory!r}, "bad factory"),
                    Component("head", "good", "pkg.mod:build", "good factory")]
        """)
    (err,) = reg.errors
    assert err.plugin == str(tmp_path / "my_plugin.py")
    assert err.error == f"head 'bad': factory {factory!r} is not 'package.module:function'"
    assert reg.names("head") == ["good"]  # the plugin's other components still load


def test_bad_params_schema_is_a_load_error_naming_plugin_and_component(tmp_path):
    reg = _load_file(tmp_path, """
        from medattn.api import Component, hookimpl

        @hookimpl
        def medattn_components():
            return [Component("head", "typo", "pkg.mod:build", "d", {"type": "objekt"}),
                    Component("head", "deep", "pkg.mod:build", "d",
                              {"type": "object", "properties": {"n": {"minimum": "zero"}}}),
                    Component("head", "fine", "pkg.mod:build", "d", {"type": "object", "properties": {}})]
        """)
    errors = {e.error.split(":")[0]: e for e in reg.errors}
    assert set(errors) == {"head 'typo'", "head 'deep'"} and reg.names("head") == ["fine"]
    assert "params_schema is not valid JSON Schema (Draft 2020-12) at type: 'objekt'" in errors["head 'typo'"].error
    assert "at properties/n/minimum: 'zero' is not of type 'number'" in errors["head 'deep'"].error
    assert all(e.plugin == str(tmp_path / "my_plugin.py") for e in reg.errors)


def test_a_record_that_is_not_a_component_is_reported(tmp_path):
    reg = _load_file(tmp_path, """
        from medattn.api import hookimpl

        @hookimpl
        def medattn_components():
            return [{"kind": "head", "name": "dict"}]
        """)
    (err,) = reg.errors
    assert "returned dict" in err.error and "not a Component" in err.error


# -- MEDATTN_DISABLE_PLUGINS -------------------------------------------------------------------------------------
def test_disabled_by_entry_point_or_distribution_name(fake_site, monkeypatch):
    fake_site("dist-a", {"fakeplug_a": FAKE_PLUGIN.format(name="twin")})
    fake_site("dist-b", {"fakeplug_b": FAKE_PLUGIN.format(name="twin"), "fakeplug_c": "raise SystemError('x')\n"})
    monkeypatch.setenv("MEDATTN_DISABLE_PLUGINS", " fakeplug_a , Dist_B")
    reg = default_registry()
    assert reg.disabled == ["dist-a:fakeplug_a", "dist-b:fakeplug_b", "dist-b:fakeplug_c"]
    assert "twin" not in reg.names("attention") and not reg.clashes
    assert not [e for e in reg.errors if "fakeplug" in e.plugin]  # the broken one was never imported
    assert "fakeplug_c" not in sys.modules and reg.pm.is_blocked("dist-a:fakeplug_a")
    monkeypatch.setenv("MEDATTN_DISABLE_PLUGINS", "dist-b")
    reg = default_registry()
    assert reg.get("attention", "twin").plugin == "dist-a:fakeplug_a" and not reg.clashes


def test_a_disabled_name_that_matches_nothing_is_reported(monkeypatch):
    monkeypatch.setenv("MEDATTN_DISABLE_PLUGINS", "no-such-plugin")
    reg = default_registry()
    (err,) = reg.errors
    assert err.plugin == "MEDATTN_DISABLE_PLUGINS" and "'no-such-plugin' is no installed plugin" in err.error
    assert "train" in reg.names("job")


# -- check_factories (medattn plugins --check) ------------------------------------------------------------------
def test_check_factories_finds_unimportable_and_uncallable_factories(tmp_path):
    (tmp_path / "fakeplug_impl.py").write_text("def two(params, ctx):\n    return params\n\n"
                                               "def one(params):\n    return params\n\nNOT_A_FUNCTION = 3\n")
    sys.path.insert(0, str(tmp_path))
    try:
        reg = _load_file(tmp_path, """
            from medattn.api import Component, hookimpl

            @hookimpl
            def medattn_components():
                return [Component("head", "ok", "fakeplug_impl:two", "d"),
                        Component("head", "gone", "fakeplug_nowhere.mod:build", "d"),
                        Component("head", "typo", "fakeplug_impl:tow", "d"),
                        Component("head", "value", "fakeplug_impl:NOT_A_FUNCTION", "d"),
                        Component("head", "arity", "fakeplug_impl:one", "d")]
            """)
        problems = reg.check_factories()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("fakeplug_impl", None)
    plugin = str(tmp_path / "my_plugin.py")
    assert problems == [
        f"head 'arity' ({plugin}): factory 'fakeplug_impl:one' cannot be called as factory(params, context): "
        f"too many positional arguments",
        f"head 'gone' ({plugin}): cannot import factory 'fakeplug_nowhere.mod:build': ModuleNotFoundError: "
        f"No module named 'fakeplug_nowhere'",
        f"head 'typo' ({plugin}): cannot import factory 'fakeplug_impl:tow': AttributeError: module "
        f"'fakeplug_impl' has no attribute 'tow'",
        f"head 'value' ({plugin}): factory 'fakeplug_impl:NOT_A_FUNCTION' is not callable: int 3",
    ]


def test_every_builtin_component_passes_check_factories():
    reg = default_registry()
    assert reg.errors == [] and reg.check_factories() == []


# -- Registry.build: the one way a component is built -----------------------------------------------------------
BUILDABLE = """
from medattn.api import Component, NotApplicable, UserError, hookimpl

SCHEMA = {"type": "object", "additionalProperties": False,
          "properties": {"width": {"type": "integer", "minimum": 1, "default": 4}}}


def echo(params, ctx):
    return params, ctx


def explodes(params, ctx):
    raise RuntimeError("kernel image not available\\nsecond line")


def refuses(params, ctx):
    raise UserError("head.params.width: too wide")


def not_here(params, ctx):
    raise NotApplicable("nothing to say")


@hookimpl
def medattn_components():
    return [Component("head", "echo", echo, "returns what it was given", SCHEMA),
            Component("head", "explodes", explodes, "raises in its factory", SCHEMA),
            Component("head", "refuses", refuses, "bad params", SCHEMA),
            Component("head", "not_here", not_here, "does not apply", SCHEMA)]
"""


def test_build_fills_defaults_and_calls_the_factory_with_the_context(tmp_path):
    reg = _load_file(tmp_path, BUILDABLE)
    assert reg.errors == []
    assert reg.build("head", {"name": "echo", "params": {}}, "ctx") == ({"width": 4}, "ctx")
    assert reg.build("head", {"name": "echo", "params": {"width": 2}}, None) == ({"width": 2}, None)
    assert reg.build("head", "echo", 1) == ({"width": 4}, 1)  # the shorthand: a name alone


def test_build_turns_a_factory_failure_into_one_clear_error(tmp_path):
    reg = _load_file(tmp_path, BUILDABLE)
    plugin = str(tmp_path / "my_plugin.py")
    with pytest.raises(UserError) as err:
        reg.build("head", {"name": "explodes", "params": {}}, None)
    assert str(err.value) == (f"head 'explodes' (plugin {plugin}) cannot be built: RuntimeError: kernel image not "
                              f"available")
    assert type(err.value) is UserError
    with pytest.raises(UserError, match=r"^model\.head: explodes cannot be built on x at 8 px: RuntimeError: "):
        reg.build("head", {"name": "explodes"}, None, field="model.head", where="on x at 8 px")


def test_build_passes_user_errors_and_not_applicable_and_checks_name_and_params(tmp_path):
    from medattn.api import NotApplicable

    reg = _load_file(tmp_path, BUILDABLE)
    with pytest.raises(UserError, match=r"^head\.params\.width: too wide$"):
        reg.build("head", {"name": "refuses"}, None)
    with pytest.raises(NotApplicable, match="nothing to say"):
        reg.build("head", {"name": "not_here"}, None)
    with pytest.raises(UserError, match=r"^no head named 'echoo'; known: echo, explodes, not_here, refuses$"):
        reg.build("head", {"name": "echoo"}, None)
    with pytest.raises(UserError, match=r"^head 'echo' params\.width: 0 is less than the minimum of 1$"):
        reg.build("head", {"name": "echo", "params": {"width": 0}}, None)
