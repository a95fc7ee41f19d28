"""``medattn sweep``: one Optuna study per matrix variant; each trial is an ordinary run.

Optuna owns the search (storage, sampler, pruner, ask / tell); medattn only turns a trial's params into a run
directory ``OUTPUT_DIR/NAME/sweep/VARIANT/trial-NNN/`` (the same identity, resume and run-directory rules as
``medattn run``) and its train job's history into the objective. Studies live in
``OUTPUT_DIR/NAME/sweep/VARIANT.journal`` (Optuna's JournalFileBackend, meant for shared file systems) or in
an RDB (``--storage URL``). Any number of workers (processes here, Slurm array tasks) share them:

- a worker claims a trial under a file lock only while fewer than ``sweep.trials`` are finished or running, so a
  study ends with exactly that many finished (complete or pruned) trials;
- every running trial beats a heartbeat; a trial silent for ``sweep.heartbeat.grace`` seconds (its worker was
  killed) is failed and retried once with the same params, resuming from its run's last.pt;
- each draw is seeded from ``sweep.sampler.seed`` and the trial number, so re-runs and parallel workers never
  repeat a draw, and a draw equal to a finished or running trial's params is refused.
"""
from __future__ import annotations

import math
import os
import socket
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from filelock import FileLock
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat  # the interface Optuna's fail_stale_trials reads
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from ..config import Experiment
from ..config.compose import Variant
from ..errors import UserError
from ..store.rundir import ExperimentDir, RunDir

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")  # we beat for ask/tell ourselves
optuna.logging.set_verbosity(optuna.logging.WARNING)

BEAT = "medattn:heartbeat"  # trial system attribute: the time of the last heartbeat (journal storage)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
MAX_REDRAWS = 50  # draws equal to an existing trial's params, in a row, before the space counts as exhausted


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's JournalStorage with a heartbeat (Optuna 5.1 has one for RDBStorage only): the beat is a trial
    system attribute, so ``optuna.storages.fail_stale_trials`` and the retry callback work on journal files."""

    def __init__(self, backend: Any, interval: int, grace: int, callback: Any) -> None:
        super().__init__(backend)
        self._interval, self._grace, self._callback = interval, grace, callback

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, BEAT, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        return [t._trial_id for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
                if now - float(t.system_attrs.get(BEAT, t.datetime_start.timestamp())) > self._grace]

    def get_heartbeat_interval(self) -> int | None:
        return self._interval

    def get_heartbeat_stale_trial_callback(self) -> Any:
        return self._callback


def sweep_folder(exp: Experiment, output_dir: str | None = None) -> Path:
    """``OUTPUT_DIR/NAME/sweep``: the studies' journals and locks, and the trials' run directories."""
    config = exp.variants[0].config.data
    return ExperimentDir(Path(output_dir or config["output_dir"]) / exp.name).file("sweep")


def sweep_spec(exp: Experiment) -> dict:
    """The validated ``sweep:`` section (the same for every variant); a file without one is refused."""
    spec = exp.variants[0].config.data.get("sweep")
    if not spec:
        raise UserError(f"{exp.path}: no sweep: section; add one (see docs/sweeps.md), e.g.\n"
                        "sweep:\n  trials: 20\n  params:\n"
                        "    train.optimizer.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}")
    return spec


@dataclass
class VariantStudy:
    """The study of one variant, with the lock that makes claiming a trial atomic across workers."""

    variant: Variant
    study: Any  # optuna.Study
    lock: FileLock
    spec: dict
    folder: Path  # the variant's trial run directories

    @property
    def name(self) -> str:
        return self.variant.name


def open_storage(url: str | None, journal: Path, heartbeat: dict) -> Any:
    """An RDB storage for ``url``, else the journal file; both with the heartbeat and one retry."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=1)
    if url:
        try:
            return RDBStorage(url, heartbeat_interval=heartbeat["interval"], grace_period=heartbeat["grace"],
                              heartbeat_stale_trial_callback=retry)
        except Exception as exc:  # a bad URL, a missing driver, an unreachable server
            raise UserError(f"--storage {url}: {type(exc).__name__}: {exc}") from None
    journal.parent.mkdir(parents=True, exist_ok=True)
    return HeartbeatJournalStorage(JournalFileBackend(str(journal)), heartbeat["interval"], heartbeat["grace"],
                                   retry)


def open_studies(exp: Experiment, output_dir: str | None = None, storage: str | None = None) -> list[VariantStudy]:
    """The study of every variant, created on first use (``NAME/VARIANT`` in its storage)."""
    spec = sweep_spec(exp)
    folder = sweep_folder(exp, output_dir)
    shared = open_storage(storage, folder / "studies.journal", spec["heartbeat"]) if storage else None
    out = []
    for variant in exp.variants:
        store = shared or open_storage(None, folder / f"{variant.name}.journal", spec["heartbeat"])
        study = optuna.create_study(study_name=f"{exp.name}/{variant.name}", storage=store, load_if_exists=True,
                                    direction=direction(spec), pruner=make_pruner(spec["pruner"]))
        folder.mkdir(parents=True, exist_ok=True)
        out.append(VariantStudy(variant, study, FileLock(str(folder / f"{variant.name}.lock")), spec,
                                folder / variant.name))
    return out


def direction(spec: dict) -> str:
    """minimize or maximize; auto follows the metric (losses, brier and ece down, the rest up)."""
    from ..evidence.metric_specs import mode_of

    chosen = spec["objective"]["direction"]
    if chosen != "auto":
        return chosen
    return "minimize" if mode_of(spec["objective"]["metric"]) == "min" else "maximize"


def make_pruner(spec: dict) -> Any:
    if spec["name"] == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=spec["startup_trials"],
                                           n_warmup_steps=spec["warmup_epochs"])
    if spec["name"] == "hyperband":
        return optuna.pruners.HyperbandPruner(reduction_factor=spec["reduction_factor"])
    return optuna.pruners.NopPruner()


def make_sampler(spec: dict, number: int) -> Any:
    """The sampler of the next draw, seeded from the sweep seed and the trial number it will make."""
    seed = (spec["seed"] * 1_000_003 + number) % 2**32
    if spec["name"] == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=spec["startup_trials"])


def distributions(params: dict) -> dict:
    """``sweep.params`` as Optuna distributions."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for key, s in params.items():
        if s["type"] == "categorical":
            out[key] = CategoricalDistribution(list(s["choices"]))
        elif s["type"] == "int":
            out[key] = IntDistribution(int(s["low"]), int(s["high"]), log=s.get("log", False),
                                       step=int(s.get("step") or 1))
        else:
            out[key] = FloatDistribution(float(s["low"]), float(s["high"]), log=s.get("log", False),
                                         step=s.get("step"))
    return out


def counts(study: Any) -> Counter:
    return Counter(t.state for t in study.get_trials(deepcopy=False))


def claim(vs: VariantStudy) -> Any:
    """Under the study's lock: fail dead trials (and queue their retry), then ask for a trial when fewer than
    ``trials`` are finished or running. Returns the trial, "done" or "busy" (the rest are running)."""
    with vs.lock:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(vs.study)
        trials = vs.study.get_trials(deepcopy=False)
        n = Counter(t.state for t in trials)
        if n[TrialState.COMPLETE] + n[TrialState.PRUNED] >= vs.spec["trials"]:
            return "done"
        if n[TrialState.COMPLETE] + n[TrialState.PRUNED] + n[TrialState.RUNNING] >= vs.spec["trials"]:
            return "busy"
        failed = n[TrialState.FAIL] - sum(1 for t in trials if t.user_attrs.get("redraw"))
        if failed >= max(3, vs.spec["trials"]):
            raise UserError(f"sweep {vs.name}: {failed} trials failed; see the logs and the trial run directories "
                            f"under {vs.folder} (medattn sweep FILE --status)")
        return _ask(vs)


def _ask(vs: VariantStudy) -> Any:
    """A new trial whose params no finished or running trial has (a queued retry keeps its own)."""
    dists = distributions(vs.spec["params"])
    for _ in range(MAX_REDRAWS):
        trials = vs.study.get_trials(deepcopy=False)
        vs.study.sampler = make_sampler(vs.spec["sampler"], len(trials))
        trial = vs.study.ask(dists)
        if "failed_trial" in frozen(vs.study, trial).system_attrs:
            return trial
        taken = [t.params for t in trials if t.state in FINISHED + (TrialState.RUNNING,) and t.number != trial.number]
        if trial.params not in taken:
            return trial
        trial.set_user_attr("redraw", True)
        vs.study.tell(trial, state=TrialState.FAIL)
    raise UserError(f"sweep {vs.name}: {MAX_REDRAWS} draws in a row repeated finished trials; the search space "
                    f"seems exhausted (lower sweep.trials or widen sweep.params)")


def trial_config(exp: Experiment, variant: Variant, params: dict) -> dict:
    """The variant's config with the trial's params set as ``--set`` overrides would set them (validated,
    defaults filled), training only."""
    import json

    from ..config import load_experiment

    sets = [f"{key}={json.dumps(value)}" for key, value in params.items()]
    again = load_experiment(exp.path, list(exp.overrides) + sets, registry=exp.registry)
    config = next(v.config.data for v in again.variants if v.name == variant.name)
    config.update(jobs=["train"], seeds=None, compare=None)
    if not exp.variants[0].config.data["sweep"]["best_checkpoints"]:
        config["train"]["checkpoints"] = []
    return config


def frozen(study: Any, trial: Any) -> Any:
    """The stored record of a trial (its system attributes say whether it retries another)."""
    return study._storage.get_trial(trial._trial_id)


def trial_number(study: Any, trial: Any) -> int:
    """The run directory number: a retried trial resumes in its original trial's directory."""
    return int(frozen(study, trial).system_attrs.get("failed_trial", trial.number))


class Heartbeat:
    """Beats for a running trial every ``interval`` seconds in a thread (Optuna's heartbeat protocol)."""

    def __init__(self, storage: Any, trial: Any) -> None:
        self.storage, self.trial_id = storage, trial._trial_id
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name="medattn-heartbeat")

    def _beat(self) -> None:
        while True:
            try:
                self.storage.record_heartbeat(self.trial_id)
            except optuna.exceptions.UpdateFinishedTrialError:  # failed as stale by another worker
                return
            if self.stop.wait(self.storage.get_heartbeat_interval()):
                return

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()


def objective(history: list[dict], spec: dict) -> float:
    """The trial's value from the train job's history rows: the metric at its best or last epoch."""
    metric = spec["objective"]["metric"]
    values = [float(r[metric]) for r in history if r.get(metric) not in (None, "")]
    values = [v for v in values if math.isfinite(v)]
    if not values:
        raise UserError(f"sweep.objective.metric: {metric} has no finite value in the trial's history")
    if spec["objective"]["epoch"] == "last":
        return values[-1]
    return min(values) if direction(spec) == "minimize" else max(values)


def reporter(trial: Any, metric: str) -> Callable[[int, dict], None]:
    """The train job's epoch hook: report the epoch's metric, and stop the trial when the pruner says so."""

    def report(epoch: int, row: dict) -> None:
        value = float(row.get(metric, math.nan))
        if math.isfinite(value):
            trial.report(value, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}")

    return report


def run_trial(exp: Experiment, vs: VariantStudy, trial: Any, output_dir: str | None, device: str | None,
              log: Callable[[str], None]) -> str:
    """Train the trial's run and tell the study; returns the trial's final state name."""
    from ..runs.lock import locked_runs
    from ..runs.runner import execute_run
    from ..runs.state import Run
    from ..store.identity import check_run_dir

    number = trial_number(vs.study, trial)
    label = f"sweep/{vs.name}/trial-{number:03d}"
    config = trial_config(exp, vs.variant, trial.params)
    run = Run(exp.name, label, config, RunDir(vs.folder / f"trial-{number:03d}"), exp.registry,
              device or config["device"], None, log=log, cache_dir=Path(output_dir or config["output_dir"]) / ".cache",
              choices=dict(vs.variant.choices), epoch_hook=reporter(trial, vs.spec["objective"]["metric"]))
    shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    log(f"== {exp.name}/{label} (trial {trial.number}): {shown}")
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    with Heartbeat(vs.study._storage, trial):
        try:
            check_run_dir(run)
            for row in run.dir.read_history():  # a retry resumes: report the epochs it already has
                run.epoch_hook(int(row["epoch"]), row)
            with locked_runs([run.dir]):  # one process per run directory, as medattn run holds it
                execute_run(exp, run, ["train"], log)
            value = objective(run.dir.read_history(), vs.spec)
        except optuna.TrialPruned as exc:
            vs.study.tell(trial, state=TrialState.PRUNED)
            log(f"   trial {trial.number}: {exc}")
            return "pruned"
        except UserError as exc:  # this trial's problem (a diverging lr, ...): record it, go on with the next
            vs.study.tell(trial, state=TrialState.FAIL)
            log(f"   trial {trial.number} failed: {exc}")
            return "failed"
        except BaseException:  # Ctrl-C or a bug: fail it, queue its one retry, and stop
            vs.study.tell(trial, state=TrialState.FAIL)
            RetryHeartbeatStaleTrialCallback(max_retry=1)(vs.study, vs.study.trials[trial.number])
            raise
    vs.study.tell(trial, value)
    log(f"   trial {trial.number}: {vs.spec['objective']['metric']} {value:.4f}")
    return "complete"


def work(exp: Experiment, output_dir: str | None = None, device: str | None = None, storage: str | None = None,
         log: Callable[[str], None] = print) -> int:
    """One worker: claim and run trials, variant after variant, until every study has its finished trials
    (waiting, when only others' trials are left, for them to finish or go stale). Returns the trials run."""
    studies = open_studies(exp, output_dir, storage)
    poll = min(1.0, studies[0].spec["heartbeat"]["interval"])  # seconds between looks at others' trials
    ran = 0
    while True:
        busy = False
        for vs in studies:
            trial = claim(vs)
            if trial == "busy":
                busy = True
            if not isinstance(trial, str):
                run_trial(exp, vs, trial, output_dir, device, log)
                ran += 1
                break
        else:
            if not busy:
                return ran
            time.sleep(poll)


def worker_main(file: str, overrides: list[str], output_dir: str | None, device: str | None, storage: str | None,
                threads: int | None, index: int) -> int:
    """Entry point of a worker process (a local worker or a Slurm array task): its share of the threads, then
    :func:`work`. Importable at module level, so that spawn and submitit can call it."""
    import sys

    from ..config import load_experiment
    from ..errors import EXIT_BAD_INPUT, render_error

    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)

    def log(msg: str) -> None:
        print(f"[worker {index}] {msg}", flush=True)

    try:
        return work(load_experiment(Path(file), overrides), output_dir, device, storage, log)
    except (UserError, OSError) as exc:
        print(f"[worker {index}] {render_error(exc)}", file=sys.stderr, flush=True)
        sys.exit(EXIT_BAD_INPUT)


def available_cores() -> int:
    """Cores this process may use: OMP_NUM_THREADS when set, else the CPU affinity."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_workers(exp: Experiment, workers: int, output_dir: str | None = None, device: str | None = None,
                storage: str | None = None, log: Callable[[str], None] = print) -> list[tuple[int, int]]:
    """``workers`` processes sharing the studies, the cores divided between them (each its own torch threads);
    one worker runs in this process. Returns (worker, exit code) of the workers that failed."""
    import multiprocessing as mp

    open_studies(exp, output_dir, storage)  # created once here, not raced by the workers
    if workers == 1:
        work(exp, output_dir, device, storage, log)
        return []
    threads = max(1, available_cores() // workers)
    log(f"== {workers} workers, {threads} thread(s) each")
    ctx = mp.get_context("spawn")
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)  # read by each worker's torch as it starts
    try:
        procs = [ctx.Process(target=worker_main, name=f"medattn-sweep-{i}",
                             args=(str(exp.path), list(exp.overrides), output_dir, device, storage, threads, i))
                 for i in range(workers)]
        for p in procs:
            p.start()
    finally:
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved
    for p in procs:
        p.join()
    return [(i, p.exitcode) for i, p in enumerate(procs) if p.exitcode != 0]
