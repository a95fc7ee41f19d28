"""The plugins a run was made with, so that the run opens elsewhere: each plugin file listed in ``plugins:`` is
copied into the run (``plugins/``, with its sha256) and loaded from that copy when the run is reopened
(``load_run``, ``predict``, ``export``), and refused when its sha256 differs from the model file's record (a changed
plugin is a different model) unless the caller allows changed plugins; a plugin module is recorded by module and
distribution, and a missing one is named with the command that installs it."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

from ..errors import MedattnWarning, UserError
from ..files import sha256_file
from ..registry import Registry, is_file_spec
from .rundir import RunDir

ALLOW_HINT = "--allow-changed-plugins (Python: allow_changed_plugins=True)"


class ChangedPluginWarning(MedattnWarning):
    """A plugin file differs from the one the model was trained with, and the caller allowed it."""


def distribution_of(module: str) -> tuple[str | None, str | None]:
    """(distribution, version) that installed a top-level module, or (None, None)."""
    import importlib.metadata as md

    names = md.packages_distributions().get(module.split(".")[0]) or []
    if not names:
        return None, None
    try:
        return names[0], md.version(names[0])
    except md.PackageNotFoundError:
        return names[0], None


def plugin_records(config: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per ``plugins:`` entry of a config whose file entries are absolute paths (a model file's):
    ``{file, sha256, source}`` for a file, ``{module, distribution, version}`` for a module."""
    out = []
    for spec in config.get("plugins") or []:
        if is_file_spec(spec):
            path = Path(spec)
            out.append({"file": path.name, "sha256": sha256_file(path) if path.is_file() else None,
                        "source": str(path)})
        else:
            dist, version = distribution_of(spec)
            out.append({"module": spec, "distribution": dist, "version": version})
    return out


def copy_plugin_files(rd: RunDir, records: list[dict[str, Any]]) -> None:
    """Copy each plugin file of ``records`` into the run's ``plugins/`` folder (kept when it is the same file)."""
    for rec in records:
        if "file" in rec and rec["sha256"]:
            target = rd.plugin_files / rec["file"]
            if not (target.is_file() and sha256_file(target) == rec["sha256"]):
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(rec["source"], target)


def registry_for(model_path: Path, meta: dict[str, Any], allow_changed_plugins: bool = False) -> Registry:
    """The registry that rebuilds a model file: the installed plugins plus the file's own ``plugins:``, each
    plugin file from the run's copy (``<run>/plugins/``, sha256 checked), else from where it was when the model
    was trained; every component the model names must then be there. A plugin file whose sha256 differs from the
    model file's record is a UserError naming both hashes; ``allow_changed_plugins``: a warning, and the changed
    file loads. Loading a plugin runs its code."""
    reg = Registry()
    reg.load_entry_points()
    config = meta.get("config") or {}
    records = meta.get("plugins")
    if records is None:  # a model file written before plugins were recorded: its config has absolute paths
        records = [{"file": Path(s).name, "sha256": None, "source": s} if is_file_spec(s) else {"module": s}
                   for s in config.get("plugins") or []]
    for rec in records:
        if "file" in rec:
            failed = reg.load_plugin(str(plugin_file(model_path, rec, allow_changed_plugins)))
        else:
            failed = load_module(reg, model_path, rec)
        if failed:
            raise UserError(f"{model_path}: " + "; ".join(e.message for e in failed))
    missing = missing_components(reg, meta)
    if missing:
        raise UserError(f"{model_path}: this model needs {'; '.join(missing)}")
    return reg


def plugin_file(model_path: Path, rec: dict[str, Any], allow_changed_plugins: bool = False) -> Path:
    """The run's copy of a plugin file, else the file it was copied from, whose sha256 is the model file's record.

    The first of the two that exists is the one that counts (the copy: a changed copy is not passed over for an
    unchanged source). A sha256 that differs is a UserError naming the file and both hashes, or with
    ``allow_changed_plugins`` a :class:`ChangedPluginWarning`; neither file there is a UserError saying where to
    put it. A record without a sha256 (a model file older than plugin copies) is loaded unchecked."""
    copy = RunDir(Path(model_path).parent.parent).plugin_files / rec["file"]
    recorded = rec.get("sha256")
    for path in (copy, Path(rec["source"])):
        if not path.is_file():
            continue
        found = sha256_file(path)
        if recorded and found != recorded:
            what = (f"{path}: this plugin file differs from the one {model_path} was trained with (sha256 recorded "
                    f"in the model file {recorded}, this file's {found}); a changed plugin is a different model")
            if not allow_changed_plugins:
                raise UserError(f"{what}. Restore the file the model was trained with, or pass {ALLOW_HINT} to "
                                "run the changed code anyway")
            warnings.warn(f"{what}; loading it anyway (changed plugins allowed)", ChangedPluginWarning, stacklevel=2)
        return path
    raise UserError(f"{model_path}: this model needs the plugin file {rec['file']} (sha256 "
                    f"{recorded or '?'}), which is neither in the run ({copy}) nor where it was trained "
                    f"({rec['source']}); copy the file the model was trained with to {copy}")


def load_module(reg: Registry, model_path: Path, rec: dict[str, Any]) -> list:
    """Import a plugin module of a model file; a missing one says which distribution to install."""
    import importlib.util

    if importlib.util.find_spec(rec["module"].split(".")[0]) is None:
        raise UserError(f"{model_path}: this model needs the plugin module {rec['module']!r}, which is not "
                        f"installed here; {install_hint(rec.get('distribution'), rec.get('version'))}")
    return reg.load_plugin(rec["module"])


def install_hint(dist: str | None, version: str | None) -> str:
    if not dist:
        return "it was not installed from a distribution: put its folder on PYTHONPATH"
    return f"install it with: pip install '{dist}=={version}'" if version else f"install it with: pip install {dist}"


def missing_components(reg: Registry, meta: dict[str, Any]) -> list[str]:
    """Each component the model file names that no loaded plugin provides, with the plugin it came from."""
    out = []
    for kind, rec in (meta.get("components") or {}).items():
        if (kind, rec["name"]) in reg.components or (kind, rec["name"]) in reg.clashes:
            continue
        plugin = rec.get("plugin") or "?"
        dist = plugin.split(":", 1)[0] if ":" in plugin and not plugin.endswith(".py") else None
        out.append(f"{kind} {rec['name']!r} from plugin {plugin} {rec.get('version') or ''}".rstrip()
                   + f", which is not installed here; {install_hint(dist, rec.get('version'))}")
    return out


def component_records(config: dict[str, Any], registry: Registry) -> dict[str, dict[str, Any]]:
    """{kind: {name, plugin, version}} of the components a model is built from (for its model files)."""
    model = config["model"]
    out = {}
    for kind, spec in (("backbone", model["backbone"]), ("attention", model.get("attention")),
                       ("head", model.get("head"))):
        if isinstance(spec, dict) and (kind, spec.get("name")) in registry.components:
            comp = registry.get(kind, spec["name"])
            out[kind] = {"name": comp.name, "plugin": comp.plugin, "version": comp.version or None}
    return out
