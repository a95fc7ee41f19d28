"""Experiment files: load (with marks and ``extends``), override, expand the matrix, validate."""
from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..params import fill_defaults
from ..registry import Registry, default_registry
from .compose import Variant, apply_overrides, expand_matrix, load_with_extends
from .schema import composed_schema, core_schema, expand_shorthand, validate, validator
from .sweep_schema import space_problems
from .yaml_marks import Marked

__all__ = ["Experiment", "load_experiment", "composed_schema", "schema_for_file", "load_plugins_of",
           "with_defaults", "lookup", "ConfigError"]


MAX_REPORTED = 100  # problems shown at once; a file with thousands of bad keys shows the first ones


@dataclass
class Experiment:
    path: Path
    name: str
    variants: list[Variant]
    registry: Registry
    overrides: list[str] = field(default_factory=list)


def load_experiment(path: str | Path, overrides: list[str] | None = None,
                    registry: Registry | None = None) -> Experiment:
    """Load, compose and validate an experiment file; raises ConfigError listing every problem.

    Every variant's config is checked against :func:`composed_schema` and then holds every default.
    """
    path = Path(path)
    marked = load_with_extends(path, str(path))
    apply_overrides(marked, list(overrides or []))
    reg = registry or default_registry()
    problems = load_plugins(marked, reg, path.parent)
    variants = expand_matrix(marked)
    checker, schema = validator(reg), core_schema(reg)
    for variant in variants:
        found = validate(variant.config, reg, checker, schema)
        problems.extend(found or space_problems(variant.config, checker, variant.choices))
    if problems:
        problems = list(dict.fromkeys(problems))
        more = len(problems) - MAX_REPORTED
        raise ConfigError(problems[:MAX_REPORTED] + ([f"{path}: ... and {more} more"] if more > 0 else []))
    for variant in variants:
        variant.config.data = fill_defaults(schema, variant.config.data, reg)
    return Experiment(path, variants[0].config.data["name"], variants, reg, list(overrides or []))


def load_plugins(marked: Marked, reg: Registry, base_dir: Path) -> list[str]:
    """Load the modules and files a config lists under ``plugins:`` into ``reg`` (this runs their code), with
    the checks an installed plugin gets; one ``FILE:LINE:COL plugins.N: ...`` line per plugin that failed."""
    plugins = marked.data.get("plugins") or []
    problems: list[str] = []
    if isinstance(plugins, list):
        for i, spec in enumerate(plugins):
            if not isinstance(spec, str):
                continue  # the schema reports it
            problems.extend(f"{marked.mark(('plugins', i))} plugins.{i}: {err.message}"
                            for err in reg.load_plugin(spec, base_dir))
    return problems


def load_plugins_of(path: str | Path, registry: Registry) -> Registry:
    """Load into ``registry`` the plugins an experiment file lists under ``plugins:`` (after ``extends``);
    raises ConfigError (FILE:LINE:COL) for a file that does not load or a plugin that does not import."""
    path = Path(path)
    problems = load_plugins(load_with_extends(path, str(path)), registry, path.parent)
    if problems:
        raise ConfigError(problems)
    return registry


def schema_for_file(path: str | Path | None = None, registry: Registry | None = None) -> dict:
    """What ``medattn schema [FILE]`` prints: :func:`composed_schema` of the installed plugins plus, given a
    file, the components of the plugins it lists. Raises ConfigError for a bad file."""
    reg = registry or default_registry()
    if path is not None:
        load_plugins_of(path, reg)
    return composed_schema(reg)


def with_defaults(config: Mapping[str, Any], registry: Registry | None = None) -> dict:
    """A copy of a config dict with the shorthand expanded and every schema default filled in (not
    validated): for configs that did not come through :func:`load_experiment`, e.g. written by hand in code."""
    reg = registry or default_registry()
    schema = core_schema(reg)
    data = expand_shorthand(schema, copy.deepcopy(dict(config)))
    return fill_defaults(schema, data, reg)


def lookup(config: Mapping[str, Any], dotted: str) -> Any:
    """The value at ``train.optimizer.lr`` of a loaded config (defaults are filled in, so it is there).

    A missing key is a programming error (a config that skipped :func:`load_experiment` or
    :func:`with_defaults`), not bad input: it raises KeyError naming the dotted path.
    """
    node: Any = config
    for i, part in enumerate(dotted.split(".")):
        key: Any = int(part) if part.isdigit() and isinstance(node, list) else part
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            raise KeyError(f"config has no {'.'.join(dotted.split('.')[: i + 1])!r}; "
                           f"load it with load_experiment or with_defaults") from None
    return node
