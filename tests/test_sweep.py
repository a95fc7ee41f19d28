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


def failures(trials: list) -> list[str]:
    """Each failed trial's reason, for an assertion's message."""
    return [f"trial {t.number}: {t.user_attrs.get('medattn:error', 'no heartbeat')}" for t in trials
            if t.state.name == "FAIL"]


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
    assert code == 0, out + err
    for variant in ("none", "timm_attn"):
        trials = trials_of(tmp_path, variant)
        assert len(finished(trials)) == 2 and len(trials) == 2, failures(trials)
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
    assert code == 0, out + err
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
        for t in trials:
            if t.state.name == "RUNNING" and t.intermediate_values and "worker" in t.user_attrs:
                os.kill(int(t.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
                return t.number
        time.sleep(0.05)
    said = proc.communicate(timeout=60)[0] if proc.poll() is not None else "(still running)"
    pytest.fail(f"no running trial to kill; the sweep said:\n{said}")


# Imported by each spawned worker as its __mp_main__: a worker's second trial (the retry of the killed one) starts
# slowly, as a load_experiment on a busy node does, and only once the third worker is polling, so that the poller
# looks at the retry before the retry's own code runs. Before the fix, the retry carried the dead trial's old
# heartbeat and was failed then, and its worker crashed telling it.
SLOW_RETRY = """\
import os, sys, time
import medattn.sweep.study as study

_config, _calls = study.trial_config, []


def trial_config(*args, **kwargs):
    _calls.append(1)
    if len(_calls) > 1:
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        storage = JournalStorage(JournalFileBackend(os.environ["SWEEP_JOURNAL"]))
        for _ in range(600):
            trials = optuna.load_study(study_name="sw/default", storage=storage).get_trials(deepcopy=False)
            if sum(t.state.name == "RUNNING" for t in trials) == 1:  # the others finished: the third worker polls
                break
            time.sleep(0.1)
        time.sleep(2.5)  # 2.5 poll intervals
    return _config(*args, **kwargs)


study.trial_config = trial_config

if __name__ == "__main__":
    from medattn.cli import main

    sys.exit(main(sys.argv[1:]))
"""


def test_three_workers_one_killed_while_two_poll_the_retry_is_never_failed_before_its_first_beat(write, tmp_path,
                                                                                                  cli):
    path = sweep_file(write, tmp_path, trials=3, epochs=3, n_train=48)
    path.write_text(path.read_text().replace("grace: 2}", "grace: 10}"))  # three workers on two cores beat late
    hook = write("slow_retry.py", SLOW_RETRY)
    journal = tmp_path / "runs" / "sw" / "sweep" / "default.journal"
    env = {**os.environ, "OMP_NUM_THREADS": "2", "SWEEP_JOURNAL": str(journal)}
    proc = subprocess.Popen([sys.executable, str(hook), "sweep", str(path), "--workers", "3"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    killed = _kill_a_trained_worker(tmp_path, proc, time.time() + 90)
    out, _ = proc.communicate(timeout=180)
    ended = out.split("worker(s) ended early:")[-1]
    assert proc.returncode == 2 and ended.count("(exit") == 1 and "exit -9" in ended, out  # only the killed one
    assert "Traceback" not in out, out
    trials = trials_of(tmp_path)
    done = finished(trials)
    assert len(done) == 3 and len({t.params["train.optimizer.lr"] for t in done}) == 3
    dead = trials[killed]
    assert dead.state.name == "FAIL"
    retry = [t for t in trials if t.number != killed and t.params == dead.params]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE", [(t.number, t.state.name) for t in trials]
    assert len(trials) == 4  # nothing failed but the killed trial
    assert "resuming from epoch" in out  # the retry continued the killed trial's run directory
    history = (tmp_path / "runs" / "sw" / "sweep" / "default" / f"trial-{killed:03d}" / "metrics" / "history.csv")
    assert len(history.read_text().strip().splitlines()) == 1 + 3
    code, rerun, err = cli("sweep", path)  # a re-run finds the study finished and trains nothing
    assert code == 0 and "== sw/" not in rerun and len(trials_of(tmp_path)) == 4, rerun + err


# -- draws, claims and the studies' bookkeeping, with trials that train nothing --------------------------------
GRID = """\
sweep:
  trials: {trials}
  params:
    train.optimizer.lr: {{type: categorical, choices: [1.0e-4, 1.0e-3, 1.0e-2, 1.0e-1]}}
    train.batch_size: {{type: categorical, choices: [4, 8, 16]}}
  sampler: {{startup_trials: 3}}
  pruner: {{name: none}}
  objective: {{metric: val_loss}}
  heartbeat: {{interval: 1, grace: 2}}
"""


def grid_file(write, tmp_path: Path, trials: int = 10, extra: str = "", objective: str = "val_loss") -> Path:
    base = SWEEP.format(trials=trials, epochs=1, n_train=16).split("sweep:")[0]
    text = base + extra + GRID.format(trials=trials).replace("metric: val_loss", f"metric: {objective}")
    return write("sw.yaml", text + f"output_dir: {tmp_path / 'runs'}\n")


def fake_value(params: dict) -> float:
    """A smooth objective of the grid's params: training would give one like it."""
    import math

    return abs(math.log10(params["train.optimizer.lr"]) + 2.6) + 0.1 * abs(params["train.batch_size"] - 8)


@pytest.fixture
def untrained(monkeypatch):
    """Trials that train nothing: run_trial tells fake_value (the study's logic is what is under test)."""
    import medattn.sweep.study as study

    ran = []

    def run_trial(exp, vs, trial, output_dir, device, log):
        ran.append((vs.name, dict(trial.params)))
        vs.study.tell(trial, fake_value(trial.params))
        return "complete"

    monkeypatch.setattr(study, "run_trial", run_trial)
    return ran


def test_a_12_point_space_finishes_10_trials_reusing_repeated_draws(write, tmp_path, untrained):
    from medattn.config import load_experiment
    from medattn.sweep.study import work

    path = grid_file(write, tmp_path)
    work(load_experiment(path), log=lambda msg: None)
    trials = trials_of(tmp_path)
    assert len(finished(trials)) == 10 and len(trials) == 10  # nothing failed, nothing redrawn
    keys = [tuple(sorted(p.items())) for _, p in untrained]
    assert len(keys) == len(set(keys))  # no params trained twice
    repeats = [t for t in trials if "medattn:repeat_of" in t.user_attrs]
    assert repeats and len(untrained) + len(repeats) == 10  # TPE repeats itself on so small a space
    for t in repeats:  # a repeat carries its twin's value
        assert t.value == trials[t.user_attrs["medattn:repeat_of"]].value == fake_value(t.params)


def test_variants_draw_independently_and_one_worker_repeats_its_draws(write, tmp_path, untrained):
    from medattn.config import load_experiment
    from medattn.sweep.study import work

    path = grid_file(write, tmp_path, trials=8, extra=VARIANTS)
    path.write_text(path.read_text().replace("{type: categorical, choices: [1.0e-4, 1.0e-3, 1.0e-2, 1.0e-1]}",
                                             "{type: float, low: 1.0e-4, high: 1.0e-1, log: true}"))
    work(load_experiment(path), log=lambda msg: None)
    draws = {v: [t.params for t in trials_of(tmp_path, v)] for v in ("none", "timm_attn")}
    # both variants see the same values for the same params: only their seeds may tell their draws apart
    assert sum(a == b for a, b in zip(draws["none"], draws["timm_attn"])) <= 2, draws
    path.write_text(path.read_text().replace(str(tmp_path / "runs"), str(tmp_path / "again")))
    work(load_experiment(path), log=lambda msg: None)
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "again" / "sw" / "sweep" / "none.journal")))
    again = [t.params for t in optuna.load_study(study_name="sw/none", storage=storage).get_trials()]
    assert again == draws["none"]


def test_concurrent_claims_on_a_file_system_without_working_flock_never_exceed_the_budget(write, tmp_path,
                                                                                           monkeypatch):
    """Two claims at once on one study with one trial to give, on a file system whose flock silently does nothing
    (as on many NFS mounts). Each claim, once it has read the trials, waits (up to 1.5 s) for the other to have read
    them too: without a working claim lock both read "no trial yet" and both ask, every time."""
    import fcntl
    import threading

    from medattn.config import load_experiment
    from medattn.sweep.study import claim, open_studies

    monkeypatch.setattr(fcntl, "flock", lambda *args, **kwargs: None)
    path = grid_file(write, tmp_path, trials=1)
    exp = load_experiment(path)
    barrier = threading.Barrier(2, timeout=1.5)
    studies = [open_studies(exp)[0] for _ in range(2)]
    def pausing(read):
        """The study's get_trials, waiting once, after its first read, for the other claim's first read."""
        first = [True]

        def get_trials(*args, **kwargs):
            trials = read(*args, **kwargs)
            if first.pop() if first else False:
                try:
                    barrier.wait()
                except threading.BrokenBarrierError:  # the other claim is locked out: go on alone
                    pass
            return trials

        return get_trials

    for vs in studies:
        vs.study.get_trials = pausing(vs.study.get_trials)
    got: list = []
    threads = [threading.Thread(target=lambda vs=vs: got.append(claim(vs))) for vs in studies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(map(str, got)).count("busy") == 1, got
    assert [t.state.name for t in trials_of(tmp_path)] == ["RUNNING"]


def test_a_claim_lock_whose_holder_stopped_renewing_it_is_taken_over_with_a_message(write, tmp_path):
    """A worker frozen while it held the claim lock (SIGSTOP; a node lost mid-claim looks the same from here): the
    next claim takes the lock over after heartbeat.grace seconds, and says so."""
    import threading

    from medattn.config import load_experiment
    from medattn.sweep.study import claim, open_studies

    path = grid_file(write, tmp_path, trials=1)
    said: list[str] = []
    vs = open_studies(load_experiment(path), log=said.append)[0]
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom pathlib import Path\nfrom medattn.sweep.study import ClaimLock\n"
        f"lock = ClaimLock(Path({str(vs.lock.path)!r}), 2)\nlock.__enter__()\nprint('held', flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        os.kill(holder.pid, signal.SIGSTOP)
        got: list = []
        thread = threading.Thread(target=lambda: got.append(claim(vs)), daemon=True)
        thread.start()
        thread.join(timeout=20)
        assert got and not isinstance(got[0], str), said  # claimed a trial
        assert any("could not be acquired" in line and "Waiting" in line for line in said), said
        assert any("taken over after" in line for line in said), said
    finally:
        holder.kill()
        holder.wait()


def test_a_claim_lock_held_with_another_grace_is_a_user_error_naming_the_setting(tmp_path):
    """Workers started with different sweep.heartbeat.grace disagree on the claim lock's lease: the one that meets
    a live holder with another grace is told which setting to align, not shown filelock's traceback."""
    from medattn.errors import UserError
    from medattn.sweep.study import ClaimLock

    with ClaimLock(tmp_path / "v.claim", 10):
        with pytest.raises(UserError, match=r"sweep\.heartbeat\.grace: 20 s here"):
            ClaimLock(tmp_path / "v.claim", 20).__enter__()


def test_a_changed_objective_refuses_to_continue_the_study(write, tmp_path, cli, untrained):
    path = grid_file(write, tmp_path, trials=2)
    code, out, err = cli("sweep", path)
    assert code == 0, out + err
    path.write_text(path.read_text().replace("metric: val_loss", "metric: val_roc_auc"))
    code, out, err = cli("sweep", path)
    assert code == 2 and "sweep.objective" in err and "val_loss (minimize, best epoch)" in err, err
    assert "metric val_loss -> val_roc_auc, direction minimize -> maximize" in err and "--set name=sw-2" in err
    assert len(trials_of(tmp_path)) == 2  # nothing was added to the old study
    path.write_text(path.read_text().replace("metric: val_roc_auc", "metric: val_loss, direction: maximize"))
    code, out, err = cli("sweep", path)
    assert code == 2 and "direction minimize -> maximize" in err, err
    code, out, err = cli("sweep", path, "--set", "name=sw-2")
    assert code == 0, err


def test_a_failing_trial_fails_alone_and_a_variant_at_its_limit_stops_alone(write, tmp_path, cli, monkeypatch):
    """CUDA running out of memory in every trial of one variant: its trials fail with the reason in --status, the
    worker goes on, the variant stops after more than `trials` failures, and the other variant finishes."""
    import medattn.runs.runner as runner

    def execute_run(exp, run, jobs, log):
        if run.config["model"]["attention"]["name"] == "none":
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        run.dir.history.parent.mkdir(parents=True, exist_ok=True)
        run.dir.history.write_text("epoch,val_loss\n1,0.5\n")

    monkeypatch.setattr(runner, "execute_run", execute_run)
    path = grid_file(write, tmp_path, trials=2, extra=VARIANTS)
    code, out, err = cli("sweep", path)
    assert code == 2, out + err
    assert "variant(s) none stopped: more failed trials than sweep.trials" in err and "--retry-failed" in err
    assert len(finished(trials_of(tmp_path, "timm_attn"))) == 2  # the other variant finished
    failed = trials_of(tmp_path, "none")
    assert [t.state.name for t in failed] == ["FAIL"] * 3  # more than trials=2, then it stopped
    code, out, _ = cli("sweep", path, "--status")
    row = next(line for line in out.splitlines() if line.startswith("| none"))
    assert "STOPPED (3 failed) trial 2: RuntimeError: CUDA out of memory" in row
    assert "stopped" not in next(line for line in out.splitlines() if line.startswith("| variant"))  # not printed
    monkeypatch.setattr(runner, "execute_run", lambda exp, run, jobs, log: (
        run.dir.history.parent.mkdir(parents=True, exist_ok=True), run.dir.history.write_text("epoch,val_loss\n1,0.4\n")))
    code, out, err = cli("sweep", path, "--retry-failed")  # the cause fixed: the variant goes on
    assert code == 0 and "none had stopped" in out, out + err
    assert len(finished(trials_of(tmp_path, "none"))) == 2


def test_the_sweep_uses_only_public_optuna_api():
    import re

    source = "\n".join(p.read_text() for p in (Path(__file__).parents[1] / "medattn" / "sweep").glob("*.py"))
    assert not re.findall(r"optuna(?:\.\w+)*\._\w+|\._storage\b|\._trial_id\b", source)


def test_finalize_into_another_folder_rebases_paths_and_adds_the_figure_jobs(write, tmp_path, cli, untrained,
                                                                            capsys):
    from medattn.config import load_experiment

    base = SWEEP.format(trials=2, epochs=1, n_train=16).split("sweep:")[0].replace("name: sw\n", "")
    base = base.replace("figure: {kinds: [sweep, report], dpi: 40}\njobs: [train, test, figure]\n", "jobs: [train]\n")
    write("shared/base.yaml", base + f"output_dir: {tmp_path / 'runs'}\n")
    write("exp/plugin_here.py", "from medattn.api import hookimpl\n\n\n@hookimpl\ndef medattn_components():\n"
                                "    return []\n")
    path = write("exp/sw.yaml", "name: sw\nextends: ../shared/base.yaml\nplugins: [plugin_here.py]\n"
                 + GRID.format(trials=2))
    code, out, err = cli("sweep", path)
    assert code == 0, out + err
    code, out, err = cli("sweep", path, "--finalize", "-o", tmp_path / "elsewhere" / "deeper" / "tuned.yaml")
    assert code == 0, err
    tuned = tmp_path / "elsewhere" / "deeper" / "tuned.yaml"
    exp = load_experiment(tuned)  # loads where -o put it
    text = tuned.read_text()
    assert "extends: ../../shared/base.yaml" in text and "../../exp/plugin_here.py" in text
    assert exp.variants[0].config.data["jobs"] == ["train", "test", "figure"]  # the report and the sweep figures
    code, out, err = cli("sweep", path, "--finalize")
    assert code == 0 and (tmp_path / "exp" / "sw-tuned.yaml").is_file(), err
    assert "extends: ../shared/base.yaml" in (tmp_path / "exp" / "sw-tuned.yaml").read_text()
    with pytest.raises(SystemExit):
        cli("sweep", "--help")
    assert "FILE-tuned.yaml beside FILE" in " ".join(capsys.readouterr().out.split())


# -- pruning -------------------------------------------------------------------------------------------------
def test_a_pruned_study_prunes_after_the_warmup_epochs(write, tmp_path, cli):
    """Trial 0 (an lr that barely moves the weights: a steady train loss) completes; trial 1 (an lr that makes the
    tiny model's loss jump) is worse than the median from epoch 1, is left alone for warmup_epochs: 1, and is
    pruned at epoch 2 of 3."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = sweep_file(write, tmp_path, trials=2, epochs=3, n_train=32)
    path.write_text(path.read_text().replace(
        "{type: float, low: 1.0e-4, high: 1.0e-2, log: true}", "{type: categorical, choices: [3.0e-3, 1.0e-7]}")
        .replace("pruner: {name: none}", "pruner: {name: median, startup_trials: 1, warmup_epochs: 1}")
        .replace("  heartbeat:", "  objective: {metric: train_loss}\n  heartbeat:"))
    code, out, err = cli("sweep", path, "--status")  # creates the study
    assert code == 0, err
    journal = tmp_path / "runs" / "sw" / "sweep" / "default.journal"
    study = optuna.load_study(study_name="sw/default", storage=JournalStorage(JournalFileBackend(str(journal))))
    study.enqueue_trial({"train.optimizer.lr": 1.0e-7})
    study.enqueue_trial({"train.optimizer.lr": 3.0e-3})
    code, out, err = cli("sweep", path)
    assert code == 0, out + err
    trials = trials_of(tmp_path)
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"], out
    assert sorted(trials[1].intermediate_values) == [1, 2]  # epoch 1 protected, pruned at epoch 2
    history = tmp_path / "runs" / "sw" / "sweep" / "default" / "trial-001" / "metrics" / "history.csv"
    assert len(history.read_text().strip().splitlines()) == 1 + 2
    assert "pruned after epoch 2" in out


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
    assert len(finished(trials)) == 2 and len(trials) == 2, failures(trials)
    assert len({t.user_attrs["worker"] for t in trials}) >= 1
    assert len(list((tmp_path / "runs" / "sw" / "sweep" / "slurm").glob("*/*_log.out"))) == 2  # one per task
