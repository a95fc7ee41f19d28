"""Experiment files: load (with marks and ``extends``), override, expand the matrix, validate."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..registry import Registry, default_registry
from .compose import Variant, apply_overrides, expand_matrix, load_with_extends
from .schema import composed_schema, core_schema, fill_defaults, validate

__all__ = ["Experiment", "load_experiment", "composed_schema", "ConfigError"]


@dataclass
class Experiment:
    path: Path
    name: str
    variants: list[Variant]
    registry: Registry
    overrides: list[str] = field(default_factory=list)


def load_experiment(path: str | Path, overrides: list[str] | None = None,
                    registry: Registry | None = None) -> Experiment:
    """Load, compose and validate an experiment file; raises ConfigError listing every problem."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError([f"{path}: is a folder, not an experiment file"])
    marked = load_with_extends(path, str(path))
    apply_overrides(marked, list(overrides or []))
    reg = registry or default_registry()
    plugins = marked.data.get("plugins") or []
    problems: list[str] = []
    if isinstance(plugins, list):
        for i, spec in enumerate(plugins):
            if not isinstance(spec, str):
                continue
            try:
                reg.load_plugin(spec, path.parent)
            except Exception as exc:  # UserError from the registry: keep collecting problems
                problems.append(f"{marked.mark(('plugins', i))} plugins.{i}: {exc}")
    if problems:
        raise ConfigError(problems)
    variants = expand_matrix(marked)
    schema = core_schema(reg)
    for variant in variants:
        problems.extend(validate(variant.config, reg, schema))
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))
    for variant in variants:
        variant.config.data = fill_defaults(schema, variant.config.data, reg)
    return Experiment(path, variants[0].config.data["name"], variants, reg, list(overrides or []))
