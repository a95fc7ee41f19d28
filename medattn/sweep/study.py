"""``medattn sweep``: one Optuna study per matrix variant; each trial is an ordinary run.

Optuna owns the search (storage, sampler, pruner, ask / tell); medattn only turns a trial's params into a run
directory ``OUTPUT_DIR/NAME/sweep/VARIANT/trial-NNN/`` (the same identity, resume and run-directory rules as
``medattn run``) and its train job's history into the objective. Studies live in
``OUTPUT_DIR/NAME/sweep/VARIANT.journal`` (Optuna's JournalFileBackend, meant for shared file systems) or in
an RDB (``--storage URL``). Any number of workers (processes here, Slurm array tasks) share them:

- a worker claims a trial under the study's claim lock (filelock's SoftFileLease: a marker file, no flock, so it
  holds on NFS) only while fewer than ``sweep.trials`` are finished or running, so a study ends with exactly
  that many finished (complete or pruned) trials;
- every running trial beats a heartbeat (a trial user attribute, beaten first under the claim lock); a trial silent
  for ``sweep.heartbeat.grace`` seconds (its worker was killed) is failed and retried once with the same params,
  resuming from its run's last.pt;
- each draw is seeded from ``sweep.sampler.seed``, the variant and the trial number, so the variants draw
  independently and a one-worker sweep repeats its draws; a draw equal to a finished trial's params is not trained
  again: it gets that trial's result, as Optuna's FAQ recommends (it counts toward ``trials``);
- an exception in a trial fails that trial (the reason is kept for ``--status``), never the worker; a variant with
  more failed trials than ``trials`` stops, and the other variants go on.

Only Optuna's public API is used: the heartbeat, the stale check and the retry are medattn's own (user attributes
and ``enqueue_trial``), the same for journal files and RDBs.
"""
from __future__ import annotations

import hashlib
import math
import os
import socket
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from .. import reproducible
from ..config import Experiment
from ..config.compose import Variant
from ..errors import UserError
from ..store.rundir import ExperimentDir, RunDir

optuna.logging.set_verbosity(optuna.logging.WARNING)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# trial user attributes (medattn's own bookkeeping, all public Optuna API)
BEAT = "medattn:beat"            # time.time() of the running trial's last heartbeat
RUN = "medattn:run"              # the trial-NNN run directory it trains in (a retry keeps its original's)
RETRY_OF = "medattn:retry_of"    # a retry: the number of the trial whose worker died
REPEAT_OF = "medattn:repeat_of"  # a repeated draw: the finished trial whose result it reuses
ERROR = "medattn:error"          # why the trial failed (shown by --status)
WORKER = "worker"                # host:pid of the worker that ran it
# study user attributes
OBJECTIVE = "medattn:objective"  # the metric, direction and epoch that the study's values are
FAILURES_FROM = "medattn:failures_from"  # failed trials numbered below this no longer count (--retry-failed)


class ClaimLock:
    """The claim lock of one study: filelock's SoftFileLease, a marker file created with O_EXCL and renewed by its
    holder (flock/fcntl locks, which Optuna's journal avoids too, are broken on many NFS mounts). A holder that died
    on this host is seen by its PID at once; one on another node, by its marker left unrenewed for ``grace`` seconds.
    A claim holds the lock for a fraction of a second, so a wait that long means its holder is gone: it says so."""

    def __init__(self, path: Path, grace: float, log: Callable[[str], None] = print) -> None:
        from filelock import SoftFileLease

        self.path, self.grace, self.log = path, float(grace), log
        self.lock = SoftFileLease(str(path), lease_duration=self.grace)

    def __enter__(self) -> ClaimLock:
        from filelock import LeaseSettingsMismatch, Timeout

        start = time.monotonic()
        try:
            try:
                self.lock.acquire(timeout=min(5.0, self.grace / 2))
            except Timeout as exc:
                self.log(f"   {exc} Waiting; a holder that stops renewing it for {self.grace:g} s is taken over.")
                self.lock.acquire()
                waited = time.monotonic() - start
                if waited >= self.grace:
                    self.log(f"   {self.path}: taken over after {waited:.0f} s; its holder stopped renewing it "
                             "(a worker killed or a node lost while claiming)")
        except LeaseSettingsMismatch as exc:  # a live holder took its lease with another grace
            raise UserError(f"sweep.heartbeat.grace: {self.grace:g} s here, but a worker that holds {self.path} "
                            f"now was started with another grace ({exc}); every worker of a sweep must use the "
                            "same sweep.heartbeat.grace: stop the others or run this one with theirs") from None
        return self

    def __exit__(self, *exc: Any) -> None:
        self.lock.release()


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
    lock: ClaimLock
    spec: dict
    folder: Path  # the variant's trial run directories
    log: Callable[[str], None] = field(default=print)

    @property
    def name(self) -> str:
        return self.variant.name

    @property
    def grace(self) -> float:
        return float(self.spec["heartbeat"]["grace"])


def open_storage(url: str | None, journal: Path) -> Any:
    """An RDB storage for ``url``, else the journal file."""
    if url:
        try:
            return RDBStorage(url)
        except Exception as exc:  # a bad URL, a missing driver, an unreachable server
            raise UserError(f"--storage {url}: {type(exc).__name__}: {exc}") from None
    journal.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(journal)))


def open_studies(exp: Experiment, output_dir: str | None = None, storage: str | None = None,
                 log: Callable[[str], None] = print) -> list[VariantStudy]:
    """The study of every variant, created on first use (``NAME/VARIANT`` in its storage); a study whose objective
    differs from the file's is refused."""
    spec = sweep_spec(exp)
    folder = sweep_folder(exp, output_dir)
    shared = open_storage(storage, folder / "studies.journal") if storage else None
    out = []
    for variant in exp.variants:
        store = shared or open_storage(None, folder / f"{variant.name}.journal")
        study = optuna.create_study(study_name=f"{exp.name}/{variant.name}", storage=store, load_if_exists=True,
                                    direction=direction(spec), pruner=make_pruner(spec["pruner"]))
        check_objective(exp, study, spec, storage or folder / f"{variant.name}.journal")
        folder.mkdir(parents=True, exist_ok=True)
        lock = ClaimLock(folder / f"{variant.name}.claim", spec["heartbeat"]["grace"], log)
        out.append(VariantStudy(variant, study, lock, spec, folder / variant.name, log))
    return out


def objective_of(spec: dict) -> dict:
    """What a study's values are: the history metric, its direction and the epoch that scores a trial."""
    return {"metric": spec["objective"]["metric"], "direction": direction(spec), "epoch": spec["objective"]["epoch"]}


def check_objective(exp: Experiment, study: Any, spec: dict, where: Any) -> None:
    """Record the objective in a new study; refuse to continue one whose values mean something else."""
    wanted = objective_of(spec)
    had = study.user_attrs.get(OBJECTIVE)
    if had is None:
        had = {**wanted, "direction": study.direction.name.lower()}
        if had == wanted or not study.get_trials(deepcopy=False):
            study.set_user_attr(OBJECTIVE, wanted)
            return
    if had == wanted:
        return
    shown = ", ".join(f"{k} {had[k]} -> {wanted[k]}" for k in wanted if had.get(k) != wanted[k])
    raise UserError(
        f"{exp.path}: sweep.objective: the study {study.study_name} ({where}) was run with "
        f"{had['metric']} ({had['direction']}, {had['epoch']} epoch); the file now asks for {shown}. Its trials' values "
        f"cannot be compared with the new objective, so it is not continued. Put the objective back, or start a new "
        f"study under a new experiment name (`name:` in the file, or --set name={exp.name}-2): its studies and trials "
        f"then go to OUTPUT_DIR/{exp.name}-2/sweep/ and the old study stays as it is")


def direction(spec: dict) -> str:
    """minimize or maximize; auto follows the metric (losses, brier and ece down, the rest up)."""
    from ..evidence.metric_specs import mode_of

    chosen = spec["objective"]["direction"]
    if chosen != "auto":
        return chosen
    return "minimize" if mode_of(spec["objective"]["metric"]) == "min" else "maximize"


def make_pruner(spec: dict) -> Any:
    """The study's pruner. Trials report epochs 1, 2, ... as steps, and Optuna's MedianPruner may prune at
    ``step == n_warmup_steps``: warmup_epochs + 1 leaves the first ``warmup_epochs`` epochs alone."""
    if spec["name"] == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=spec["startup_trials"],
                                           n_warmup_steps=spec["warmup_epochs"] + 1)
    if spec["name"] == "hyperband":
        return optuna.pruners.HyperbandPruner(reduction_factor=spec["reduction_factor"])
    return optuna.pruners.NopPruner()


def draw_seed(seed: int, variant: str, number: int) -> int:
    """The seed of a variant's draw for trial ``number``: a hash, so that no two variants share their draws."""
    digest = hashlib.sha256(f"{seed}/{variant}/{number}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def make_sampler(spec: dict, variant: str, number: int) -> Any:
    """The sampler of the next draw, seeded from the sweep seed, the variant and the trial number it will make."""
    seed = draw_seed(spec["seed"], variant, number)
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


def last_beat(trial: FrozenTrial) -> float:
    """When a running trial last showed life: its heartbeat, else its start."""
    start = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
    return float(trial.user_attrs.get(BEAT, start))


def counted_failures(study: Any, trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The failed trials that count toward the limit: not those retried (the retry stands for them), nor those
    before the last ``--retry-failed``."""
    retried = {t.user_attrs[RETRY_OF] for t in trials if RETRY_OF in t.user_attrs}
    since = int(study.user_attrs.get(FAILURES_FROM, 0))
    return [t for t in trials if t.state == TrialState.FAIL and t.number >= since and t.number not in retried]


def failure_limit(spec: dict) -> int:
    """A variant stops when more trials than this have failed: its trial budget (docs/sweeps.md)."""
    return int(spec["trials"])


def is_stopped(vs: VariantStudy, trials: list[FrozenTrial]) -> bool:
    """Whether the variant has stopped: more of its trials have failed than :func:`failure_limit` allows."""
    return len(counted_failures(vs.study, trials)) > failure_limit(vs.spec)


def failure_reason(trial: FrozenTrial) -> str:
    """Why a failed trial failed, as --status shows it."""
    if ERROR in trial.user_attrs:
        return str(trial.user_attrs[ERROR])
    return "no heartbeat (its worker was killed or lost)"


def queue_retry(vs: VariantStudy, trial: Any) -> None:
    """Queue one more trial with ``trial``'s params that trains in its run directory (a retry of it)."""
    vs.study.enqueue_trial(dict(trial.params), user_attrs={RETRY_OF: trial.number, RUN: trial_number(trial)})


def fail_stale(vs: VariantStudy, trials: list[FrozenTrial]) -> None:
    """Fail the running trials whose heartbeat is older than the grace, and queue one retry of each that is not
    itself a retry (the same params, in the same run directory)."""
    now = time.time()
    for t in trials:
        if t.state != TrialState.RUNNING or now - last_beat(t) <= vs.grace:
            continue
        told = vs.study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        if told.state != TrialState.FAIL or ERROR in told.user_attrs:
            continue  # its worker finished it (or failed it itself) a moment ago
        vs.log(f"   {vs.name} trial {t.number}: no heartbeat for {now - last_beat(t):.0f} s (its worker was killed "
               f"or lost): failed" + ("" if RETRY_OF in t.user_attrs else "; queued once more with its params"))
        if RETRY_OF not in t.user_attrs:
            queue_retry(vs, t)


def finished_twin(trials: list[FrozenTrial], trial: Any) -> FrozenTrial | None:
    """The first finished trial with exactly this trial's params, if any."""
    same = [t for t in trials if t.state in FINISHED and t.number != trial.number and t.params == trial.params]
    return min(same, key=lambda t: t.number) if same else None


def reuse(vs: VariantStudy, trial: Any, twin: FrozenTrial) -> None:
    """Finish a repeated draw with its finished twin's result (its epochs, and its value or its pruning) instead of
    training the same run again: Optuna's FAQ recommendation for repeated samples."""
    trial.set_user_attr(REPEAT_OF, twin.user_attrs.get(REPEAT_OF, twin.number))
    for step, value in sorted(twin.intermediate_values.items()):
        trial.report(value, step)
    if twin.state == TrialState.COMPLETE:
        vs.study.tell(trial, twin.value, skip_if_finished=True)
    else:
        vs.study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)


def claim(vs: VariantStudy) -> Any:
    """Under the study's claim lock: fail dead trials (and queue their retry), then ask for a trial when fewer than
    ``trials`` are finished or running; a draw that repeats a finished trial takes its result and the next is asked.
    Returns the trial (already beaten once), "done", "busy" (the rest are running) or "stopped" (too many failed)."""
    with vs.lock:
        trials = vs.study.get_trials(deepcopy=False)
        if any(t.state == TrialState.RUNNING for t in trials):
            fail_stale(vs, trials)
            trials = vs.study.get_trials(deepcopy=False)
        dists = distributions(vs.spec["params"])
        while True:
            n = Counter(t.state for t in trials)
            finished = n[TrialState.COMPLETE] + n[TrialState.PRUNED]
            if finished >= vs.spec["trials"]:
                return "done"
            if is_stopped(vs, trials):
                return "stopped"
            if finished + n[TrialState.RUNNING] >= vs.spec["trials"]:
                return "busy"
            vs.study.sampler = make_sampler(vs.spec["sampler"], vs.name, len(trials))
            trial = vs.study.ask(dists)
            # the first beat, before the lock is released: no other worker can find it stale before its own beats
            trial.set_user_attr(BEAT, time.time())
            twin = finished_twin(trials, trial)
            if twin is None:
                if RUN not in trial.user_attrs:
                    trial.set_user_attr(RUN, trial.number)
                return trial
            reuse(vs, trial, twin)
            vs.log(f"   {vs.name} trial {trial.number}: the params of trial {twin.number} again; its result reused")
            trials = vs.study.get_trials(deepcopy=False)


def wait_for_twin(vs: VariantStudy, trial: Any, poll: float) -> bool:
    """A claimed trial whose params an earlier trial is training right now waits for that result and reuses it
    (True). Returns False, to train it, when no such twin is alive (it finished failed, or its worker died)."""
    said = False
    while True:
        trials = vs.study.get_trials(deepcopy=False)
        twin = finished_twin(trials, trial)
        if twin is not None:
            reuse(vs, trial, twin)
            vs.log(f"   {vs.name} trial {trial.number}: the params of trial {twin.number}; its result reused")
            return True
        now = time.time()
        running = [t for t in trials if t.state == TrialState.RUNNING and t.number < trial.number
                   and t.params == trial.params and now - last_beat(t) <= vs.grace]
        if not running:
            return False
        if not said:
            vs.log(f"   {vs.name} trial {trial.number}: the params of trial {running[0].number}, which is running; "
                   "waiting for its result")
            said = True
        time.sleep(poll)


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


def trial_number(trial: Any) -> int:
    """The run directory number: a retried trial resumes in its original trial's directory."""
    return int(trial.user_attrs.get(RUN, trial.number))


class Heartbeat:
    """Beats for a running trial every ``interval`` seconds in a thread: the trial's BEAT user attribute."""

    def __init__(self, trial: Any, interval: float) -> None:
        self.trial, self.interval = trial, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name="medattn-heartbeat")

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.trial.set_user_attr(BEAT, time.time())
            except optuna.exceptions.UpdateFinishedTrialError:  # failed as stale by another worker
                return
            except Exception:  # a storage hiccup (NFS, a DB restart): beat again next time
                continue

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


class TrialLost(Exception):
    """Another worker failed this running trial as stale (its heartbeat was late): stop training it."""


def reporter(trial: Any, metric: str) -> Callable[[int, dict], None]:
    """The train job's epoch hook: report the epoch's metric, and stop the trial when the pruner says so (or when
    another worker has failed it meanwhile)."""

    def report(epoch: int, row: dict) -> None:
        value = float(row.get(metric, math.nan))
        try:
            if math.isfinite(value):
                trial.report(value, epoch)
            else:
                trial.set_user_attr(BEAT, time.time())  # any write says whether the trial is still ours
        except optuna.exceptions.UpdateFinishedTrialError:
            raise TrialLost(f"after epoch {epoch}") from None
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}")

    return report


def _finish(vs: VariantStudy, trial: Any, log: Callable[[str], None], value: float | None = None,
            state: TrialState | None = None, error: str | None = None) -> bool:
    """Tell the study how the trial ended; False when another worker had already failed it as stale (its retry
    trains it again)."""
    try:
        if error is not None:
            trial.set_user_attr(ERROR, error[:500])
        told = vs.study.tell(trial, value, state=state, skip_if_finished=True)
    except optuna.exceptions.UpdateFinishedTrialError:
        told = None
    wanted = state or TrialState.COMPLETE
    if told is not None and told.state == wanted:
        return True
    log(f"   trial {trial.number} was failed by another worker meanwhile (no heartbeat for {vs.grace:g} s: was this "
        "worker suspended?); its retry runs it")
    return False


def run_trial(exp: Experiment, vs: VariantStudy, trial: Any, output_dir: str | None, device: str | None,
              log: Callable[[str], None]) -> str:
    """Train the trial's run and tell the study; returns the trial's final state name. Any exception fails this
    trial with its reason; only an interrupt (Ctrl-C, SIGTERM as SystemExit) stops the worker, queueing a retry."""
    from ..runs.lock import locked_runs
    from ..runs.runner import execute_run
    from ..runs.state import Run
    from ..store.identity import check_run_dir

    number = trial_number(trial)
    label = f"sweep/{vs.name}/trial-{number:03d}"
    shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    log(f"== {exp.name}/{label} (trial {trial.number}): {shown}")
    trial.set_user_attr(WORKER, f"{socket.gethostname()}:{os.getpid()}")
    try:
        config = trial_config(exp, vs.variant, trial.params)
        run = Run(exp.name, label, config, RunDir(vs.folder / f"trial-{number:03d}"), exp.registry,
                  device or config["device"], None, log=log,
                  cache_dir=Path(output_dir or config["output_dir"]) / ".cache", choices=dict(vs.variant.choices),
                  epoch_hook=reporter(trial, vs.spec["objective"]["metric"]))
        check_run_dir(run)
        for row in run.dir.read_history():  # a retry resumes: report the epochs it already has
            run.epoch_hook(int(row["epoch"]), row)
        with locked_runs([run.dir]):  # one process per run directory, as medattn run holds it
            execute_run(exp, run, ["train"], log)
        value = objective(run.dir.read_history(), vs.spec)
    except optuna.TrialPruned as exc:
        if _finish(vs, trial, log, state=TrialState.PRUNED):
            log(f"   trial {trial.number}: {exc}")
        return "pruned"
    except TrialLost as exc:
        log(f"   trial {trial.number} stopped {exc}: another worker failed it meanwhile (no heartbeat for "
            f"{vs.grace:g} s: was this worker suspended, or its storage slow?); its retry runs it")
        return "lost"
    except Exception as exc:  # this trial's problem (a diverging lr, CUDA out of memory, a bug): record it, go on
        from ..errors import render_error

        reason = render_error(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, UserError):
            log(traceback.format_exc().rstrip())
        if _finish(vs, trial, log, state=TrialState.FAIL, error=" ".join(reason.split())):
            log(f"   trial {trial.number} failed: {reason}")
        return "failed"
    except BaseException:  # Ctrl-C, or SIGTERM raised as SystemExit: fail it, queue its retry, and stop
        if _finish(vs, trial, log, state=TrialState.FAIL, error="interrupted") and RETRY_OF not in trial.user_attrs:
            queue_retry(vs, trial)
        raise
    if _finish(vs, trial, log, value=value):
        log(f"   trial {trial.number}: {vs.spec['objective']['metric']} {value:.4f}")
    return "complete"


def work(exp: Experiment, output_dir: str | None = None, device: str | None = None, storage: str | None = None,
         log: Callable[[str], None] = print) -> int:
    """One worker: claim and run trials, variant after variant, until every study has its finished trials or has
    stopped at its failure limit (waiting, when only others' trials are left, for them to finish or go stale).
    Returns the trials run."""
    studies = open_studies(exp, output_dir, storage, log)
    interval = studies[0].spec["heartbeat"]["interval"]
    poll = min(1.0, interval)  # seconds between looks at others' trials
    ran, stopped = 0, set()
    while True:
        busy = False
        for vs in studies:
            trial = claim(vs)
            if trial == "busy":
                busy = True
            elif trial == "stopped" and vs.name not in stopped:
                stopped.add(vs.name)
                log(f"   {vs.name}: more than {failure_limit(vs.spec)} trials failed; this variant stops "
                    "(the reasons: medattn sweep FILE --status)")
            if not isinstance(trial, str):
                with Heartbeat(trial, interval):
                    if not wait_for_twin(vs, trial, poll):
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

    if threads and not reproducible.active():  # the mode's thread count stands: it decides the digits
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

    if workers == 1:
        work(exp, output_dir, device, storage, log)
        return []
    open_studies(exp, output_dir, storage, log)  # created once here, not raced by the workers
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


def retry_failed(exp: Experiment, output_dir: str | None = None, storage: str | None = None) -> list[str]:
    """``--retry-failed``: the failed trials so far no longer count toward any variant's failure limit (after their
    cause was fixed). Returns the variants that had stopped."""
    out = []
    for vs in open_studies(exp, output_dir, storage):
        with vs.lock:
            trials = vs.study.get_trials(deepcopy=False)
            if is_stopped(vs, trials):
                out.append(vs.name)
            vs.study.set_user_attr(FAILURES_FROM, len(trials))
    return out
