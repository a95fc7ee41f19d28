"""Shared fixtures: in-process CLI calls, experiment files written on the fly, a tiny experiment."""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

# a complete experiment that trains in seconds on CPU
TINY = """\
name: tiny
seed: 3
device: cpu
dataset:
  name: synthetic_lesions
  image_size: 32
  params: {n_train: 24, n_val: 8, n_test: 8}
model:
  backbone: {name: resnet18, params: {pretrained: false}}
  attention: {name: none}
train: {epochs: 1, batch_size: 8, optimizer: {name: adam, lr: 1.0e-3}}
test: {checkpoints: [best_val_loss]}
explain: {methods: [{name: saliency}], samples: 2}
figure: {kinds: [curves, saliency_grid]}
jobs: [train, test, explain, figure]
"""


# the smallest valid experiment (config tests build their cases on it)
BASE = """\
name: t
dataset: {name: synthetic_lesions, image_size: 32}
model:
  backbone: {name: resnet18}
  attention: {name: none}
"""


# two variants (no attention, squeeze-and-excitation) trained one epoch on the synthetic lesions and compared
PAIRED = """\
name: {name}
seed: 3
device: cpu
output_dir: {out}
dataset:
  name: synthetic_lesions
  image_size: 32
  seed: 1
  params: {params}
model:
  backbone: {{name: resnet18, params: {{pretrained: false}}}}
  attention: {{name: none}}
train: {{epochs: 1, batch_size: 8}}
test: {test}
compare: {{reference: none, metrics: {metrics}, resamples: 50}}
jobs: [train, test]
matrix:
  attention:
    none: {{model.attention: {{name: none}}}}
    se: {{model.attention: {{name: timm_attn, params: {{type: se}}}}}}
"""


def paired_experiment(name: str, out: Path, params: str, test: str, metrics: str) -> str:
    """The text of :data:`PAIRED` with its data set params, test section and compared metrics (YAML flow)."""
    return PAIRED.format(name=name, out=out, params=params, test=test, metrics=metrics)


def problems(path, overrides=None) -> list[str]:
    """Every problem load_experiment reports for a file (it must fail)."""
    from medattn.config import load_experiment
    from medattn.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_experiment(path, overrides)
    return info.value.problems


@pytest.fixture
def write(tmp_path: Path):
    """write(name, text) -> path of a dedented file under tmp_path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    return _write


@pytest.fixture
def cli(capsys):
    """cli(*args) -> (exit code, stdout, stderr), run in-process."""
    from medattn.cli import main

    def _cli(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return _cli


@pytest.fixture
def tiny(write, tmp_path):
    """Path of the tiny experiment file, writing its runs under tmp_path/runs."""
    return write("tiny.yaml", TINY + f"output_dir: {tmp_path / 'runs'}\n")


# ---------------------------------------------------------------------------------------------------------------
# a real PACS: Orthanc with its DICOMweb plugin, started once per session when a test asks for it
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def orthanc(tmp_path_factory):
    """A running Orthanc (tests/dicom_studies.py: orthanc_server) for the whole session; skipped, with the reason,
    where Orthanc or its DICOMweb plugin is not installed."""
    from .dicom_studies import OrthancMissing, orthanc_server

    try:
        with orthanc_server(tmp_path_factory.mktemp("orthanc")) as server:
            yield server
    except OrthancMissing as exc:
        pytest.skip(str(exc))
