"""Experiment-scope outputs across the variants of a matrix: LaTeX results tables, a comparison figure of the
variants, and a report (Markdown and HTML) gathering the summary's tables and every figure."""
from __future__ import annotations

import html
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from medattn.api import ExperimentView, atomic_write_text, format_table, save_figure

METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
QUALITY_SHOWN = ("deletion_auc", "insertion_auc", "pointing_game", "energy_in_mask", "randomisation_spearman")


def _columns(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(k for r in rows for k in r))


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v if v is not None else "")


def latex(rows: list[dict], columns: list[str]) -> str:
    """A booktabs tabular of the rows (numbers to 4 decimals, best of each numeric column in bold)."""
    esc = lambda s: str(s).replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("%", r"\%").replace(  # noqa: E731
        "&", r"\&")
    best = {c: max(r[c] for r in rows if isinstance(r.get(c), float)) for c in columns
            if any(isinstance(r.get(c), float) for r in rows)}
    lines = [r"\begin{tabular}{" + "l" * 2 + "r" * (len(columns) - 2) + "}", r"\toprule",
             " & ".join(esc(c) for c in columns) + r" \\", r"\midrule"]
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c)
            cell = esc(_fmt(v))
            if isinstance(v, float) and c in best and v == best[c] and len(rows) > 1:
                cell = r"\textbf{" + cell + "}"
            cells.append(cell)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def results_table(params: dict, view: ExperimentView) -> list:
    """tables/results.tex and tables/quality.tex (booktabs) of the summary's test and quality rows; the CSV and
    Markdown forms are the summary's own files beside the runs."""
    out = []
    for name, rows in (("results", view.tables.get("summary") or []), ("quality", view.tables.get("quality") or [])):
        if rows:
            path = view.dir.file("tables", f"{name}.tex")
            atomic_write_text(path, latex(rows, [c for c in _columns(rows) if c != "threshold"]))
            out.append(path)
    return out


def _spread(view: ExperimentView, table: str, match: dict, metric: str, rows: list[dict]) -> tuple:
    """(mean, (low, high) or None, per-seed values) of one bar: with repeated seeds the mean across seeds,
    its 95% CI from the aggregate table, and the seeds' own values."""
    values = [float(r[metric]) for r in rows if r.get(metric) not in (None, "")]
    mean = float(np.nanmean(values)) if values else np.nan
    for a in view.tables.get("aggregate") or []:
        if a.get("table") == table and a.get("metric") == metric and all(a.get(k) == v for k, v in match.items()):
            low, high = float(a["ci_low"]), float(a["ci_high"])
            return mean, ((low, high) if np.isfinite(low) and np.isfinite(high) else None), values
    return mean, None, values


def _bars(ax, view: ExperimentView, table: str, x: np.ndarray, keys: list[str], rows: list[dict], match: dict,
          width: float, **style) -> None:
    """Bars of ``keys`` at ``x``; with repeated seeds, a 95% CI error bar and a dot per seed."""
    stats = [_spread(view, table, match, k, rows) for k in keys]
    ax.bar(x, [m for m, _, _ in stats], width, **style)
    for xi, (mean, ci, values) in zip(x, stats):
        if len(values) > 1:
            if ci is not None:
                ax.errorbar(xi, mean, yerr=[[mean - ci[0]], [ci[1] - mean]], color="k", capsize=2, lw=0.8)
            ax.scatter(np.full(len(values), xi), values, s=7, color="k", zorder=3, alpha=0.7)


def variants(params: dict, view: ExperimentView) -> list:
    """Grouped bars: test metrics per variant (one panel per checkpoint) and the main quality scores; with
    repeated seeds each bar is the mean across seeds, with its 95% CI and a dot per seed."""
    rows = [r for r in view.tables.get("summary") or [] if r]
    q = view.tables.get("quality") or []
    if not rows and not q:
        return []
    ckpts = list(dict.fromkeys(r["checkpoint"] for r in rows))
    qkeys = [k for k in QUALITY_SHOWN if any(k in r for r in q)]
    npanel = len(ckpts) + (1 if qkeys else 0)
    fig, axes = plt.subplots(1, npanel, figsize=(5.2 * npanel, 4.2), squeeze=False)
    names = list(dict.fromkeys(r.variant for r in view.runs))
    colours = plt.get_cmap("tab10")
    for ax, ckpt in zip(axes[0], ckpts):
        metrics = [m for m in METRICS if any(m in r for r in rows)]
        width = 0.8 / max(1, len(names))
        for j, name in enumerate(names):
            mine = [r for r in rows if r["variant"] == name and r["checkpoint"] == ckpt]
            _bars(ax, view, "summary", np.arange(len(metrics)) + j * width - 0.4 + width / 2, metrics, mine,
                  {"variant": name, "checkpoint": ckpt}, width, label=name, color=colours(j % 10))
        ax.set_xticks(np.arange(len(metrics)), metrics)
        ax.set(ylim=(0, 1.05), ylabel="score", title=f"test metrics ({ckpt})")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, title="variant", title_fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12),
                  ncol=min(4, len(names)))
    if qkeys:
        _quality_panel(axes[0, -1], view, q, qkeys, names, colours)
    fig.suptitle(f"{view.name}: variants compared", fontsize=11)
    fig.tight_layout()
    return [save_figure(fig, view, "variants")]


def _quality_panel(ax, view: ExperimentView, q: list[dict], qkeys: list[str], names: list[str], colours) -> None:
    pairs = list(dict.fromkeys((r["method"], r["variant"]) for r in q))
    methods = list(dict.fromkeys(m for m, _ in pairs))
    width = 0.8 / max(1, len(pairs))
    hatches = [None, "//", "..", "xx", "\\\\", "oo"]
    for j, (method, name) in enumerate(pairs):  # colour: method; hatch: variant
        mine = [r for r in q if r["method"] == method and r["variant"] == name]
        _bars(ax, view, "quality", np.arange(len(qkeys)) + j * width - 0.4 + width / 2, qkeys, mine,
              {"variant": name, "method": method}, width, label=f"{method} / {name}",
              color=colours(methods.index(method) % 10), edgecolor="k", linewidth=0.3,
              hatch=hatches[names.index(name) % len(hatches)] if name in names else None)
    ax.set_xticks(np.arange(len(qkeys)), [k.replace("_", "\n") for k in qkeys], fontsize=8)
    low = np.nanmin([float(r.get(k, 0) or 0) for r in q for k in qkeys])
    ax.set(ylim=(min(0, low), 1.05), ylabel="score", title="explanation quality (deletion: lower is better)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, title="method / variant", title_fontsize=7, ncol=min(3, len(pairs)),
              loc="upper center", bbox_to_anchor=(0.5, -0.25))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*") if p.suffix in (".png", ".svg", ".pdf")) if folder.is_dir() else []


def report(params: dict, view: ExperimentView) -> list:
    """report.md and report.html: the results and quality tables, experiment figures, then each run's figures."""
    sections = _sections(view)
    if not any(text or figs for _, text, figs in sections):
        return []
    root = view.dir.root
    md = [f"# {view.name}: report\n"]
    body = [f"<h1>{html.escape(view.name)}: report</h1>"]
    for heading, text, figs in sections:
        if not text and not figs:
            continue
        md.append(f"## {heading}\n\n{text}")
        body.append(f"<h2>{html.escape(heading)}</h2>")
        if text:
            body.append(_md_table_html(text))
        for fig in figs:
            rel = fig.relative_to(root).as_posix()
            md.append(f"![{fig.stem}]({rel})\n")
            body.append(f'<figure><img src="{html.escape(rel)}" alt="{html.escape(fig.stem)}">'
                        f"<figcaption>{html.escape(fig.stem)}</figcaption></figure>")
    paths = [view.dir.file("report.md"), view.dir.file("report.html")]
    atomic_write_text(paths[0], "\n".join(md) + "\n")
    atomic_write_text(paths[1], HTML.format(title=html.escape(view.name), body="\n".join(body)))
    return paths


def _sections(view: ExperimentView) -> list[tuple[str, str, list[Path]]]:
    """(heading, Markdown text, figures) of the report, in order."""
    rows = [r for r in view.tables.get("summary") or [] if r]
    quality = view.tables.get("quality") or []
    sections: list[tuple[str, str, list[Path]]] = []
    if rows:
        sections.append(("Test results", format_table(rows, tuple(c for c in _columns(rows) if "." not in c)), []))
    if quality:
        sections.append(("Explanation quality", format_table(quality) + QUALITY_HELP, []))
    sections.append(("Across variants", "", _images(view.dir.figures)))
    for run in view.runs:
        figs = _images(run.dir.figures)
        if figs:
            sections.append((f"Variant {run.label}", "", figs))
    return sections


QUALITY_HELP = ("\nDeletion AUC: lower is better; insertion AUC: higher is better; infidelity and sensitivity_max: "
                "lower is better; pointing_game, energy_in_mask, iou_top: higher is better (mask_area is chance); "
                "randomisation_spearman: lower is better (a value above the threshold flags a method that barely "
                "depends on the model's weights).\n")

HTML = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:auto}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}img{{max-width:100%}}figure{{margin:1em 0}}</style>
</head><body>
{body}
</body></html>
"""


def _md_table_html(text: str) -> str:
    """The Markdown tables of a section as HTML (the first line of each is the header); other lines as paragraphs."""
    out, table = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            if not line.startswith("|---"):
                table.append([html.escape(c.strip()) for c in line.strip("|").split("|")])
            continue
        if table:
            head, *rest = table
            out.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr>" +
                       "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rest) + "</table>")
            table = []
        if line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    return "\n".join(out)
