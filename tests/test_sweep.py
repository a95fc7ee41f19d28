"""medattn sweep: the sweep: schema section, studies of ordinary runs, a worker killed -9 and the sweep re-run,
the Slurm array through submitit's local executor, --status, --finalize and the sweep figures."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import problems

SWEEP = """\
name: sw
seed: 3
device: cpu
dataset:
  name: synthetic_lesions
  image_size: 32
  params: {{n_train: {n_train}, n_val: 8, n_test: 16}}
model:
  backbone: {{name: resnet18, params: {{pretrained: false}}}}
  attention: {{name: none}}
train: {{epochs: {epochs}, batch_size: 8, progress: false, tensorboard: false}}
test: {{checkpoints: [best_val_loss]}}
figure: {{kinds: [sweep, report], dpi: 40}}
jobs: [train, test, figure]
sweep:
  trials: {trials}
  params:
    train.optimizer.lr: {{type: float, low: 1.0e-4, high: 1.0e-2, log: true}}
  pruner: {{name: none}}
  heartbeat: {{interval: 1, grace: 2}}
"""
VARIANTS = """\
matrix:
  model.attention:
    - {name: none}
    - {name: timm_attn, params: {type: cbam}}
"""


def sweep_file(write, tmp_path: Path, trials: int = 2, epochs: int = 1, n_train: int = 16, extra: str = "") -> Path:
    text = SWEEP.format(trials=trials, epochs=epochs, n_train=n_train) + extra
    return write("sw.yaml", text + f"output_dir: {tmp_path / 'runs'}\n")


def trials_of(tmp_path: Path, variant: str = "default") -> list:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "runs" / "sw" / "sweep" / f"{variant}.journal")))
    return optuna.load_study(study_name=f"sw/{variant}", storage=storage).get_trials(deepcopy=False)


def finished(trials: list) -> list:
    return [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]


# -- the schema --------------------------------------------------------------------------------------------
def test_bad_sweep_sections_are_reported_with_file_line_and_key(write, tmp_path):
    base = SWEEP.format(trials=2, epochs=1, n_train=16).split("sweep:")[0]
    path = write("bad.yaml", base + """\
sweep:
  trials: 5
  params:
    train.optimzer.lr: {type: float, low: 1.0e-4, high: 1.0e-2}
    train.batch_size: {type: float, low: 4, high: 16}
    train.optimizer.name: {type: categorical, choices: [adam, adamm]}
    train.epochs: {type: int, low: 0, high: 2, log: true}
  objective: {metric: val_los}
""")
    found = "\n".join(problems(path))
    assert "bad.yaml:18:5 sweep.params.train.optimzer.lr: unknown key (did you mean 'train.optimizer.lr'?)" in found
    assert "bad.yaml:22:23 sweep.objective.metric: 'val_los' does not match" in found
    fixed = path.read_text().replace("optimzer", "optimizer").replace("metric: val_los}", "metric: val_loss}")
    path.write_text(fixed)
    found = "\n".join(problems(path))
    assert "sweep.params.train.batch_size: 8.452 is not a value this key accepts" in found  # float on an int key
    assert "sweep.params.train.optimizer.name: 'adamm' is not a value this key accepts" in found
    assert "sweep.params.train.epochs: log: true needs low > 0" in found
    path.write_text(base + "sweep:\n  trials: 3\n  params:\n"
                           "    train.optimizer.name: {type: categorical, choices: [adam, sgd]}\n")
    assert "sweep.trials: 3 trials, but the search space has only 2 distinct points" in "\n".join(problems(path))
    path.write_text(base + VARIANTS + "sweep:\n  params:\n"
                           "    model.attention.params.type: {type: categorical, choices: [se, cbam]}\n")
    assert "the matrix sets model.attention" in "\n".join(problems(path))
    path.write_text(base + "sweep:\n  params:\n    train.optimizer.lr: {type: float, low: 0.1, high: 1, choices: [1]}\n")
    assert "sweep.params.train.optimizer.lr: choices: not for float" in "\n".join(problems(path))


def test_the_printed_schema_holds_the_sweep_section(cli):
    import json

    code, out, _ = cli("schema")
    sweep = json.loads(out)["$defs"]["experiment"]["properties"]["sweep"]
    assert code == 0 and "train.optimizer.lr" in sweep["properties"]["params"]["properties"]
    assert sweep["properties"]["params"]["additionalProperties"] is False
    assert {"trials", "objective", "sampler", "pruner", "heartbeat", "slurm"} <= set(sweep["properties"])


# -- sweep, status, finalize, figures ----------------------------------------------------------------------
def test_sweep_status_finalize_and_the_tuned_comparison(write, tmp_path, cli):
    from medattn.config import load_experiment

    path = sweep_file(write, tmp_path, extra=VARIANTS)
    code, out, err = cli("sweep", path)
    assert code == 0, err
    for variant in ("none", "timm_attn"):
        trials = trials_of(tmp_path, variant)
        assert len(finished(trials)) == 2 and len(trials) == 2
        assert (tmp_path / "runs" / "sw" / "sweep" / variant / "trial-001" / "metrics" / "history.csv").is_file()
    code, out, _ = cli("sweep", path, "--status")
    assert code == 0 and "| variant" in out and "best params" in out
    assert [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ") and "---" not in line] \
        == ["variant", "none", "timm_attn"]
    best = {v: min(finished(trials_of(tmp_path, v)), key=lambda t: t.value).params["train.optimizer.lr"]
            for v in ("none", "timm_attn")}
    code, out, err = cli("sweep", path, "--finalize")
    tuned = tmp_path / "sw-tuned.yaml"
    assert code == 0 and tuned.is_file(), err
    exp = load_experiment(tuned, ["seeds=[1,2]"])
    assert sorted({v.name for v in exp.variants}) == ["none", "timm_attn"]
    for v in exp.variants:
        assert v.config.data["train"]["optimizer"]["lr"] == best[v.name]
    code, out, err = cli("run", tuned, "--set", "seeds=[1,2]")
    assert code == 0, err
    root = tmp_path / "runs" / "sw"
    assert (root / "comparisons.csv").is_file()
    assert {p.name for p in (root / "figures").glob("sweep_*")} >= {"sweep_none_history.png",
                                                                    "sweep_timm_attn_importance.png"}
    assert "sweep_none_history" in (root / "report.html").read_text()


# -- faults ------------------------------------------------------------------------------------------------
def _kill_a_trained_worker(tmp_path: Path, proc: subprocess.Popen, deadline: float) -> int:
    """Wait for a running trial that finished an epoch and kill its worker with SIGKILL; returns the trial number."""
    journal = tmp_path / "runs" / "sw" / "sweep" / "default.journal"
    while time.time() < deadline and proc.poll() is None:
        try:
            trials = trials_of(tmp_path) if journal.is_file() else []
        except KeyError:  # the journal is there, the study not yet
            trials = []
        if trials:
            for t in trials:
                if t.state.name == "RUNNING" and t.intermediate_values and "worker" in t.user_attrs:
                    os.kill(int(t.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
                    return t.number
        time.sleep(0.05)
    pytest.fail("no running trial to kill")


def test_a_worker_killed_mid_trial_is_retried_and_a_rerun_finishes_exactly(write, tmp_path, cli):
    path = sweep_file(write, tmp_path, trials=4, epochs=3, n_train=48)
    medattn = [sys.executable, "-m", "medattn.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.Popen(medattn + ["sweep", str(path), "--workers", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    killed = _kill_a_trained_worker(tmp_path, proc, time.time() + 60)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "exit -9" in out, out  # the parent says a worker died
    code, rerun, err = cli("sweep", path)
    assert code == 0, err
    trials = trials_of(tmp_path)
    done = finished(trials)
    assert len(done) == 4
    assert len({t.params["train.optimizer.lr"] for t in done}) == 4  # no duplicate params
    dead = trials[killed]
    assert dead.state.name == "FAIL"
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retry) == 1 and retry[0].params == dead.params and retry[0].state.name == "COMPLETE"
    assert "resuming from epoch" in out + rerun  # the retry continued the killed trial's run directory
    history = (tmp_path / "runs" / "sw" / "sweep" / "default" / f"trial-{killed:03d}" / "metrics" / "history.csv")
    assert len(history.read_text().strip().splitlines()) == 1 + 3


# -- Slurm ---------------------------------------------------------------------------------------------------
SLURM = "  slurm: {partition: gpu, time: 30, gpus: 1, cpus: 2, array: 2, setup: [module load cuda]}\n"


def test_slurm_submits_one_job_array_through_submitit(write, tmp_path, cli, monkeypatch):
    """With stand-ins for srun and sbatch on PATH, submitit writes the array's sbatch script: check it."""
    path = sweep_file(write, tmp_path)
    path.write_text(path.read_text().replace("  pruner:", SLURM + "  pruner:"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {tmp_path}/submitted.sh\necho "Submitted batch job 4242"\n')
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    code, out, err = cli("sweep", path, "--slurm", "--cluster", "slurm", "--time", "45", "--array", "3")
    assert code == 0, err
    assert "submitted 3 worker(s) to slurm: 4242_0, 4242_1, 4242_2" in out
    script = (tmp_path / "submitted.sh").read_text()
    for line in ("#SBATCH --array=0-2%3", "#SBATCH --partition=gpu", "#SBATCH --time=45", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=2", "module load cuda"):
        assert line in script
    assert (tmp_path / "runs" / "sw" / "sweep" / "default.journal").is_file()  # the study exists before the tasks


def test_slurm_array_runs_with_the_local_executor(write, tmp_path, cli):
    path = sweep_file(write, tmp_path)
    path.write_text(path.read_text().replace("  pruner:", SLURM + "  pruner:"))
    code, out, err = cli("sweep", path, "--slurm", "--cluster", "local")
    assert code == 0, out + err
    assert "submitted 2 worker(s) to local" in out
    trials = trials_of(tmp_path)
    assert len(finished(trials)) == 2 and len(trials) == 2
    assert len({t.user_attrs["worker"] for t in trials}) >= 1
    assert len(list((tmp_path / "runs" / "sw" / "sweep" / "slurm").glob("*/*_log.out"))) == 2  # one per task
