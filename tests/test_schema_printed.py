"""One language: the schema ``medattn schema`` prints (what an editor's YAML language server reads) accepts
the files ``medattn validate`` accepts, shorthand, matrix bundles, ``extends`` and ``plugins`` included,
and a set of bad files fails under both. The printed schema is checked with plain jsonschema."""
from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from medattn.config import ConfigError, composed_schema, load_experiment, schema_for_file
from medattn.config.yaml_marks import load_yaml
from medattn.registry import default_registry

from .conftest import BASE

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "experiments").rglob("*.yaml")) + sorted((ROOT / "examples").rglob("*.yaml"))


GOOD = {
    "shorthand": BASE.replace("{name: none}", "none") + "train: {augment: mishra2019}\nexplain: {methods: [saliency]}\n",
    "numbers": BASE + "train: {optimizer: {lr: 1e-3, weight_decay: 1E-5, betas: [.5, 0.999]}}\n",
    "matrix_lists": BASE + "matrix:\n  model.attention.name: [none, timm_attn]\n  seed: [1, 2]\n",
    "matrix_bundle": BASE + """\
matrix:
  setting:
    baseline: {model.head: flatten_linear, train.augment: none}
    gated: {model.attention: {name: timm_attn, params: {type: cbam}}, model.head.params.dropout: 0.5,
            model.head.name: linear, explain.methods.0: saliency}
  train.optimizer.lr: [1e-3, 1e-4]
explain: {methods: [gradcam]}
""",
    "matrix_null_and_extends_null": BASE + "matrix:\nextends:\n",
    "anchors_and_merge": BASE + "train: &t {epochs: 2}\ntest: {batch_size: 4}\nexplain: {<<: {samples: 3}}\n",
}

BAD = {
    "unknown_key": BASE + "trian: {epochs: 3}\n",
    "wrong_type": BASE + "train: {epochs: three}\n",
    "below_minimum": BASE + "train: {batch_size: 0}\n",
    "unknown_component": BASE.replace("{name: none}", "{name: nnoe}"),
    "unknown_component_shorthand": BASE.replace("{name: none}", "nnoe"),
    "unknown_param": BASE.replace("{name: resnet18}", "{name: resnet18, params: {pretrainde: true}}"),
    "required_param_missing": BASE.replace("{name: synthetic_lesions, image_size: 32}", "{name: image_folder}"),
    "name_missing": BASE.replace("name: t\n", ""),
    "model_missing": "name: t\ndataset: synthetic_lesions\n",
    "component_not_a_name": BASE.replace("attention: {name: none}", "attention: 5"),
    "yaml11_boolean": BASE.replace("{name: resnet18}", "{name: resnet18, params: {pretrained: yes}}"),
    "underscore_number": BASE + "train: {epochs: 1_000}\n",
    "image_size_too_small": BASE.replace("image_size: 32", "image_size: 4"),
    "normalize_typo": BASE.replace("image_size: 32", "image_size: 32, normalize: imagnet"),
    "methods_empty": BASE + "explain: {methods: []}\n",
    "method_typo": BASE + "explain: {methods: [saliencee]}\n",
    "figure_param": BASE + "figure: {kinds: [{name: curves, params: {bogus: 1}}]}\n",
    "job_typo": BASE + "jobs: [train, trian]\n",
    "device": BASE + "device: gpu\n",
    "name_pattern": BASE.replace("name: t\n", "name: 't t'\n"),
    "extends_not_a_path": BASE + "extends: 5\n",
    "plugins_not_names": BASE + "plugins: [1]\n",
    "matrix_value": BASE + "matrix:\n  train.epochs: [1, 0]\n",
    "matrix_unknown_key": BASE + "matrix:\n  model.atention.name: [none]\n",
    "matrix_empty_list": BASE + "matrix:\n  seed: []\n",
    "matrix_not_a_mapping": BASE + "matrix: [seed]\n",
    "bundle_param": BASE + "matrix:\n  setting:\n    odd: {model.head: {name: linear, params: {drop: 1}}}\n",
    "bundle_unknown_key": BASE + "matrix:\n  setting:\n    odd: {model.hed: linear}\n",
    "bundle_empty_option": BASE + "matrix:\n  setting:\n    odd: {}\n",
    "bundle_shorthand_typo": BASE + "matrix:\n  setting:\n    odd: {train.augment: mishra}\n",
    "bundle_not_dotted": BASE + "matrix:\n  setting:\n    odd: {'train epochs': 2}\n",
}


@pytest.fixture(scope="module")
def printed() -> Draft202012Validator:
    schema = composed_schema(default_registry())
    Draft202012Validator.check_schema(schema)
    json.dumps(schema)  # plain JSON
    return Draft202012Validator(schema)


def printed_errors(validator: Draft202012Validator, path: Path) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(load_yaml(path).data)]


def test_the_shipped_experiments_are_found():
    assert len([p for p in SHIPPED if "experiments" in p.parts]) >= 4


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(ROOT)) for p in SHIPPED])
def test_shipped_experiment_passes_both(path):
    errors = printed_errors(Draft202012Validator(schema_for_file(path)), path)
    assert not errors, "\n".join(errors)
    load_experiment(path)


@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_file_passes_both(name, write, printed):
    path = write(f"{name}.yaml", GOOD[name])
    assert printed_errors(printed, path) == []
    load_experiment(path)


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_file_fails_both(name, write, printed):
    path = write(f"{name}.yaml", BAD[name])
    assert printed_errors(printed, path), "the printed schema accepts it"
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert all(line.startswith(str(path)) for line in info.value.problems)


def test_a_file_that_extends_may_leave_out_what_its_parent_gives(write, printed):
    write("base.yaml", BASE.replace("{name: none}", "{name: timm_attn}"))
    child = write("child.yaml", "extends: base.yaml\nname: child\nmodel: {attention: {params: {type: cbam}}}\n")
    assert printed_errors(printed, child) == []
    assert load_experiment(child).variants[0].config.data["model"]["attention"]["params"]["type"] == "cbam"
    bad = write("bad_child.yaml", "extends: base.yaml\nmodel: {attention: {params: {type: 7}}, bakbone: x}\n")
    assert printed_errors(printed, bad)
    with pytest.raises(ConfigError) as info:
        load_experiment(bad)
    assert any("model.bakbone: unknown key (did you mean 'backbone'?)" in line for line in info.value.problems)


PLUGIN = '''\
from medattn.api import Component, hookimpl


@hookimpl
def medattn_components():
    return [Component(kind="attention", name="file_gate", factory="os:getcwd", description="a test component",
                      params_schema={"type": "object", "additionalProperties": False,
                                     "properties": {"width": {"type": "integer", "minimum": 1, "default": 2}}})]
'''


def test_schema_for_file_includes_its_plugins(write):
    write("file_gate_plugin.py", PLUGIN)
    path = write("p.yaml", "plugins: [file_gate_plugin.py]\n"
                 + BASE.replace("{name: none}", "{name: file_gate, params: {width: 3}}"))
    assert printed_errors(Draft202012Validator(composed_schema(default_registry())), path)  # unknown without it
    reg = default_registry()
    schema = schema_for_file(path, reg)
    assert "file_gate" in json.dumps(schema)
    assert printed_errors(Draft202012Validator(schema), path) == []
    load_experiment(path, registry=reg)
    bad = write("pb.yaml", "plugins: [file_gate_plugin.py]\n"
                + BASE.replace("{name: none}", "{name: file_gate, params: {width: 0}}"))
    assert printed_errors(Draft202012Validator(schema), bad)
    with pytest.raises(ConfigError) as info:
        load_experiment(bad, registry=reg)
    assert any("model.attention.params.width: 0 is less than the minimum of 1" in p for p in info.value.problems)


def test_schema_for_file_reports_a_plugin_that_does_not_load(write):
    path = write("np.yaml", "plugins: [no_such_plugin_module_x]\n" + BASE)
    with pytest.raises(ConfigError) as info:
        schema_for_file(path)
    (line,) = info.value.problems
    assert line.startswith(f"{path}:1:11 plugins.0: plugin 'no_such_plugin_module_x' failed to import")


def test_example_plugin_experiment(write, monkeypatch):
    """The example plugin's experiment (what its README shows), its package found on the path."""
    monkeypatch.syspath_prepend(str(ROOT / "examples" / "medattn-example-attention"))
    path = write("gate.yaml", "plugins: [medattn_example_attention]\n"
                 + BASE.replace("{name: none}", "{name: spatial_gate, params: {hidden: 16}}"))
    assert printed_errors(Draft202012Validator(schema_for_file(path)), path) == []
    load_experiment(path)


def test_seeds_and_compare(write, printed):
    path = write("rep.yaml", BASE + "seeds: [0, 1, 2]\ncompare: {reference: none, metrics: [roc_auc]}\n")
    assert printed_errors(printed, path) == []
    cfg = load_experiment(path).variants[0].config.data
    assert cfg["seeds"] == [0, 1, 2] and cfg["compare"]["correction"] == "holm" and cfg["compare"]["resamples"] == 2000
    assert cfg["compare"]["mcnemar"] == "exact"
    midp = write("midp.yaml", BASE + "compare: {metrics: [accuracy], mcnemar: mid_p}\n")
    assert load_experiment(midp).variants[0].config.data["compare"]["mcnemar"] == "mid_p"
    assert load_experiment(write("one.yaml", BASE)).variants[0].config.data["compare"] is None
    bad = write("badrep.yaml", BASE + "seeds: [0, 0]\ncompare: {metrics: [auc], correction: holms}\n")
    assert len(printed_errors(printed, bad)) == 3
    with pytest.raises(ConfigError) as info:
        load_experiment(bad)
    assert [line.split(" ", 1)[1] for line in info.value.problems] == [
        "seeds: 0 is listed twice",
        "compare.metrics.0: 'auc' is not one of ['accuracy', 'balanced_accuracy', 'precision', 'recall', "
        "'sensitivity', 'specificity', 'f1', 'roc_auc', 'pr_auc'] (did you mean 'pr_auc'?)",
        "compare.correction: 'holms' is not one of ['holm', 'bonferroni', 'holm-sidak', 'sidak', 'simes-hochberg', "
        "'hommel', 'fdr_bh', 'fdr_by', 'none'] (did you mean 'holm'?)"]


def doc_experiments() -> list[tuple[str, str]]:
    """(where, text) of every ```yaml block in README.md and docs/*.md that is a whole experiment file (a
    top-level dataset: or extends:), not marked <!-- fragment -->."""
    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        for m in re.finditer(r"^([ \t]*)```ya?ml[^\n]*\n(.*?)^\1```", text, re.M | re.S):
            before = text[: m.start()].rstrip().splitlines()
            if before and before[-1].strip() == "<!-- fragment -->":
                continue
            body = textwrap.dedent(m.group(2))
            for part in re.split(r"^---[ \t]*\n", body, flags=re.M):
                if re.search(r"^(dataset|extends):", part, re.M):
                    found.append((f"{page.name}:{text.count(chr(10), 0, m.start()) + 1}", part))
    return found


DOCS = doc_experiments()
assert len(DOCS) >= 5, "the docs' experiment blocks were not found"


@pytest.mark.parametrize("where,text", DOCS, ids=[w for w, _ in DOCS])
def test_doc_experiment_passes_the_printed_schema(where, text, tmp_path, printed):
    path = tmp_path / "block.yaml"
    path.write_text(text, encoding="utf-8")
    errors = printed_errors(printed, path)
    assert not errors, f"{where}:\n" + "\n".join(errors)
