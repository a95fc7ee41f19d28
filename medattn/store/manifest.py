"""manifest.json: what made a run (versions, components, device, git sha) and what data it saw."""
from __future__ import annotations

import functools
import hashlib
import json
import platform
import subprocess
import sys
import time
from typing import Any

import yaml

from .. import reproducible
from ..files import atomic_write_text, sha256_file

PACKAGES = ("medattn", "torch", "torchvision", "timm", "captum", "numpy", "scikit-learn")


def canonical(value: Any) -> str:
    """A stable text of a config value (sorted keys), for hashing and comparing."""
    return json.dumps(value, sort_keys=True, default=str)


def config_sha(config: dict) -> str:
    """The sha256 of a resolved config (manifest.json, and what jobs_done.json records per job)."""
    return hashlib.sha256(canonical(config).encode()).hexdigest()


def write_run_files(run) -> None:
    """config.yaml (resolved) and manifest.json, written before the first job; the data record of an earlier
    manifest is kept until the data set is built again."""
    run.dir.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.dir.config, yaml.safe_dump(run.config, sort_keys=False))
    data = manifest(run)
    data["plugins"] = plugin_records(run)
    if run.dir.manifest.is_file():  # unreadable: one clear error (its data record is what figures read)
        old = run.dir.read_manifest()
        if "data" in old:
            data["data"] = old["data"]
    atomic_write_text(run.dir.manifest, json.dumps(data, indent=2))


def plugin_records(run) -> list[dict]:
    """Copy the run's plugin files into it and return the record of every ``plugins:`` entry."""
    from .checkpoints import portable_config
    from .plugin_copies import copy_plugin_files, plugin_records

    records = plugin_records(portable_config(run.config, run.registry))
    copy_plugin_files(run.dir, records)
    return records


@functools.cache  # constant within a process; looked up once, not per run
def versions() -> dict[str, str | None]:
    import importlib.metadata as md

    out: dict[str, str | None] = {}
    for pkg in PACKAGES:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def manifest(run) -> dict:
    selected = {}
    for kind, spec in (("dataset", run.config["dataset"]), ("backbone", run.config["model"]["backbone"]),
                       ("attention", run.config["model"]["attention"])):
        comp = run.registry.get(kind, spec["name"])
        selected[kind] = {"name": comp.name, "plugin": comp.plugin, "version": comp.version}
    return {
        "experiment": run.experiment, "variant": run.variant, "repeat_seed": run.seed,
        "choices": json.loads(canonical(run.choices)),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": sys.version.split()[0], "platform": platform.platform(), "versions": versions(),
        "components": selected, "seed": run.config["seed"], "device": str(run.device),
        "git_sha": git_sha(), "config_sha256": config_sha(run.config), "kernels": reproducible.describe(),
    }


def data_fingerprint(bundle, run) -> str | None:
    """The dataset's own fingerprint, else a hash of the split lists it wrote."""
    listed = run.dir.splits
    return bundle.info.get("fingerprint") or (
        "sha256:" + sha256_file(listed) if listed.is_file() else None)


def record_data(run) -> None:
    """Add what the data set was to manifest.json: classes, split sizes and a fingerprint, so two runs can be
    checked to have seen the same data. A run that has checkpoints refuses data with another fingerprint."""
    from ..distributed import is_main
    from ..errors import UserError

    file = run.dir.manifest
    if not is_main() or not file.is_file():
        return
    bundle, splits = run._cache["data"]
    fingerprint = data_fingerprint(bundle, run)
    data = run.dir.read_manifest()
    old = (data.get("data") or {}).get("fingerprint")
    if old and fingerprint and old != fingerprint and run.dir.checkpoint_names():
        raise UserError(f"{run.dir.root}: its checkpoints were trained on other data (fingerprint {old}, now "
                        f"{fingerprint}). Use --output-dir or remove the folder to train on the new data.")
    data["data"] = {"classes": list(bundle.class_names), "sizes": {k: len(v) for k, v in splits.items()},
                    "fingerprint": fingerprint}
    atomic_write_text(file, json.dumps(data, indent=2))


@functools.cache
def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
