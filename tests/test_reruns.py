"""Re-runs skip what is done, --force runs it again; one process per run directory (a lock, tested with real
processes); grids whose explain job reads every variant's predictions run in two phases."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys

from medattn.config import load_experiment
from medattn.runs.plan import plan
from medattn.runs.runner import run_experiment
from medattn.store.rundir import RunDir
from tests.test_engine import FAST, fast

AGREED = """\
explain: {methods: [{name: saliency}], samples: 2, select: agreed}
matrix:
  train.optimizer.lr: [0.001, 0.002]
"""


def jobs_done(run: RunDir) -> dict:
    return json.loads(run.jobs_done.read_text())


def test_a_plain_rerun_skips_done_jobs_and_force_runs_them_again(write, tmp_path, cli):
    exp = write("r.yaml", FAST.format(epochs=1, out=tmp_path / "runs").replace("jobs: [train]", "jobs: [train, test]"))
    assert cli("run", exp)[0] == 0
    run = RunDir(tmp_path / "runs" / "fast" / "default")
    first = jobs_done(run)
    metrics = run.test_metrics("best_val_loss").stat().st_mtime_ns
    code, out, err = cli("run", exp)
    assert code == 0, err
    assert "complete (train, test done for this config); skipped" in out
    assert jobs_done(run) == first and run.test_metrics("best_val_loss").stat().st_mtime_ns == metrics
    code, out, err = cli("run", exp, "--force", "test")
    assert code == 0, err
    assert "train already done for this config; skipped" in out and "test done in" in out
    assert run.test_metrics("best_val_loss").stat().st_mtime_ns != metrics
    # another config (here a test setting) runs the jobs again; train finds its checkpoint and trains nothing
    code, out, err = cli("run", exp, "--set", "test.bootstrap.resamples=0")
    assert code == 0 and "already trained for 1 epochs" in out and "test done in" in out
    code, _, err = cli("run", exp, "--force", "explain")
    assert code == 2 and "--force explain: not a job of this command (jobs: train, test" in err


def test_more_epochs_on_an_early_stopped_run_say_why_it_does_not_continue(write, tmp_path):
    exp = fast(write, tmp_path, epochs=6).read_text().replace(
        "  progress: false\n", "  progress: false\n  early_stopping: {patience: 1, min_delta: 100.0}\n")
    file = write("es.yaml", exp)
    run_experiment(load_experiment(file), log=lambda *_: None)
    run = RunDir(tmp_path / "runs" / "fast" / "default")
    trained = len(run.read_history())
    assert trained == 2  # stopped early after epoch 2
    lines: list[str] = []
    run_experiment(load_experiment(file, ["train.epochs=8"]), log=lines.append)
    assert any("stopped early after epoch 2" in line and "does not continue it" in line for line in lines), lines
    assert len(run.read_history()) == trained


HOLDER = """\
import sys, time
from medattn.runs.lock import lock_run
from medattn.store.rundir import RunDir
lock = lock_run(RunDir(sys.argv[1]))  # kept: a collected lock is released
print("held", flush=True)
time.sleep(120)
"""


def test_a_second_process_on_a_locked_run_exits_2_and_a_killed_holder_never_blocks(write, tmp_path, cli):
    grid = write("g.yaml", FAST.format(epochs=1, out=tmp_path / "runs") + "matrix:\n  train.optimizer.lr: [0.001, 0.002]\n")
    held = plan(load_experiment(grid))[0][0].dir  # shard 0/2's run
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(held.root)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        second = subprocess.run([sys.executable, "-m", "medattn.cli", "run", str(grid), "--shard", "0/2"],
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        line = second.stderr.strip().splitlines()[-1]
        assert f"pid {holder.pid} on host " in line and "Wait for it to finish or stop it" in line
        assert "Traceback" not in second.stderr and not held.checkpoints.exists()  # refused before any work
        code, out, err = cli("run", grid, "--shard", "1/2")  # the other shard's run has its own lock
        assert code == 0, err
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    code, out, err = cli("run", grid, "--shard", "0/2")  # the dead holder's lock is gone
    assert code == 0, err
    assert held.last.is_file()


def test_an_agreed_grid_under_shard_is_refused_before_training_then_runs_in_the_two_phases(write, tmp_path, cli):
    text = FAST.format(epochs=1, out=tmp_path / "runs").replace("jobs: [train]", "jobs: [train, test, explain]")
    grid = write("agreed.yaml", text + AGREED)
    code, _, err = cli("run", grid, "--shard", "0/2")
    assert code == 2 and "explain.select: agreed reads the test predictions" in err
    assert not (tmp_path / "runs" / "fast").exists()  # nothing trained, nothing written
    lines = [line.split("   (")[0].strip() for line in err.splitlines() if line.strip()[:3] in ("1. ", "2. ")]
    phase1, phase2 = (shlex.split(line[3:]) for line in lines)
    assert phase1[:2] == ["medattn", "run"] and phase1[-4:] == ["--jobs", "train,test", "--shard", "I/2"]
    assert phase2[-2:] == ["--jobs", "explain"]
    for i in range(2):  # the Slurm recipe: the array's tasks, then the explain job once
        code, _, err = cli(*phase1[1:-1], f"{i}/2")
        assert code == 0, err
    code, _, err = cli(*phase2[1:])
    assert code == 0, err
    runs = RunDir(tmp_path / "runs" / "fast").root.iterdir()
    done = [set(jobs_done(RunDir(r))) for r in runs if r.is_dir() and not r.name.startswith(".")]
    assert done == [{"train", "test", "explain"}] * 2


def test_an_agreed_grid_over_devices_runs_in_phases(write, tmp_path, cli):
    text = FAST.format(epochs=1, out=tmp_path / "runs").replace("jobs: [train]", "jobs: [train, test, explain]")
    grid = write("agreed.yaml", text + AGREED)
    code, out, err = cli("run", grid, "--devices", "cpu,cpu")
    assert code == 0, err + out
    assert "second phase (explain.select: agreed" in out
    runs = [p for p in (tmp_path / "runs" / "fast").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(runs) == 2 and all(set(jobs_done(RunDir(r))) == {"train", "test", "explain"} for r in runs)


def test_the_slurm_recipe_in_the_docs_runs_the_two_phases():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    recipe = text[text.index("### Slurm"):text.index("### Several GPUs")]
    assert "--jobs train,test --shard ${SLURM_ARRAY_TASK_ID}/${SLURM_ARRAY_TASK_COUNT}" in recipe
    assert "--jobs explain,figure" in recipe and "--dependency=afterok:$array" in recipe


def test_the_plan_knows_shards_pending_jobs_phases_and_locks_before_any_work(write, tmp_path, cli, monkeypatch):
    text = FAST.format(epochs=1, out=tmp_path / "runs").replace("jobs: [train]", "jobs: [train, test, explain]")
    grid = write("agreed.yaml", text + AGREED)
    exp = load_experiment(grid)
    whole = plan(exp, log=lambda *_: None)
    assert len(whole) == 2 and [j for _, j in whole.todo] == [["train", "test", "explain"]] * 2
    first, second = whole.phases
    assert [j for _, j in first] == [["train", "test"]] * 2 and [j for _, j in second] == [["explain"]] * 2
    assert "agreed" in whole.why and [d.root for d in whole.locks] == [r.dir.root for r, _ in whole.runs]
    assert plan(exp, devices="cpu,cpu", log=lambda *_: None).locks == []  # each grid process locks its own run
    assert not (tmp_path / "runs" / "fast").exists()  # planning wrote nothing

    code, _, err = cli("run", grid, "--shard", "0/2", "--device", "cpu")
    assert code == 2 and err.count("--device cpu") == 2  # both suggested commands keep the device

    import medattn.runs.plan as planning
    run_experiment(load_experiment(grid), log=lambda *_: None)
    again = plan(load_experiment(grid), log=lambda *_: None)
    assert again.todo == [] and again.locks == []  # everything done: nothing pending, nothing to lock
    asked = []
    monkeypatch.setattr(planning, "pending", lambda *a: asked.append(a) or [])
    from medattn.runs.runner import execute
    execute(again, log=lambda *_: None)  # the runner executes the plan without planning again
    assert asked == []
