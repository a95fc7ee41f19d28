"""Grids: variants in parallel over two CPU 'devices', --shard slices, complete variants skipped."""
from __future__ import annotations

import json

import pytest

from medattn.errors import UserError
from medattn.runs.grid import parse_shard, shard_of
from tests.test_engine import FAST

MATRIX = "matrix:\n  train.optimizer.lr: [0.001, 0.002]\n"


def grid_file(write, tmp_path):
    text = FAST.format(epochs=1, out=tmp_path / "runs").replace("jobs: [train]", "jobs: [train, test]")
    return write("grid.yaml", text + MATRIX)


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_shards_cover_every_variant_exactly_once(n):
    items = list(range(7))
    slices = [shard_of(items, i, n) for i in range(n)]
    assert sorted(x for s in slices for x in s) == items
    assert max(map(len, slices)) - min(map(len, slices)) <= 1


def test_bad_shard_is_a_user_error():
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x/2", "1", "-1/2"):
        with pytest.raises(UserError, match="--shard"):
            parse_shard(bad)


def test_two_variants_in_parallel_on_cpu_cpu_then_skipped(write, tmp_path, cli):
    file = grid_file(write, tmp_path)
    code, out, err = cli("run", file, "--devices", "cpu,cpu")
    assert code == 0, err
    runs = sorted(p for p in (tmp_path / "runs" / "fast").iterdir() if p.is_dir())
    assert len(runs) == 2
    for run in runs:
        assert json.loads((run / "metrics" / "test_best_val_loss.json").read_text())["n"] == 8
        assert set(json.loads((run / "jobs_done.json").read_text())) == {"train", "test"}
    summary = (runs[0].parent / "summary.csv").read_text().splitlines()
    assert len(summary) == 3  # header + one row per variant
    code, out, err = cli("run", file, "--devices", "cpu,cpu")
    assert code == 0, err
    assert out.count("skipped") == 2 and "0 to run" in out


def test_shard_runs_only_its_slice(write, tmp_path, cli):
    file = grid_file(write, tmp_path)
    code, out, err = cli("run", file, "--shard", "1/2", "--set", "jobs=[train]")
    assert code == 0, err
    base = tmp_path / "runs" / "fast"
    trained = sorted(p.name for p in base.iterdir() if (p / "checkpoints" / "last.pt").is_file())
    assert len(trained) == 1 and "shard 1/2: 1 of 2 run(s), 1 to run" in out
    code, _, err = cli("run", file, "--shard", "2/2")
    assert code == 2 and "--shard" in err and "Traceback" not in err
    code, _, err = cli("run", file, "--devices", "cuda:7")
    assert code == 2 and "cuda:7" in err
