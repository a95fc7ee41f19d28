"""Experiment files: every kind of bad input gives FILE:LINE:COL path: message, all at once, exit 2."""
from __future__ import annotations

from medattn.config import load_experiment

from .conftest import BASE, problems


def test_valid_file_gets_defaults_and_shorthand(write):
    exp = load_experiment(write("ok.yaml", BASE + "train: {augment: none}\n"))
    cfg = exp.variants[0].config.data
    assert exp.variants[0].name == "default"
    assert cfg["seed"] == 42 and cfg["device"] == "auto"
    assert cfg["train"]["epochs"] == 10 and cfg["train"]["optimizer"]["name"] == "adam"
    assert cfg["train"]["augment"] == {"name": "none", "params": {}}
    assert cfg["model"]["backbone"]["params"]["pretrained"] is False


def test_yaml_syntax_error_names_line(write):
    p = write("bad.yaml", "name: t\ndataset: {name: x\nmodel: 1\n")
    (line,) = problems(p)
    assert line.startswith(f"{p}:3:") and "YAML syntax error" in line


def test_empty_file(write):
    (line,) = problems(write("e.yaml", "\n# nothing\n"))
    assert "file is empty" in line


def test_top_level_not_mapping(write):
    (line,) = problems(write("l.yaml", "- a\n- b\n"))
    assert ":1:1 the top level is a list" in line


def test_unknown_key_with_suggestion_and_all_errors_at_once(write):
    p = write("u.yaml", BASE + "trian: {epochs: 3}\nseed: -1\n")
    lines = problems(p)
    assert f"{p}:6:1 trian: unknown key (did you mean 'train'?)" in lines
    assert any(line.startswith(f"{p}:7:7 seed:") and "minimum" in line for line in lines)


def test_wrong_type_and_out_of_range(write):
    p = write("t.yaml", BASE + "train:\n  epochs: three\n  batch_size: 0\n")
    lines = problems(p)
    assert f"{p}:7:11 train.epochs: expected integer, got string 'three'" in lines
    assert any(line.startswith(f"{p}:8:15 train.batch_size:") and "minimum of 1" in line for line in lines)


def test_unknown_component_name_did_you_mean(write):
    p = write("c.yaml", BASE.replace("attention: {name: none}", "attention: {name: nnoe}"))
    (line,) = problems(p)
    assert line.startswith(f"{p}:5:21 model.attention.name: 'nnoe' is not one of")
    assert "(did you mean 'none'?)" in line


def test_params_not_accepted_by_component(write):
    p = write("p.yaml", BASE.replace("{name: resnet18}", "{name: resnet18, params: {pretrainde: true}}"))
    (line,) = problems(p)
    assert line.startswith(f"{p}:4:39 model.backbone.params.pretrainde: unknown key (did you mean 'pretrained'?)")


def test_duplicate_key(write):
    p = write("d.yaml", BASE + "seed: 1\nseed: 2\n")
    (line,) = problems(p)
    assert line.startswith(f"{p}:7:1 seed: duplicate key (first at line 6)")


def test_extends_merges_and_reports_child_lines(write):
    write("base.yaml", BASE + "train: {epochs: 2, batch_size: 4}\n")
    child = write("child.yaml", "extends: base.yaml\nname: child\ntrain: {epochs: 5}\n")
    cfg = load_experiment(child).variants[0].config.data
    assert cfg["name"] == "child" and cfg["train"]["epochs"] == 5 and cfg["train"]["batch_size"] == 4
    bad = write("bad_child.yaml", "extends: base.yaml\ntrain: {epochs: 0}\n")
    (line,) = problems(bad)
    assert line.startswith(f"{bad}:2:17 train.epochs:")


def test_extends_missing_and_cycle(write):
    (line,) = problems(write("m.yaml", "extends: nowhere.yaml\n" + BASE))
    assert ":1:10 extends: file not found: nowhere.yaml" in line
    write("a.yaml", "extends: b.yaml\n" + BASE)
    write("b.yaml", "extends: a.yaml\n")
    (line,) = problems(write("start.yaml", "extends: a.yaml\n"))
    assert "extends: cycle: start.yaml -> a.yaml -> b.yaml -> a.yaml" in line


def test_set_overrides_and_unknown_path(write):
    p = write("s.yaml", BASE)
    cfg = load_experiment(p, ["train.epochs=3", "model.attention.name=none"]).variants[0].config.data
    assert cfg["train"]["epochs"] == 3
    (line,) = problems(p, ["train.epoks=3"])
    assert line == "--set train.epoks=3 train.epoks: unknown key (did you mean 'epochs'?)"
    (line,) = problems(p, ["train.epochs=abc"])
    assert line.startswith("--set train.epochs=abc train.epochs: expected integer")


def test_matrix_expands_and_set_pins_a_dimension(write):
    p = write("x.yaml", BASE + "matrix:\n  model.attention.name: [none, timm_attn]\n  seed: [1, 2]\n")
    exp = load_experiment(p)
    assert [v.name for v in exp.variants] == ["none_1", "none_2", "timm_attn_1", "timm_attn_2"]
    assert exp.variants[3].config.data["seed"] == 2
    pinned = load_experiment(p, ["model.attention.name=none"])
    assert [v.name for v in pinned.variants] == ["1", "2"]


def test_matrix_key_not_in_schema(write):
    p = write("y.yaml", BASE + "matrix:\n  model.atention.name: [none]\n")
    lines = problems(p)
    assert any(line.startswith(f"{p}:7:3 model.atention: unknown key (did you mean 'attention'?)") for line in lines)


def test_matrix_value_error_points_at_matrix_entry(write):
    p = write("z.yaml", BASE + "matrix:\n  train.epochs: [1, 0]\n")
    (line,) = problems(p)
    assert line.startswith(f"{p}:7:21 train.epochs:")


def test_plugin_that_fails_to_import(write):
    write("broken_plugin.py", "raise RuntimeError('boom')\n")
    p = write("pl.yaml", "plugins: [broken_plugin.py]\n" + BASE)
    (line,) = problems(p)
    assert line.startswith(f"{p}:1:11 plugins.0: plugin 'broken_plugin.py' failed to import: RuntimeError: boom")


def test_matrix_bundle_sets_several_keys_and_names_the_variant(write):
    p = write("b.yaml", BASE + """\
matrix:
  setting:
    baseline: {model.head: {name: flatten_linear}}
    gated: {model.attention.name: timm_attn, model.head: {name: linear, params: {dropout: 0.5}}}
  seed: [1, 2]
""")
    exp = load_experiment(p)
    assert [v.name for v in exp.variants] == ["baseline_1", "baseline_2", "gated_1", "gated_2"]
    gated = exp.variants[2].config.data["model"]
    assert gated["attention"]["name"] == "timm_attn" and gated["head"]["params"]["dropout"] == 0.5
    assert exp.variants[0].config.data["model"]["attention"]["name"] == "none"
    bad = write("bb.yaml", BASE + "matrix:\n  setting:\n    odd: {model.head: {name: linear, params: {drop: 1}}}\n")
    (line,) = problems(bad)
    assert line.startswith(f"{bad}:8:47 model.head.params.drop: unknown key (did you mean 'dropout'?)")


def test_child_matrix_replaces_the_parents(write):
    write("grid.yaml", BASE + "matrix:\n  seed: [1, 2]\n  model.attention.name: [none, timm_attn]\n")
    exp = load_experiment(write("one.yaml", "extends: grid.yaml\nmatrix:\n  seed: [5]\n"))
    assert [v.name for v in exp.variants] == ["5"]


def test_set_pins_bundle_options_that_set_the_key(write):
    p = write("pin.yaml", BASE + """\
matrix:
  backbone:
    small: {model.backbone.name: resnet18, seed: 1}
    other: {model.backbone.name: densenet121, seed: 2}
  train.epochs: [1, 2]
""")
    exp = load_experiment(p, ["model.backbone.name=densenet121"])
    assert [v.name for v in exp.variants] == ["other_1", "other_2"]
    assert exp.variants[0].config.data["seed"] == 2
    (line,) = problems(p, ["model.backbone.name=vgg16"])
    assert "no option of matrix.backbone sets model.backbone.name to 'vgg16'" in line


def test_every_default_is_filled_in(write):
    """After loading, a key with a schema default is always there: code reads config["seed"], never .get."""
    from medattn.config.schema import SLOT, core_schema

    exp = load_experiment(write("f.yaml", BASE + "explain: {methods: [saliency]}\n"))
    reg = exp.registry
    missing: list[str] = []

    def walk(schema: dict, data, at: str) -> None:
        if SLOT in schema:
            comp = reg.get(schema[SLOT], data["name"])
            walk(dict(comp.params_schema), data["params"], f"{at}.params")
            walk({"properties": schema.get("extra", {})}, data, at)
            return
        if isinstance(data, dict):
            for key, sub in schema.get("properties", {}).items():
                if key not in data and "default" in sub:
                    missing.append(f"{at}.{key}")
                elif key in data:
                    walk(sub, data[key], f"{at}.{key}")
        elif isinstance(data, list) and isinstance(schema.get("items"), dict):
            for i, item in enumerate(data):
                walk(schema["items"], item, f"{at}.{i}")

    cfg = exp.variants[0].config.data
    walk(core_schema(reg), cfg, "")
    assert not missing
    assert cfg["seed"] == 42 and cfg["explain"]["methods"][0]["params"] is not None
    assert cfg["model"]["attention"]["params"] == {} and "quality" in cfg["explain"]
