"""Plugin discovery and the table of components.

Entry points of the group ``medattn`` are loaded one at a time, so a plugin that fails to import is
recorded (name, error) and the others still load. Modules or ``.py`` files named under ``plugins:`` in an
experiment are loaded the same way, on request. Each plugin is checked as it registers (hooks that match no
spec, factory strings, params schemas); a failed check is a load error naming the plugin. Two components of one
kind and name are a clash: it is recorded naming both plugins and becomes an error as soon as an experiment
selects that name. ``MEDATTN_DISABLE_PLUGINS=a,b`` keeps entry points from loading, by entry-point or
distribution name.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pluggy

from .errors import NotApplicable, UserError, failure_reason
from .hookspecs import KINDS, PROJECT, Component, MedattnSpec
from .params import component_params

DISABLE_ENV = "MEDATTN_DISABLE_PLUGINS"
FACTORY_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
# kinds whose factory is called as factory(params, context); jobs are built in and called differently
_TWO_ARG_KINDS = ("dataset", "transform", "backbone", "attention", "head", "loss", "explainer", "figure")


@dataclass
class LoadError:
    """A plugin that did not load: its label (entry point, module or file), why, and, for a plugin an experiment
    lists under ``plugins:``, the whole sentence (``plugin 'x.py' failed to load: ...``)."""

    plugin: str
    error: str
    message: str = ""

    def __post_init__(self) -> None:
        self.message = self.message or f"installed plugin {self.plugin} failed to load: {self.error}"


def _norm(name: str) -> str:
    """Distribution-style normal form (PEP 503): case and ``-_.`` runs do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def is_file_spec(spec: str) -> bool:
    """A ``plugins:`` entry that names a ``.py`` file (loaded relative to the experiment file), else a module."""
    return spec.endswith(".py") or "/" in spec or "\\" in spec


def disabled_names(value: str | None = None) -> list[str]:
    """The names listed in ``MEDATTN_DISABLE_PLUGINS`` (or in ``value``), comma-separated."""
    text = os.environ.get(DISABLE_ENV, "") if value is None else value
    return [n.strip() for n in text.split(",") if n.strip()]


class Registry:
    """Components of every kind, as handed over by the plugins."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(MedattnSpec)
        self.components: dict[tuple[str, str], Component] = {}
        self.clashes: dict[tuple[str, str], list[Component]] = {}
        self.errors: list[LoadError] = []
        self.disabled: list[str] = []  # entry points not loaded because of MEDATTN_DISABLE_PLUGINS

    # -- discovery -------------------------------------------------------------------------------
    def load_entry_points(self, disable: Iterable[str] | None = None) -> None:
        """Load every installed ``medattn`` entry point, isolating the broken ones and skipping the disabled ones
        (``disable``: entry-point or distribution names; default: ``MEDATTN_DISABLE_PLUGINS``)."""
        blocked = {_norm(n): n for n in (disabled_names() if disable is None else disable)}
        matched: set[str] = set()
        for ep in sorted(metadata.entry_points(group=PROJECT), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else "?"
            label = f"{dist_name}:{ep.name}"
            hits = {_norm(ep.name), _norm(dist_name), _norm(label)} & blocked.keys()
            if hits:
                matched |= hits
                self.pm.set_blocked(label)
                self.disabled.append(label)
                continue
            try:
                module = ep.load()
            except Exception as exc:  # a broken plugin must not take the others down
                self.errors.append(LoadError(label, f"{type(exc).__name__}: {exc}"))
                continue
            self._register(module, label, dist.version if dist is not None else "")
        for key in blocked.keys() - matched:
            self.errors.append(LoadError(DISABLE_ENV, f"{blocked[key]!r} is no installed plugin's entry-point or "
                                                      f"distribution name"))

    def load_plugin(self, spec: str, base_dir: Path | None = None) -> list[LoadError]:
        """Load a module name or a ``.py`` file named in an experiment's ``plugins:`` list, with the checks an
        installed plugin gets. Every failure (no such file, an import error, a failed check) is recorded in
        ``errors`` and returned; none is raised.

        This executes the plugin's code: only list plugins you trust.
        """
        before = len(self.errors)
        try:
            if is_file_spec(spec):
                module, label = _import_file(spec, base_dir)
                version = ""
            else:
                module = importlib.import_module(spec)
                label, version = spec, getattr(module, "__version__", "")
        except UserError as exc:
            self.errors.append(LoadError(spec, str(exc), str(exc)))
            return self.errors[before:]
        except Exception as exc:  # the plugin's own code failed: recorded, like a broken entry point
            error = f"{type(exc).__name__}: {exc}"
            self.errors.append(LoadError(spec, error, f"plugin {spec!r} failed to import: {error}"))
            return self.errors[before:]
        if module is None or self.pm.is_registered(module):
            return []
        self._register(module, label, version)
        for err in self.errors[before:]:
            err.message = f"plugin {spec!r} failed to load: {err.error}"
        return self.errors[before:]

    def _register(self, module: Any, label: str, version: str) -> None:
        """Register one plugin module and add its components; any failed check is a LoadError naming it."""
        try:
            self.pm.register(module, name=label)
            self._check_hooks(module)
            found: list[Component] = []
            for impl in self.pm.hook.medattn_components.get_hookimpls():
                if impl.plugin is module:
                    found.extend(impl.function() or [])
        except Exception as exc:
            if self.pm.is_registered(module):
                self.pm.unregister(module)
            error = str(exc) if isinstance(exc, pluggy.PluginValidationError) else f"{type(exc).__name__}: {exc}"
            error = " ".join(error.split())  # pluggy spreads its messages over lines
            self.errors.append(LoadError(label, error))
            return
        # built-in schemas are checked by the tests and by `plugins --check`: ~1 ms each would slow every command
        builtin = label.startswith(f"{PROJECT}:")
        for comp in found:
            problem = component_problem(comp, schema=not builtin)
            if problem:
                self.errors.append(LoadError(label, problem))
            else:
                self._add(comp, label, version)

    def _check_hooks(self, module: Any) -> None:
        """Every ``@hookimpl`` of the plugin matches a hook spec (pluggy ``check_pending``), and it has one."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError:
            known = [n for n in dir(MedattnSpec) if not n.startswith("_")]
            unknown = [name for name, caller in vars(self.pm.hook).items()
                       if not name.startswith("_") and not caller.has_spec()
                       and any(i.plugin is module for i in caller.get_hookimpls())]
            parts = []
            for name in unknown:
                close = difflib.get_close_matches(name, known, n=1)
                parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise pluggy.PluginValidationError(module, f"unknown hook {', '.join(parts)}: a @hookimpl must be "
                                                       f"named after a medattn hook ({', '.join(known)})") from None
        if not any(i.plugin is module for i in self.pm.hook.medattn_components.get_hookimpls()):
            raise pluggy.PluginValidationError(module, "provides no medattn_components hook (a function of that "
                                                       "name marked @medattn.api.hookimpl)")

    def _add(self, comp: Component, plugin: str, version: str) -> None:
        comp = dataclasses.replace(comp, plugin=plugin, version=version)
        key = (comp.kind, comp.name)
        if key in self.components:
            self.clashes.setdefault(key, [self.components[key]]).append(comp)
            return
        self.components[key] = comp

    # -- queries ---------------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(name for (k, name) in self.components if k == kind)

    def all(self) -> list[Component]:
        return sorted(self.components.values(), key=lambda c: (KINDS.index(c.kind), c.name))

    def get(self, kind: str, name: str) -> Component:
        key = (kind, name)
        if key in self.clashes:
            raise UserError(clash_message(self.clashes[key]))
        try:
            return self.components[key]
        except KeyError:
            raise UserError(f"no {kind} named {name!r}; known: {', '.join(self.names(kind)) or 'none'}"
                            f"{self.load_note()}") from None

    def load_note(self) -> str:
        """``; note: <plugin> failed to load: ...`` for each plugin that did not load (what an unknown name may
        be missing from), or ``""``."""
        failed = [e.message for e in self.errors if e.plugin != DISABLE_ENV]
        return "".join(f"; note: {m}" for m in failed)

    def factory(self, kind: str, name: str) -> Callable[..., Any]:
        """Import and return the factory of a component (the only place heavy modules get imported)."""
        comp = self.get(kind, name)
        try:
            return import_factory(comp)
        except Exception as exc:
            raise UserError(f"{kind} {name!r} from plugin {comp.plugin}: cannot load factory "
                            f"{comp.factory!r}: {type(exc).__name__}: {exc}") from None

    def build(self, kind: str, spec: str | dict[str, Any], ctx: Any, *, field: str | None = None,
              where: str = "") -> Any:
        """The component a config slot selects (``{name: ..., params: {...}}``, or its name alone), built.

        Checks that the component exists (and is not a clash), checks its params against its schema and fills
        the defaults, then calls ``factory(params, ctx)``. A UserError or NotApplicable from the factory passes
        as it is; any other exception becomes one UserError, ``FIELD: NAME cannot be built WHERE: REASON``
        (``field``: the config field, e.g. ``model.attention``; default ``KIND 'NAME' (plugin P)``).
        """
        spec = {"name": spec} if isinstance(spec, str) else spec
        name = spec["name"]
        comp = self.get(kind, name)
        factory = self.factory(kind, name)
        params = component_params(self, kind, spec)
        try:
            return factory(params, ctx)
        except (UserError, NotApplicable):
            raise
        except Exception as exc:  # noqa: BLE001 - a library's RuntimeError is still one clear line
            who = f"{field}: {name}" if field else f"{kind} {name!r} (plugin {comp.plugin})"
            raise UserError(f"{who} cannot be built{' ' + where if where else ''}: {failure_reason(exc)}") from None

    def check_factories(self) -> list[str]:
        """Check every component (clashing ones too): its params schema and its factory, imported and callable as
        ``factory(params, context)``. One line per problem; empty when all is well.

        This imports torch and every plugin's heavy modules: it is what ``medattn plugins --check`` runs.
        """
        comps = [*self.components.values(), *(c for cs in self.clashes.values() for c in cs[1:])]
        problems = []
        for comp in sorted(comps, key=lambda c: (KINDS.index(c.kind), c.name, c.plugin)):
            where = f"{comp.kind} {comp.name!r} ({comp.plugin})"
            problem = component_problem(comp)
            if problem:
                problems.append(f"{comp.plugin}: {problem}")
            try:
                fn = import_factory(comp)
            except Exception as exc:  # noqa: BLE001 - every failure is a finding
                problems.append(f"{where}: cannot import factory {comp.factory!r}: {type(exc).__name__}: {exc}")
                continue
            problem = _signature_problem(comp.kind, fn)
            if problem:
                problems.append(f"{where}: factory {comp.factory!r} {problem}")
        return problems


def _import_file(spec: str, base_dir: Path | None) -> tuple[Any, str]:
    """Import a plugin ``.py`` file once per process and content; (module, label). A second registry gets the same
    module while the file is unchanged, and the file's new code once it was edited (a notebook that edits its
    plugin and runs again must not keep running the old code)."""
    import hashlib

    from .files import sha256_file

    path = Path(spec)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.is_file():
        raise UserError(f"plugin file not found: {path}")
    where = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
    mod_name = f"medattn_user_plugin_{path.stem}_{where}_{sha256_file(path)[:12]}"
    if mod_name in sys.modules:
        return sys.modules[mod_name], str(path)
    loader_spec = importlib.util.spec_from_file_location(mod_name, path)
    assert loader_spec is not None and loader_spec.loader is not None
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[mod_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except BaseException:  # a half-run module must not be found by the next registry
        del sys.modules[mod_name]
        raise
    return module, str(path)


def component_problem(comp: Any, schema: bool = True) -> str | None:
    """What is wrong with a record as a plugin hands it over (kind, factory string, and with ``schema`` its params
    schema), or None."""
    if not isinstance(comp, Component):
        return f"medattn_components returned {type(comp).__name__} {comp!r}, not a Component"
    what = f"{comp.kind} {comp.name!r}"
    if comp.kind not in KINDS:
        return f"component {comp.name!r} has unknown kind {comp.kind!r}; kinds are {', '.join(KINDS)}"
    if not callable(comp.factory) and not (isinstance(comp.factory, str) and FACTORY_RE.match(comp.factory)):
        return f"{what}: factory {comp.factory!r} is not 'package.module:function'"
    if not schema:
        return None
    from jsonschema import Draft202012Validator, SchemaError

    try:
        Draft202012Validator.check_schema(dict(comp.params_schema))
    except SchemaError as exc:
        at = "/".join(str(p) for p in exc.path) or "the top level"
        return f"{what}: params_schema is not valid JSON Schema (Draft 2020-12) at {at}: {exc.message}"
    return None


def import_factory(comp: Component) -> Callable[..., Any]:
    """The factory a record names, imported (a callable record is its own factory)."""
    if callable(comp.factory):
        return comp.factory
    module_name, _, attr = comp.factory.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _signature_problem(kind: str, fn: Any) -> str | None:
    """Why ``fn`` cannot be a factory of ``kind`` (not callable, or not callable as ``fn(params, ctx)``)."""
    if not callable(fn):
        return f"is not callable: {type(fn).__name__} {fn!r}"
    if kind not in _TWO_ARG_KINDS:
        return None
    try:
        inspect.signature(fn).bind(None, None)
    except ValueError:  # no signature to read (a builtin): nothing to check
        return None
    except TypeError as exc:
        return f"cannot be called as factory(params, context): {exc}"
    return None


def clash_message(comps: list[Component]) -> str:
    c = comps[0]
    who = " and ".join(f"{x.plugin} {x.version}".strip() for x in comps)
    installed = [x.plugin for x in comps if ":" in x.plugin and not x.plugin.endswith(".py")]
    external = [p for p in installed if not p.startswith(f"{PROJECT}:")] or installed
    fix = "uninstall or rename one"
    if external:
        fix += f", or switch one off, e.g. {DISABLE_ENV}={external[-1].split(':', 1)[0]}"
    return f"{c.kind} {c.name!r} is provided by more than one plugin: {who}; {fix}"


def default_registry(extra_plugins: list[str] | None = None, base_dir: Path | None = None) -> Registry:
    """The registry of installed plugins (less the disabled ones) plus the given extra ones; a UserError when one
    of the extra ones does not load."""
    reg = Registry()
    reg.load_entry_points()
    failed = [e for spec in extra_plugins or [] for e in reg.load_plugin(spec, base_dir)]
    if failed:
        raise UserError("; ".join(e.message for e in failed))
    return reg
