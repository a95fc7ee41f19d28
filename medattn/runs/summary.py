"""The experiment summary: every job contributes its tables (``Job.tables``); they are written beside the runs
as ``<table>.csv`` and together in ``summary.md``, and, with repeated seeds, aggregated across seeds into
``aggregate.csv`` / ``aggregate.md`` (mean, sd, 95% CI, n per variant and metric)."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ..files import atomic_write_text, format_table, write_csv
from ..evidence.metric_specs import metric_names
from .plan import job
from ..registry import Registry
from ..store.rundir import ExperimentDir
from ..store.views import ExperimentView

# columns shown when the summary is printed (every column is in the CSV)
SHOWN = {"summary": ("variant", "seed", "checkpoint", "n", *metric_names(shown=True))}


# tables that also get a Markdown file of their own
TITLES = {"aggregate": "mean, sd and 95% CI across seeds", "comparisons": "paired comparisons of the variants"}


def experiment_view(name: str, runs: list, log: Callable[[str], None]) -> ExperimentView:
    """The view of an experiment's runs (no tables yet)."""
    views = [r.view() for r in runs]
    root = runs[0].dir.root.parent if runs[0].seed is None else runs[0].dir.root.parent.parent
    return ExperimentView(name, ExperimentDir(root), views, {}, views[0].config, log)


def summarize(exp: ExperimentView, registry: Registry) -> ExperimentView:
    """Collect every job's tables, aggregate repeated seeds, write the files; the view with its tables."""
    tables: dict[str, list[dict]] = {}
    for name in registry.names("job"):
        for table, rows in job(registry, name).tables(exp).items():
            tables.setdefault(table, []).extend(rows)
    if any(v.seed is not None for v in exp.runs):
        rows = aggregate_tables(tables)
        if rows:
            tables["aggregate"] = rows
    for table, rows in tables.items():
        if rows:
            write_csv(exp.dir.table(table), rows)  # written whole: shards finishing together never interleave
    if any(tables.values()):
        text = "\n\n".join(f"## {table}\n\n{format_table(rows)}" for table, rows in tables.items() if rows)
        atomic_write_text(exp.dir.summary, f"# {exp.name}: summary\n\n{text}\n")
        for table, rows in tables.items():
            if rows and table in TITLES:
                atomic_write_text(exp.dir.table(table, "md"), f"# {exp.name}: {TITLES[table]}\n\n{format_table(rows)}\n")
    return dataclasses.replace(exp, tables=tables)


def aggregate_tables(tables: dict[str, list[dict]]) -> list[dict]:
    """Per table, variant, key columns and metric: mean, sd, 95% CI across seeds and n."""
    from ..evidence.stats import aggregate

    out = []
    for table, rows in tables.items():
        seeded = [r for r in rows if "seed" in r]
        if not seeded:
            continue
        keys = [k for k in dict.fromkeys(k for r in seeded for k in r)
                if k != "seed" and all(isinstance(r.get(k), str) for r in seeded)]
        out.extend({"table": table, **row} for row in aggregate(seeded, by=tuple(keys)))
    return out


def printed(exp: ExperimentView) -> str:
    """The tables as shown on the console after a run: the summary (with repeated seeds, the means across
    seeds of its main metrics instead of every seed's row), then every other table."""
    parts = []
    seeded = "aggregate" in exp.tables
    ordered = sorted(exp.tables.items(), key=lambda item: (item[0] != "summary", item[0] != "aggregate"))
    for table, rows in ordered:
        if not rows or (seeded and any("seed" in r for r in rows)):
            continue
        if table == "aggregate":
            rows = [r for r in rows if r.get("table") == "summary" and r.get("metric") in SHOWN["summary"]]
            parts.append("mean across seeds:\n" + format_table(rows))
            continue
        shown = format_table(rows, SHOWN.get(table))
        parts.append(shown if table == "summary" else f"{table}:\n{shown}")
    return "\n".join(parts) or "(no test metrics yet: run the test job)"
