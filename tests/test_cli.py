"""The command line, through a subprocess as a user runs it."""
from __future__ import annotations

import json
import subprocess
import sys


def medattn(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "medattn.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_help_for_every_command():
    for cmd in ([], ["run"], ["validate"], ["plugins"], ["schema"]):
        out = medattn(*cmd, "--help")
        assert out.returncode == 0 and "usage: medattn" in out.stdout


def test_schema_is_json_schema_with_component_params():
    out = medattn("schema")
    schema = json.loads(out.stdout)
    assert schema["$schema"].endswith("2020-12/schema")
    backbone = schema["$defs"]["experiment"]["properties"]["model"]["properties"]["backbone"]
    assert "resnet18" in backbone["anyOf"][0]["enum"]  # the bare-name shorthand
    full = backbone["anyOf"][1]
    assert "resnet18" in full["properties"]["name"]["enum"]
    assert any(rule["then"]["properties"]["params"].get("properties", {}).get("pretrained")
               for rule in full["allOf"])


def test_bad_file_exits_2_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndataset: {name: synthetic_lesions}\nmodel: {backbone: {name: resnt18}}\nseeed: 1\n")
    out = medattn("validate", bad)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{bad}:3:26 model.backbone.name: 'resnt18' is not one of" in out.stderr
    assert f"{bad}:4:1 seeed: unknown key (did you mean 'seed'?)" in out.stderr
    assert "2 problems" in out.stderr


def test_validate_a_good_file(tiny):
    out = medattn("validate", tiny)
    assert out.returncode == 0, out.stderr
    assert "ok default: device cpu; classes round, spiculated; train 24 (round 12, spiculated 12); val 8" in out.stdout
    assert "valid (1 run)" in out.stdout


def test_listing_and_schema_do_not_import_torch():
    code = ("import sys, io, contextlib\nfrom medattn.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    main(['plugins']); main(['schema'])\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'timm', 'captum', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


class _BadImages:
    """A dataset whose every item is a bad file (module level, so a worker process can unpickle it)."""

    def __len__(self):
        return 2

    def __getitem__(self, i):
        from medattn.errors import UserError

        raise UserError("/data/x.png: cannot decode image (truncated)")


def test_user_error_raised_in_a_loader_worker_is_unwrapped():
    from torch.utils.data import DataLoader

    from medattn.errors import UserError, user_message

    try:
        list(DataLoader(_BadImages(), num_workers=1))
    except UserError as exc:
        assert "Traceback" in str(exc)  # torch's wrapper carries the worker's traceback text
        assert user_message(exc) == "/data/x.png: cannot decode image (truncated)"
    else:
        raise AssertionError("the loader did not raise")


def test_validate_checks_explainer_layers(tiny):
    out = medattn("validate", tiny, "--set", "explain.methods=[{name: gradcam, params: {layer: backbone.nope}}]")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "--set explain.methods=" in out.stderr  # the mark of a value that came from --set
    assert "explain.methods.0.params.layer: layer 'backbone.nope' not found in the model" in out.stderr


def test_unwritable_output_dir_is_one_clear_line(tiny, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = medattn("run", tiny, "--output-dir", blocker / "runs")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("medattn: error: ") and str(blocker) in out.stderr
