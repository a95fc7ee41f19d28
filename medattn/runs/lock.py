"""One process per run directory: an OS file lock on ``run.lock`` in the run (the filelock package), with the
holder's host, pid and command written beside it in ``run.lock.json``.

The operating system drops the lock when its process ends, however it ends (kill -9 included), so a lock left
by a dead process never blocks the next run; ``run.lock.json`` is only read to name the holder of a live lock.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from filelock import FileLock, Timeout

from ..errors import UserError
from ..files import atomic_write_text
from ..store.rundir import RunDir


def lock_run(rd: RunDir) -> FileLock:
    """Take the run directory's lock now (never waits) and name this process as its holder; a held lock is
    a UserError naming its holder."""
    lock = _acquire(rd)
    atomic_write_text(rd.lock_holder, json.dumps({
        "host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(sys.argv)}, indent=2))
    return lock


def _acquire(rd: RunDir) -> FileLock:
    rd.root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(rd.lock, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise UserError(locked_message(rd)) from None
    return lock


def locked_message(rd: RunDir) -> str:
    """One line: which process holds the run, and what to do."""
    try:
        holder = json.loads(rd.lock_holder.read_text())
        who = f"pid {holder['pid']} on host {holder['host']} (since {holder['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        who = "another process (its run.lock.json is missing or unreadable)"
    return (f"{rd.root}: another medattn process is working in this run directory: {who}. Wait for it to "
            f"finish or stop it, then run again (a stopped process releases the lock at once); to run both, "
            f"give this one another --output-dir")


def check_unlocked(rd: RunDir) -> None:
    """Fail now when another process holds the run (the lock is taken and released at once)."""
    if rd.lock.exists():
        _acquire(rd).release()


@contextmanager
def locked_runs(dirs: list[RunDir]) -> Iterator[None]:
    """Hold the locks of every run directory in ``dirs`` (all or none) until the block ends."""
    with ExitStack() as stack:
        for rd in dirs:
            stack.callback(lock_run(rd).release)
        yield
