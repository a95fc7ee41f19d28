"""The loader: YAML 1.2 values in files and in --set, and hostile files refused fast with FILE:LINE:COL."""
from __future__ import annotations

import re
import time

import pytest

from medattn.config import MAX_REPORTED, load_experiment, lookup, with_defaults
from medattn.config.compose import MAX_EXPANDED, MAX_FILES, MAX_VARIANTS, parse_override
from medattn.config.yaml_marks import MAX_BYTES, MAX_DEPTH, MAX_NODES

from .conftest import BASE, problems


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def test_yaml12_numbers_in_a_file(write):
    p = write("n.yaml", BASE + """\
train:
  epochs: 3
  optimizer: {lr: 1e-3, weight_decay: 1E-5, betas: [.5, 0.999]}
  scheduler: {name: plateau, min_delta: 2.5e-4, min_lr: 0}
""")
    cfg = load_experiment(p).variants[0].config.data
    opt, sched = cfg["train"]["optimizer"], cfg["train"]["scheduler"]
    assert opt["lr"] == 1e-3 and opt["weight_decay"] == 1e-5 and opt["betas"] == [0.5, 0.999]
    assert sched["min_delta"] == 2.5e-4
    assert type(cfg["train"]["epochs"]) is int and type(sched["min_lr"]) is int


@pytest.mark.parametrize("text,value", [
    ("1e-3", 1e-3), ("1E5", 1e5), ("-2.5e-4", -2.5e-4), (".5", 0.5), ("+5", 5), ("0755", 755), ("0o17", 15),
    ("0x1F", 31), ("1.", 1.0), (".inf", float("inf")), ("true", True), ("False", False), ("~", None),
    ("yes", "yes"), ("1_000", "1_000"), ("1:30", "1:30"), ("2021-01-01", "2021-01-01"),
    ("[1e-3, {a: 2E2}]", [1e-3, {"a": 200.0}]),
])
def test_set_values_resolve_by_yaml_12(text, value):
    path, parsed = parse_override(f"a.b={text}")
    assert path == ("a", "b") and parsed == value and type(parsed) is type(value)


def test_set_number_reaches_the_config(write):
    p = write("s.yaml", BASE)
    cfg = load_experiment(p, ["train.optimizer.lr=1e-3", "train.epochs=2"]).variants[0].config.data
    assert cfg["train"]["optimizer"]["lr"] == 1e-3 and type(cfg["train"]["epochs"]) is int


def test_yaml11_words_are_text_with_a_hint(write):
    p = write("y.yaml", BASE.replace("{name: resnet18}", "{name: resnet18, params: {pretrained: yes}}")
              + "train: {epochs: 1_000}\n")
    lines = problems(p)
    assert f"{p}:4:51 model.backbone.params.pretrained: expected boolean, got string 'yes' " \
           f"(YAML 1.2: write true or false)" in lines
    assert f"{p}:6:17 train.epochs: expected integer, got string '1_000' (write 1000: no _ in numbers)" in lines


def test_alias_bomb_fails_fast_with_file_and_line(write):
    p = write("bomb.yaml", alias_bomb())
    start = time.perf_counter()
    (line,) = problems(p)
    assert time.perf_counter() - start < 5  # unbounded expansion takes minutes; counting stops it in ms
    assert line.startswith(f"{p}:") and f"more than {MAX_NODES} values once aliases" in line
    assert line.split(" ")[0].count(":") == 2  # FILE:LINE:COL


def test_alias_bomb_in_set_value(write):
    value = "{" + alias_bomb().replace("\n", ", ").rstrip(", ") + "}"
    (line,) = problems(write("ok.yaml", BASE), [f"description={value}"])
    assert line.startswith("--set description=") and "aliases" in line


def test_recursive_alias(write):
    p = write("r.yaml", BASE + "description: &x [*x]\n")
    (line,) = problems(p)
    assert line.startswith(f"{p}:6:18 ")
    assert "the alias *x refers to a value that contains it" in line


def test_deep_nesting_is_one_clear_problem(write):
    p = write("deep.yaml", BASE + "description: " + "[" * 3000 + "]" * 3000 + "\n")
    (line,) = problems(p)
    assert line.startswith(f"{p}:6:") and f"nested more than {MAX_DEPTH} deep" in line
    block = write("deep_block.yaml", BASE + "description:\n" + "".join(" " * i + "- \n" for i in range(1, 200)))
    (line,) = problems(block)
    assert line.startswith(f"{block}:") and "nested more than" in line


def test_file_size_limit(write):
    p = write("big.yaml", BASE + "description: " + "x" * (MAX_BYTES + 1) + "\n")
    (line,) = problems(p)
    assert line.startswith(f"{p}:1:1 the file is larger than {MAX_BYTES // 1024} KiB")


@pytest.mark.parametrize("value,message", [
    ("!!binary aGVsbG8=", "the tag tag:yaml.org,2002:binary is not allowed"),
    ("!!python/object/apply:os.system [echo hi]", "the tag tag:yaml.org,2002:python/object/apply:os.system is not allowed"),
    ("!!set {a, b}", "the tag tag:yaml.org,2002:set is not allowed"),
    ("!!int abc", "cannot read 'abc' as an integer"),
    ("!!float x", "cannot read 'x' as a number"),
    ("!!bool maybe", "cannot read 'maybe' as a boolean"),
    (".nan", ".nan is not a usable value"),
    ("9" * 5000, "as an integer"),
])
def test_values_that_are_not_plain_data(write, value, message):
    p = write("tag.yaml", BASE + f"description: {value}\n")
    (line,) = problems(p)
    assert line.startswith(f"{p}:6:14 description: ") and message in line


def test_undecodable_and_control_characters(write, tmp_path):
    p = tmp_path / "latin1.yaml"
    p.write_bytes(BASE.encode() + b"description: caf\xe9\n")
    (line,) = problems(p)
    assert line.startswith(f"{p}:6:17 not UTF-8 text (byte 0xe9)")
    q = write("ctrl.yaml", BASE + "description: a\x01b\n")
    (line,) = problems(q)
    assert line.startswith(f"{q}:6:15 YAML cannot hold the character '\\x01'")


def test_folder_and_missing_file(tmp_path):
    (line,) = problems(tmp_path)
    assert line == f"{tmp_path}: is a folder, not an experiment file"
    (line,) = problems(tmp_path / "nope.yaml")
    assert line == f"{tmp_path / 'nope.yaml'}: file not found"


def test_matrix_with_too_many_runs(write):
    big = "".join(f"  explain.indices.{i}: [{', '.join(map(str, range(10)))}]\n" for i in range(4))
    p = write("m.yaml", BASE + "explain: {indices: [0, 1, 2, 3]}\nmatrix:\n  train.epochs: [1, 2]\n" + big)
    (line,) = problems(p)
    assert line.startswith(f"{p}:8:3 matrix: 2 x 10 x 10 x 10 x 10 = 20000 runs of 16 values each; "
                           f"at most {MAX_VARIANTS} runs and {MAX_EXPANDED} values in all")
    many = write("v.yaml", BASE + f"explain: {{indices: {[0] * 9000}}}\nmatrix:\n  seed: {list(range(30))}\n")
    (line,) = problems(many)
    assert line.startswith(f"{many}:8:3 matrix: 30 = 30 runs of 9012 values each")


def test_hostile_lists_stay_fast_and_reports_stay_short(write):
    items = ", ".join(f"{{a: {i}}}" for i in range(6000))  # pairwise uniqueItems would take minutes
    p = write("u.yaml", BASE + f"jobs: [{items}]\n")
    start = time.perf_counter()
    lines = problems(p)
    assert time.perf_counter() - start < 20  # pairwise uniqueItems takes minutes here
    assert len(lines) == MAX_REPORTED + 1 and lines[-1] == f"{p}: ... and {6000 - MAX_REPORTED} more"
    (line,) = problems(write("twice.yaml", BASE + "jobs: [train, test, train]\n"))
    assert line.endswith(":6:7 jobs: 'train' is listed twice")


def test_cli_exit_2_without_traceback(write, cli):
    for name, text in [("bomb.yaml", alias_bomb()), ("deep.yaml", "a: " + "[" * 3000 + "]" * 3000 + "\n")]:
        p = write(name, text)
        code, out, err = cli("validate", p)
        assert code == 2 and "Traceback" not in err and re.search(rf"{re.escape(str(p))}:[0-9]+:[0-9]+ ", err)


def test_with_defaults_and_lookup():
    cfg = with_defaults({"name": "t", "dataset": "synthetic_lesions", "model": {"backbone": "resnet18"}})
    assert cfg["seed"] == 42 and lookup(cfg, "train.optimizer.lr") == 1e-4
    assert cfg["dataset"]["params"]["n_train"] > 0 and lookup(cfg, "model.backbone.params.pretrained") is False
    assert lookup(cfg, "train.optimizer.betas.1") == 0.999
    with pytest.raises(KeyError, match="config has no 'train.optimiser'"):
        lookup(cfg, "train.optimiser.lr")


def test_extends_that_cannot_be_a_file_and_fan_out(write):
    p = write("long.yaml", BASE + f"extends: {'x' * 300}.yaml\n")
    (line,) = problems(p)
    assert line.startswith(f"{p}:6:10 extends: cannot use 'xxx") and "File name too long" in line
    write("leaf.yaml", BASE)
    write("mid.yaml", "extends: [" + ", ".join(["leaf.yaml"] * 10) + "]\n")
    top = write("top.yaml", "extends: [" + ", ".join(["mid.yaml"] * 10) + "]\n")
    (line,) = problems(top)
    assert line.startswith(f"{top.parent / 'mid.yaml'}:1:") and f"extends: more than {MAX_FILES} files" in line


def test_nul_in_a_value(write):
    p = write("nul2.yaml", BASE + 'output_dir: "runs\\0x"\n')
    (line,) = problems(p)
    assert line == f"{p}:6:13 output_dir: text with a NUL character"
