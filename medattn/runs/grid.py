"""Grids: matrix variants in parallel over devices (``--devices cuda:0,cuda:1``) and slices of the matrix for
cluster job arrays (``--shard I/N``). Jobs done for the same config are skipped (:func:`pending_jobs`).

Each parallel variant runs in its own process (multiprocessing, spawn): one per device slot at a time;
a device may be named several times (``--devices cuda:0,cuda:0,cuda:1``) to run two variants on it.
The summary is written over every variant of the experiment (what is on disk), so shards that finish
at different times each leave an up-to-date table.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import UserError
from ..files import atomic_write_text
from ..store.manifest import config_sha


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
    from ..device import resolve_device

    slots = [d.strip() for d in text.split(",") if d.strip()]
    if not slots:
        raise UserError("--devices: give at least one device, e.g. cuda:0,cuda:1")
    for d in slots:
        resolve_device(d)
    return slots


def mark_done(run: Any, job: str) -> None:
    """Record that ``job`` finished for this run's current config (``jobs_done.json`` in the run directory)."""
    try:
        done = run.dir.read_jobs_done()
    except UserError:  # unreadable: pending_jobs treats it as nothing done, so start the record afresh
        done = {}
    done[job] = {"config_sha256": config_sha(run.config), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_text(run.dir.jobs_done, json.dumps(done, indent=2))


def pending_jobs(run: Any, jobs: list[str], force: list[str] = ()) -> list[str]:
    """The jobs of ``jobs`` to run: from the first one that is forced (``all``: every one) or not done for
    exactly this config, to the end (a job after one that runs again reads its new outputs)."""
    try:
        done = run.dir.read_jobs_done()
    except UserError:
        done = {}
    sha = config_sha(run.config)
    for i, name in enumerate(jobs):
        if name in force or "all" in force or done.get(name, {}).get("config_sha256") != sha:
            return list(jobs[i:])
    return []


def run_parallel(units: list[tuple], slots: list[str], worker: Callable[..., None],
                 args: tuple, log: Callable[[str], None]) -> list[tuple[str, int]]:
    """One thread per device slot; each starts one process per unit (variant, seed, ...) it takes from the
    queue, running ``worker(*args, device, *unit)`` (a module-level function, so spawn can import it)."""
    ctx = mp.get_context("spawn")
    work: queue.Queue = queue.Queue()
    for unit in units:
        work.put(unit)
    failed: list[tuple[str, int]] = []
    lock = threading.Lock()

    def slot_worker(device: str) -> None:
        while True:
            try:
                unit = work.get_nowait()
            except queue.Empty:
                return
            variant, seed = unit[:2]
            tag = variant if seed is None else f"{variant}/seed-{seed}"
            log(f"== {tag} -> {device}")
            proc = ctx.Process(target=worker, args=(*args, device, *unit), name=f"medattn-{tag}")
            proc.start()
            proc.join()
            if proc.exitcode != 0:
                with lock:
                    failed.append((tag, proc.exitcode))

    threads = [threading.Thread(target=slot_worker, args=(d,), daemon=True) for d in slots]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failed
