"""The ``sweep:`` section: a search space over dotted keys, the objective, the trial budget, the sampler, the
pruner, the heartbeat and the Slurm settings of ``medattn sweep`` (plain data; no optuna imported here).

The composed schema lists every dotted key a sweep may set (the same keys a ``matrix`` may set), so an unknown
key is a schema error with a did-you-mean; :func:`space_problems` then checks that the bounds and choices are
values the key accepts.
"""
from __future__ import annotations

import copy
import math
from typing import Any

from .yaml_marks import Marked


def _key(schema: dict, default: Any, description: str) -> dict:
    return {**schema, "default": default, "description": description}


SPACE = {
    "type": "object", "additionalProperties": False, "required": ["type"],
    "description": "float {low, high, log, step}, int {low, high, log, step} or categorical {choices}",
    "properties": {
        "type": {"enum": ["float", "int", "categorical"], "description": "the kind of distribution"},
        "low": {"type": "number", "description": "float/int: lower bound (included)"},
        "high": {"type": "number", "description": "float/int: upper bound (included)"},
        "log": {"type": "boolean", "default": False, "description": "float/int: sample on a log scale (low > 0)"},
        "step": {"type": ["number", "null"], "exclusiveMinimum": 0, "default": None,
                 "description": "float/int: grid step (int: default 1; not with log)"},
        "choices": {"type": "array", "minItems": 1, "uniqueItems": True,
                    "items": {"type": ["string", "number", "boolean", "null"]},
                    "description": "categorical: the values tried"},
    },
    "allOf": [
        {"if": {"properties": {"type": {"enum": ["float", "int"]}}},
         "then": {"required": ["low", "high"]}},
        {"if": {"properties": {"type": {"const": "categorical"}}}, "then": {"required": ["choices"]}},
    ],
}

SLURM = {
    "type": "object", "additionalProperties": False, "default": {},
    "description": "medattn sweep --slurm: an array of workers submitted through submitit (flags override)",
    "properties": {
        "partition": _key({"type": ["string", "null"]}, None, "Slurm partition (null: the cluster's default)"),
        "time": _key({"type": "integer", "minimum": 1}, 60, "minutes per array task"),
        "gpus": _key({"type": "integer", "minimum": 0}, 1, "GPUs per array task"),
        "cpus": _key({"type": "integer", "minimum": 1}, 4, "CPUs per array task"),
        "mem_gb": _key({"type": ["number", "null"], "exclusiveMinimum": 0}, None, "memory per task (null: default)"),
        "array": _key({"type": "integer", "minimum": 1}, 4, "array tasks (workers) submitted"),
        "parallelism": _key({"type": ["integer", "null"], "minimum": 1}, None,
                            "array tasks running at once (null: all)"),
        "setup": _key({"type": "array", "items": {"type": "string"}}, [],
                      "shell lines run before each worker (module load ..., source venv/bin/activate)"),
        "cluster": _key({"enum": ["auto", "slurm", "local", "debug"]}, "auto",
                        "submitit executor: auto (Slurm when sbatch is found, else local processes), slurm, "
                        "local or debug (in this process)"),
    },
}

def sweep_section() -> dict:
    """The ``sweep`` section of the core schema (built on call: the metric names live with the jobs)."""
    from ..jobs.checkpoint_names import METRIC_NAMES

    out = copy.deepcopy(_SWEEP)
    out["properties"]["objective"]["properties"]["metric"]["pattern"] = ("^(train|val)_(" + "|".join(METRIC_NAMES)
                                                                         + ")$")
    return out


_SWEEP = {
    "type": ["object", "null"], "additionalProperties": False, "default": None, "required": ["params"],
    "description": "medattn sweep: an Optuna study per matrix variant over these dotted keys (medattn run "
                   "ignores it)",
    "properties": {
        "params": {"type": "object", "minProperties": 1, "additionalProperties": SPACE,
                   "description": "dotted.key: {type: float|int|categorical, ...}, e.g. train.optimizer.lr: "
                                  "{type: float, low: 1.0e-4, high: 1.0e-2, log: true}"},
        "trials": _key({"type": "integer", "minimum": 1}, 20,
                       "finished (complete or pruned) trials per variant; more failed ones stop the variant"),
        "best_checkpoints": _key({"type": "boolean"}, False,
                                 "trials keep train.checkpoints (best_*.pt); false: last.pt only (resume), which "
                                 "saves disk and time (--finalize trains the winners again over seeds)"),
        "objective": {
            "type": "object", "additionalProperties": False, "default": {},
            "description": "what a trial is worth: a per-epoch value of the train job's history",
            "properties": {
                "metric": _key({"type": "string"}, "val_loss",
                               "history value (val_ + loss or a metric; train_ works too)"),
                "direction": _key({"enum": ["auto", "minimize", "maximize"]}, "auto",
                                  "auto: minimize losses, brier and ece; maximize the rest"),
                "epoch": _key({"enum": ["best", "last"]}, "best",
                              "the trial's value: its best epoch, or its last"),
            },
        },
        "sampler": {
            "type": "object", "additionalProperties": False, "default": {}, "description": "Optuna sampler",
            "properties": {
                "name": _key({"enum": ["tpe", "random"]}, "tpe", "TPESampler or RandomSampler"),
                "seed": _key({"type": "integer", "minimum": 0}, 0,
                             "seed (each draw is seeded from a hash of it, the variant and the trial number)"),
                "startup_trials": _key({"type": "integer", "minimum": 0}, 10, "tpe: random trials first"),
            },
        },
        "pruner": {
            "type": "object", "additionalProperties": False, "default": {},
            "description": "stop poor trials early on the per-epoch objective metric",
            "properties": {
                "name": _key({"enum": ["none", "median", "hyperband"]}, "median",
                             "MedianPruner, HyperbandPruner or none"),
                "startup_trials": _key({"type": "integer", "minimum": 0}, 5, "median: trials never pruned first"),
                "warmup_epochs": _key({"type": "integer", "minimum": 0}, 1,
                                      "median: a trial's first epochs, never pruned"),
                "reduction_factor": _key({"type": "integer", "minimum": 2}, 3, "hyperband: reduction factor"),
            },
        },
        "heartbeat": {
            "type": "object", "additionalProperties": False, "default": {},
            "description": "a trial whose worker died (kill -9, node lost) is failed after `grace` seconds "
                           "without a heartbeat, and retried once; a claim lock unrenewed that long is taken over",
            "properties": {
                "interval": _key({"type": "integer", "minimum": 1}, 30, "seconds between heartbeats"),
                "grace": _key({"type": "integer", "minimum": 1}, 120,
                              "seconds without a heartbeat after which a running trial counts as dead"),
            },
        },
        "slurm": SLURM,
    },
}


def sweep_schema(keys: list[str], patterns: list[str]) -> dict:
    """The ``sweep`` section of the composed schema: only the dotted keys a run has (``keys`` exactly,
    ``patterns`` as regular expressions) may be swept."""
    out = sweep_section()
    params = out["properties"]["params"]
    del params["additionalProperties"]
    params.update({"properties": {k: SPACE for k in keys}, "patternProperties": {p: SPACE for p in patterns},
                   "additionalProperties": False})
    return out


def space_problems(marked: Marked, checker: Any, choices: dict | None = None) -> list[str]:
    """Bounds and choices that the swept key itself would refuse, bad bounds, a matrix key swept (``choices``:
    the variant's matrix choices), or fewer distinct points than trials; each
    ``FILE:LINE:COL sweep.params.KEY: ...``."""
    spec = marked.data.get("sweep")
    if not isinstance(spec, dict) or not isinstance(spec.get("params"), dict):
        return []
    problems: list[str] = []
    points = 1.0
    for key, space in spec["params"].items():
        where = f"{marked.mark(('sweep', 'params', key))} sweep.params.{key}"
        problems += [f"{where}: {p}" for p in _bounds_problems(space)]
        problems += [f"{where}: the matrix sets {m}; a key is either swept or a matrix dimension"
                     for m in choices or {} if m == key or key.startswith(m + ".") or m.startswith(key + ".")]
        problems += [f"{where}: {p}" for p in _value_problems(marked.data, key, _candidates(space), checker)]
        points *= _size(space)
    trials = spec.get("trials", 20)
    if not problems and isinstance(trials, int) and points < trials:
        problems.append(f"{marked.mark(('sweep', 'trials'))} sweep.trials: {trials} trials, but the search space "
                        f"has only {int(points)} distinct points (lower trials or widen the space)")
    return problems


def _bounds_problems(space: dict) -> list[str]:
    if space.get("type") == "categorical":
        extra = [k for k in ("low", "high", "log", "step") if k in space]
        return [f"{', '.join(extra)}: not for a categorical (it takes choices)"] if extra else []
    if "choices" in space:
        return [f"choices: not for {space['type']} (it takes low and high; or use type: categorical)"]
    low, high, log, step = space.get("low"), space.get("high"), space.get("log", False), space.get("step")
    out = []
    if low > high:
        out.append(f"low {low} is above high {high}")
    if log and low <= 0:
        out.append(f"log: true needs low > 0 (got {low})")
    if log and step is not None:
        out.append("step and log: true cannot be combined")
    if space["type"] == "int" and not all(float(v).is_integer() for v in (low, high) + ((step,) if step else ())):
        out.append("int: low, high and step must be whole numbers")
    return out


def _candidates(space: dict) -> list[Any]:
    if space["type"] == "categorical":
        return list(space["choices"])
    if space["type"] == "int":
        return [int(space["low"]), int(space["high"])]
    low, high = float(space["low"]), float(space["high"])
    return [low, high, low + (high - low) * 0.371]  # an inner, non-whole value: fails on an integer key


def _size(space: dict) -> float:
    if space["type"] == "categorical":
        return len(space["choices"])
    if space["type"] == "float" and not space.get("step"):
        return math.inf
    step = space.get("step") or 1
    return math.floor((space["high"] - space["low"]) / step) + 1 if not space.get("log") else math.inf


def _value_problems(config: dict, key: str, values: list[Any], checker: Any) -> list[str]:
    """Set each value at ``key`` in a copy of the config and keep the schema's complaints about that key."""
    from .compose import _path

    path = _path(key)
    out = []
    for value in values:
        data = copy.deepcopy({k: v for k, v in config.items() if k not in ("sweep", "matrix")})
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {}) if isinstance(node, dict) else node[part]
        node[path[-1]] = value
        for err in checker.iter_errors(data):
            at = tuple(err.absolute_path)
            if at[: len(path)] == path or path[: len(at)] == at and err.validator in ("anyOf", "oneOf"):
                out.append(f"{value!r} is not a value this key accepts ({err.message[:160]})")
                break
    return out
