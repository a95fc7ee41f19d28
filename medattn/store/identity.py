"""Run identity: what decides the learnt weights (data, model, optimiser recipe, seed), so that a run directory
is reused only for the same run. Paths, logging and progress keys, the epoch count and the test / explain /
figure sections are not part of it: data moved elsewhere (same fingerprint) is the same run, and more epochs
continue a finished run."""
from __future__ import annotations

import json
from typing import Any

from ..errors import UserError
from .manifest import canonical

IDENTITY_KEYS = ("seed", "dataset", "model", "train")
# keys that change how a run is watched, fed or how long it goes on, not what one epoch learns
VOLATILE = {"train": ("progress", "tensorboard", "loader", "epochs"), "dataset": ("num_workers",)}


def identity(config: dict, registry: Any = None) -> dict:
    """The identity keys of a config, without volatile keys, without the dataset's location params (params whose
    schema says ``"format": "path"``: the data fingerprint stands for them) and without dataset params at their
    schema default (so that a param a later release adds, off by default, leaves earlier runs the same run)."""
    out: dict[str, Any] = {}
    for key in IDENTITY_KEYS:
        value = config.get(key)
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in VOLATILE.get(key, ())}
        out[key] = value
    dataset = out.get("dataset")
    if registry is not None and isinstance(dataset, dict) and isinstance(dataset.get("params"), dict):
        props = _dataset_params(registry, dataset.get("name"))
        dataset["params"] = {k: v for k, v in dataset["params"].items() if not _no_identity(props.get(k), v)}
    return out


def _dataset_params(registry: Any, name: Any) -> dict[str, Any]:
    try:
        return registry.get("dataset", str(name)).params_schema.get("properties", {})
    except UserError:
        return {}


def _no_identity(prop: Any, value: Any) -> bool:
    """A location param, or a param at its schema default."""
    if not isinstance(prop, dict):
        return False
    return prop.get("format") == "path" or ("default" in prop and canonical(prop["default"]) == canonical(value))


def check_run_dir(run) -> str:
    """'new', 'same', 'updated' (only keys outside the identity changed) or 'replaced' (a run directory that
    holds another run but no checkpoint yet); a different identity with checkpoints is refused."""
    file = run.dir.config
    if not file.is_file():
        return "new"
    try:
        old = run.dir.read_config()
    except UserError:
        if not run.dir.checkpoint_names():
            return "replaced"
        raise
    old_id, new_id = identity(old, run.registry), identity(run.config, run.registry)
    diffs = [k for k in IDENTITY_KEYS if canonical(old_id.get(k)) != canonical(new_id.get(k))]
    if diffs and not run.dir.checkpoint_names():
        return "replaced"
    if diffs:
        detail = "; ".join(first_difference(old_id.get(k), new_id.get(k), k) for k in diffs)
        raise UserError(f"{run.dir.root}: this run directory holds a different run ({detail}). "
                        f"Refusing to mix them: use --output-dir, rename the experiment, or remove the folder.")
    return "same" if canonical(old) == canonical(run.config) else "updated"


def first_difference(a: Any, b: Any, at: str) -> str:
    """``at.key: was X, now Y`` for the first key where two values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if canonical(a.get(k)) != canonical(b.get(k)):
                return first_difference(a.get(k), b.get(k), f"{at}.{k}")
    return f"{at}: was {json.dumps(a, default=str)}, now {json.dumps(b, default=str)}"
