"""What a job is: one step of a run that declares what it reads and writes.

The runner checks, before any work, that every artifact a job reads is on disk or written by an earlier job of
the same command, and names the job that writes a missing one. After the runs, each job contributes its own
tables to the experiment summary (``tables``) and may write experiment-wide files (``finish``), so the runner
names no job, metric file or figure kind.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from ..store.rundir import RunDir
from ..store.views import ExperimentView, RunView


class Job:
    """Base class of the built-in jobs; a job component's factory returns an instance."""

    name: ClassVar[str] = ""
    reads: ClassVar[tuple[str, ...]] = ()  # artifacts needed (e.g. "checkpoint", "test_metrics")
    writes: ClassVar[tuple[str, ...]] = ()  # artifacts produced
    distributed: ClassVar[bool] = False  # under torchrun: run on every rank (True) or on rank 0 only

    def __init__(self, registry: Any = None) -> None:
        self.registry = registry  # the registry the job was found in (to build components)

    def check(self, config: dict[str, Any]) -> list[str | tuple[tuple, str]]:
        """Problems with this job's config that the schema cannot see (e.g. a list it needs but that has no
        default), each ``dotted.path: message`` or a (config path, message) pair, which is reported with the
        file and line of that path; checked at planning (``run`` and ``validate``), before any work."""
        return []

    def check_model(self, config: dict[str, Any], model: Any) -> list[tuple[tuple, str]]:
        """Problems only the built model shows (e.g. a layer name that is not in it), each (config path, message);
        ``medattn validate`` reports them with the file and line of that path."""
        return []

    def check_data(self, config: dict[str, Any], bundle: Any, splits: dict[str, Any]) -> list[tuple[tuple, str]]:
        """Problems only the built data set shows (a split that is not there, masks a loss needs), each (config
        path, message); ``medattn validate`` reports them with the file and line of that path."""
        return []

    def reads_other_runs(self, config: dict[str, Any]) -> str | None:
        """Why, with this config, the job reads what other runs of the experiment wrote (e.g. every variant's
        test predictions), else None. The jobs before it must then have finished for every run first, so a
        grid runs it in a second phase (``--devices``) or refuses to mix it with them (``--shard``)."""
        return None

    def needs(self, run: RunDir, config: dict[str, Any]) -> dict[str, list[Path]]:
        """{artifact: files that must exist} for this run and config (only artifacts of ``reads``)."""
        return {}

    def run(self, run: Any) -> None:
        """Do the job for one run (``run``: the runner's Run)."""
        raise NotImplementedError

    def rows(self, run: RunView) -> dict[str, list[dict]]:
        """Rows of one run for the experiment summary: {table name: rows}; ``tables`` adds the run's variant
        (and seed) in front of each row."""
        return {}

    def tables(self, exp: ExperimentView) -> dict[str, list[dict]]:
        """Rows this job adds to the experiment summary: {table name: rows} (written as <name>.csv)."""
        out: dict[str, list[dict]] = {}
        for view in exp.runs:
            head = {"variant": view.variant, **({"seed": view.seed} if view.seed is not None else {})}
            for table, rows in self.rows(view).items():
                out.setdefault(table, []).extend({**head, **row} for row in rows)
        return out

    def finish(self, exp: ExperimentView) -> list[Path]:
        """Experiment-wide files written after the summary tables (e.g. figures across variants)."""
        return []
