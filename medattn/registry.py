"""Plugin discovery and the table of components.

Entry points of the group ``medattn`` are loaded one at a time, so a plugin that fails to import is
recorded (name, error) and the others still load. Modules or ``.py`` files named under ``plugins:`` in an
experiment are loaded the same way, on request. Two components of one kind and name are a clash: it is
recorded naming both plugins and becomes an error as soon as an experiment selects that name.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pluggy

from .errors import UserError
from .hookspecs import KINDS, PROJECT, Component, MedattnSpec


@dataclass
class LoadError:
    plugin: str
    error: str


class Registry:
    """Components of every kind, as handed over by the plugins."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(MedattnSpec)
        self.components: dict[tuple[str, str], Component] = {}
        self.clashes: dict[tuple[str, str], list[Component]] = {}
        self.errors: list[LoadError] = []
        self._sources: dict[str, tuple[str, str]] = {}  # registered plugin name -> (plugin, version)

    # -- discovery -------------------------------------------------------------------------------
    def load_entry_points(self) -> None:
        """Load every installed ``medattn`` entry point, isolating the broken ones."""
        for ep in sorted(metadata.entry_points(group=PROJECT), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else "?"
            label = f"{dist_name}:{ep.name}"
            try:
                module = ep.load()
            except Exception as exc:  # a broken plugin must not take the others down
                self.errors.append(LoadError(label, f"{type(exc).__name__}: {exc}"))
                continue
            self._register(module, label, dist.version if dist is not None else "")

    def load_plugin(self, spec: str, base_dir: Path | None = None) -> None:
        """Load a module name or a ``.py`` file named in an experiment's ``plugins:`` list.

        This executes the plugin's code: only list plugins you trust.
        """
        try:
            if spec.endswith(".py") or "/" in spec or "\\" in spec:
                path = Path(spec)
                if not path.is_absolute() and base_dir is not None:
                    path = base_dir / path
                if not path.is_file():
                    raise UserError(f"plugin file not found: {path}")
                mod_name = f"medattn_user_plugin_{path.stem}_{abs(hash(str(path.resolve()))) % 10**8}"
                if mod_name in sys.modules:
                    return
                loader_spec = importlib.util.spec_from_file_location(mod_name, path)
                assert loader_spec is not None and loader_spec.loader is not None
                module = importlib.util.module_from_spec(loader_spec)
                sys.modules[mod_name] = module
                loader_spec.loader.exec_module(module)
                label, version = str(path), ""
            else:
                module = importlib.import_module(spec)
                label, version = spec, getattr(module, "__version__", "")
        except UserError:
            raise
        except Exception as exc:
            raise UserError(f"plugin {spec!r} failed to import: {type(exc).__name__}: {exc}") from None
        if self.pm.is_registered(module):
            return
        self._register(module, label, version)

    def _register(self, module: Any, label: str, version: str) -> None:
        try:
            self.pm.register(module, name=label)
            impls = [i for i in self.pm.hook.medattn_components.get_hookimpls() if i.plugin is module]
            found: list[Component] = []
            for impl in impls:
                found.extend(impl.function() or [])
        except Exception as exc:
            if self.pm.is_registered(module):
                self.pm.unregister(module)
            self.errors.append(LoadError(label, f"{type(exc).__name__}: {exc}"))
            return
        for comp in found:
            self._add(comp, label, version)

    def _add(self, comp: Component, plugin: str, version: str) -> None:
        if comp.kind not in KINDS:
            self.errors.append(LoadError(plugin, f"component {comp.name!r} has unknown kind {comp.kind!r}; "
                                                 f"kinds are {', '.join(KINDS)}"))
            return
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
            raise UserError(f"no {kind} named {name!r}; known: {', '.join(self.names(kind)) or 'none'}") from None

    def factory(self, kind: str, name: str) -> Callable[..., Any]:
        """Import and return the factory of a component (the only place heavy modules get imported)."""
        comp = self.get(kind, name)
        if callable(comp.factory):
            return comp.factory
        module_name, _, attr = comp.factory.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except Exception as exc:
            raise UserError(f"{kind} {name!r} from plugin {comp.plugin}: cannot load factory "
                            f"{comp.factory!r}: {type(exc).__name__}: {exc}") from None


def clash_message(comps: list[Component]) -> str:
    c = comps[0]
    who = " and ".join(f"{x.plugin} {x.version}".strip() for x in comps)
    return f"{c.kind} {c.name!r} is provided by more than one plugin: {who}; uninstall or rename one"


def default_registry(extra_plugins: list[str] | None = None, base_dir: Path | None = None) -> Registry:
    """The registry of installed plugins plus the given extra ones."""
    reg = Registry()
    reg.load_entry_points()
    for spec in extra_plugins or []:
        reg.load_plugin(spec, base_dir)
    return reg
