"""Grids: matrix variants in parallel over devices (``--devices cuda:0,cuda:1``) and slices of the matrix for
cluster job arrays (``--shard I/N``). Variants whose jobs are all done (same config) are skipped.

Each parallel variant runs in its own process (multiprocessing, spawn): one per device slot at a time;
a device may be named several times (``--devices cuda:0,cuda:0,cuda:1``) to run two variants on it.
The summary is written over every variant of the experiment (what is on disk), so shards that finish
at different times each leave an up-to-date table.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import queue
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import UserError

DONE_FILE = "jobs_done.json"


def parse_shard(text: str) -> tuple[int, int]:
    """``I/N`` -> (I, N) with 0 <= I < N (I is 0-based, like ``$SLURM_ARRAY_TASK_ID`` with ``--array=0-(N-1)``)."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r}: expected I/N with integers, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise UserError(f"--shard {text!r}: I must be in 0..N-1 (0-based) and N >= 1")
    return i, n


def shard_of(items: list, i: int, n: int) -> list:
    """The I-th of N interleaved slices: every item lands in exactly one slice, sizes differ by at most one."""
    return items[i::n]


def parse_devices(text: str) -> list[str]:
    """``cuda:0,cuda:1`` -> device slots (each checked; repeats allowed)."""
    from .device import resolve_device

    slots = [d.strip() for d in text.split(",") if d.strip()]
    if not slots:
        raise UserError("--devices: give at least one device, e.g. cuda:0,cuda:1")
    for d in slots:
        resolve_device(d)
    return slots


def _config_sha(run: Any) -> str:
    return hashlib.sha256(json.dumps(run.config, sort_keys=True, default=str).encode()).hexdigest()


def mark_done(run: Any, job: str) -> None:
    """Record that ``job`` finished for this run's current config (``jobs_done.json`` in the run directory)."""
    from .runner import atomic_write_text

    file = run.dir / DONE_FILE
    done = json.loads(file.read_text()) if file.is_file() else {}
    done[job] = {"config_sha256": _config_sha(run), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_text(file, json.dumps(done, indent=2))


def is_complete(run: Any, jobs: list[str]) -> bool:
    """True when every job in ``jobs`` finished for exactly this config."""
    file = run.dir / DONE_FILE
    if not file.is_file():
        return False
    try:
        done = json.loads(file.read_text())
    except ValueError:
        return False
    sha = _config_sha(run)
    return all(done.get(j, {}).get("config_sha256") == sha for j in jobs)


def run_parallel(todo: list, slots: list[str], file: Path, overrides: list[str], output_dir: str | None,
              jobs: list[str] | None, log: Callable[[str], None]) -> list[tuple[str, int]]:
    """One worker thread per device slot; each starts one process per variant it takes from the queue."""
    ctx = mp.get_context("spawn")
    work: queue.Queue = queue.Queue()
    for run, _ in todo:
        work.put(run.variant)
    failed: list[tuple[str, int]] = []
    lock = threading.Lock()

    def slot_worker(device: str) -> None:
        while True:
            try:
                variant = work.get_nowait()
            except queue.Empty:
                return
            log(f"== {variant} -> {device}")
            proc = ctx.Process(target=child, args=(str(file), list(overrides), output_dir, jobs, device, variant),
                               name=f"medattn-{variant}")
            proc.start()
            proc.join()
            if proc.exitcode != 0:
                with lock:
                    failed.append((variant, proc.exitcode))

    threads = [threading.Thread(target=slot_worker, args=(d,), daemon=True) for d in slots]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failed


def child(file: str, overrides: list[str], output_dir: str | None, jobs: list[str] | None, device: str,
          variant: str) -> None:
    """Entry point of a variant's process: load the experiment, run that one variant on ``device``."""
    from .cli import EXIT_BAD_INPUT, render_error
    from .config import load_experiment
    from .runner import check_run_dir, execute_run, plan

    def log(msg: str) -> None:
        print(f"[{variant}@{device}] {msg}", flush=True)

    try:
        exp = load_experiment(Path(file), overrides)
        (run, run_jobs), = [(r, j) for r, j in plan(exp, output_dir, jobs, device) if r.variant == variant]
        run.log = log
        check_run_dir(run)
        log(f"{run.experiment}/{run.variant} on {run.device}: {', '.join(run_jobs)}")
        execute_run(exp, run, run_jobs, log)
    except (UserError, OSError) as exc:
        print(f"[{variant}] {render_error(exc)}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
