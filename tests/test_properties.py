"""Property: whatever the file (random YAML text, random documents, random mutations of every shipped
experiment, random --set arguments), loading and validating it either succeeds or raises a UserError with a
message, never another exception, and never takes more than a few seconds."""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medattn.config import load_experiment
from medattn.config.yaml_marks import load_yaml
from medattn.errors import UserError
from medattn.registry import default_registry

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "experiments").rglob("*.yaml")) + sorted((ROOT / "examples").rglob("*.yaml"))
ORIGINALS = {p.name: load_yaml(p).data for p in SHIPPED}
REGISTRY = default_registry()

FAST = settings(max_examples=60, deadline=3000, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# words the schema knows (so random documents reach past the first unknown key), a few near misses, and
# YAML that means something in 1.1 and another thing in 1.2. No ``plugins``: that key imports modules.
WORDS = ["name", "dataset", "model", "backbone", "attention", "head", "params", "train", "test", "explain",
         "figure", "matrix", "extends", "seed", "device", "jobs", "epochs", "batch_size", "optimizer", "lr",
         "methods", "kinds", "image_size", "normalize", "output", "augment", "checkpoints", "samples",
         "synthetic_lesions", "resnet18", "none", "timm_attn", "saliency", "adam", "cpu", "model.attention",
         "train.epochs", "seed2", "trian", "nmae", "yes", "1e-3", ".5", "0o17", "1_000", "~", "<<"]
scalars = (st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, width=32)
           | st.sampled_from(WORDS) | st.text(max_size=12))
keys = st.sampled_from(WORDS) | st.text(min_size=1, max_size=8) | st.integers(-3, 3)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
                      max_leaves=20)
YAML_CHARS = st.sampled_from(list(":-[]{},&*!#|>'\"%@`?<= \n\t.") + ["name: ", "dataset: ", "model:\n  ", "  ",
                                                                      "- ", "&a ", "*a", "<<: ", "1e-3", "x"])


def outcome(text: str, overrides: list[str] | None = None) -> str:
    """Load ``text`` as an experiment file: 'ok' or 'user error'; anything else propagates (the test fails)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "experiment.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            load_experiment(path, overrides, registry=REGISTRY)
        except UserError as exc:
            assert str(exc).strip(), "a UserError without a message"
            return "user error"
    return "ok"


def dump(data) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


@FAST
@given(st.lists(YAML_CHARS | st.text(max_size=3), max_size=40).map("".join))
def test_random_yaml_text(text):
    outcome(text)


@FAST
@given(st.dictionaries(keys, values, max_size=8))
def test_random_documents(doc):
    outcome(dump(doc))


def paths(node, at=()):
    """Every path into a document (mapping keys and list positions)."""
    yield at
    if isinstance(node, dict):
        for k, v in node.items():
            yield from paths(v, at + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from paths(v, at + (i,))


def mutate(doc, data) -> dict:
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from([p for p in paths(doc) if p]))
        parent = doc
        for part in where[:-1]:
            parent = parent[part]
        last = where[-1]
        action = data.draw(st.sampled_from(["replace", "delete", "rename", "insert", "wrap", "stringify"]))
        if action == "replace":
            parent[last] = data.draw(values)
        elif action == "delete":
            del parent[last]
        elif action == "rename" and isinstance(parent, dict):
            parent[str(last) + data.draw(st.sampled_from(["s", "_", "x", ".0"]))] = parent.pop(last)
        elif action == "insert" and isinstance(parent[last], dict):
            parent[last][data.draw(keys)] = data.draw(values)
        elif action == "wrap":
            parent[last] = [parent[last]]
        elif action == "stringify":
            parent[last] = str(parent[last])
        if not doc:
            break
    return doc


@FAST
@given(st.sampled_from(sorted(ORIGINALS)), st.data())
def test_mutated_shipped_experiments(name, data):
    outcome(dump(mutate(ORIGINALS[name], data)))  # ok or a clear error; anything else raises


@FAST
@given(st.sampled_from(sorted(ORIGINALS)),
       st.lists(st.tuples(st.sampled_from(WORDS + ["train.optimizer.lr", "matrix.seed", "explain.methods.0",
                                                   "model.backbone.name", "seed.x", "train.0"]),
                          st.lists(YAML_CHARS | st.text(max_size=3), max_size=12).map("".join)),
                max_size=3))
def test_random_set_arguments(name, pairs):
    outcome(dump(ORIGINALS[name]), [f"{k}={v}" for k, v in pairs])

