"""Experiment-scope outputs across the variants of a matrix: LaTeX results tables, a comparison figure of the
variants, and a report (Markdown and HTML) gathering the summary's tables and every figure."""
from __future__ import annotations

import html
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from medattn.api import (
    ExperimentView,
    atomic_write_text,
    format_table,
    metric_names,
    metric_spec,
    save_figure,
)


def _columns(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(k for r in rows for k in r))


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v if v is not None else "")


def latex(rows: list[dict], columns: list[str]) -> str:
    """A booktabs tabular of the rows (numbers to 4 decimals; in bold the best of each column of a metric with a
    direction: the lowest where lower is better, the highest otherwise)."""
    esc = lambda s: str(s).replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("%", r"\%").replace(  # noqa: E731
        "&", r"\&")
    best = {}
    for c in columns:
        spec = metric_spec(c, None)
        if spec is not None and spec.direction != "none" and any(isinstance(r.get(c), float) for r in rows):
            best[c] = (min if spec.direction == "min" else max)(r[c] for r in rows if isinstance(r.get(c), float))
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
    """(mean, (low, high) or None, per-seed values) of one dot: with repeated seeds the mean across seeds,
    its 95% CI from the aggregate table, and the seeds' own values."""
    values = [float(r[metric]) for r in rows if r.get(metric) not in (None, "")]
    mean = float(np.nanmean(values)) if values else np.nan
    for a in view.tables.get("aggregate") or []:
        if a.get("table") == table and a.get("metric") == metric and all(a.get(k) == v for k, v in match.items()):
            low, high = float(a["ci_low"]), float(a["ci_high"])
            return mean, ((low, high) if np.isfinite(low) and np.isfinite(high) else None), values
    return mean, None, values


def _present(rows: list[dict], names: tuple[str, ...]) -> list[str]:
    return [m for m in names if any(r.get(m) not in (None, "") for r in rows)]


def variants(params: dict, view: ExperimentView) -> list:
    """Dot plots of the variants: one panel per test metric and per explanation-quality score (see
    :func:`variants_figure`)."""
    fig = variants_figure(view)
    return [] if fig is None else [save_figure(fig, view, "variants")]


def variants_figure(view: ExperimentView):
    """The ``variants`` figure, or None with nothing to draw: a row per variant in every panel, a dot per
    checkpoint (test metrics) or per method (quality scores); with repeated seeds the dot is the mean across
    seeds, the line its 95% CI and the small circles the seeds. Each panel says which way is better, from the
    metric's declaration; a dashed line marks a score's chance level. The legends sit outside the panels."""
    rows = [r for r in view.tables.get("summary") or [] if r]
    q = view.tables.get("quality") or []
    panels = [("summary", m, "checkpoint") for m in _present(rows, metric_names(shown=True))]
    panels += [("quality", m, "method") for m in _present(q, metric_names(source="quality", comparable=True))]
    if not panels:
        return None
    names = list(dict.fromkeys(r.variant for r in view.runs))
    series = {"checkpoint": list(dict.fromkeys(r["checkpoint"] for r in rows)),
              "method": list(dict.fromkeys(r["method"] for r in q))}
    ncols = min(4, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols + 1.6, (0.28 * len(names) + 1.1) * nrows + 0.5),
                             sharey=True, squeeze=False, layout="constrained")
    for ax, (table, metric, key) in zip(axes.flat, panels):
        _dot_panel(ax, view, table, metric, key, series[key], names, rows if table == "summary" else q)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    axes[0, 0].set_yticks(range(len(names)), names)
    axes[0, 0].set_ylim(len(names) - 0.5, -0.5)  # the first variant on top
    for key, title in (("checkpoint", "checkpoint (test metrics)"), ("method", "method (quality)")):
        if any(k == key for _, _, k in panels) and len(series[key]) > (1 if key == "checkpoint" else 0):
            where = "outside right upper" if key == "checkpoint" else "outside right lower"
            fig.legend(handles=[_handle(key, j, s) for j, s in enumerate(series[key])], title=title, loc=where,
                       fontsize=8, title_fontsize=8, frameon=False)
    seeded = any(r.seed is not None for r in view.runs)
    notes = ([f"checkpoint {series['checkpoint'][0]}"] if len(series["checkpoint"]) == 1 else []) + (
        ["mean across seeds, 95% CI, o = a seed"] if seeded else [])
    fig.suptitle(f"{view.name}: variants compared" + (f" ({'; '.join(notes)})" if notes else ""), fontsize=11)
    return fig


def _style(key: str, j: int) -> dict:
    """Colour and marker of series j: checkpoints in greys (then browns), methods in tab10 colours."""
    if key == "checkpoint":
        return {"color": ("#222222", "#8c8c8c", "#8c564b", "#c49c94")[j % 4], "marker": "osDv"[j % 4]}
    return {"color": plt.get_cmap("tab10")(j % 10), "marker": "os^Dv"[j % 5]}


def _handle(key: str, j: int, label: str):
    from matplotlib.lines import Line2D

    return Line2D([], [], linestyle="", markersize=6, label=label, **_style(key, j))


def _zoom(ax, drawn: list[float], bounds: tuple) -> None:
    """x limits around what is drawn (dots need no zero baseline), never past the metric's declared range."""
    finite = [v for v in drawn if np.isfinite(v)]
    if not finite:
        return
    low, high = min(finite), max(finite)
    pad = max(0.08 * (high - low), 0.02 * max(abs(high), abs(low), 1e-3))
    low, high = low - pad, high + pad
    if bounds[0] is not None:
        low = max(low, bounds[0] - pad / 4)
    if bounds[1] is not None:
        high = min(high, bounds[1] + pad / 4)
    ax.set_xlim(low, high)


def _dot_panel(ax, view: ExperimentView, table: str, metric: str, key: str, series: list[str], names: list[str],
               rows: list[dict]) -> None:
    """One metric: for each variant (a row) and series (a checkpoint or method), the mean, CI and seeds."""
    spec = metric_spec(metric)
    step = min(0.7 / max(1, len(series)), 0.22)
    drawn: list[float] = []
    for i, name in enumerate(names):
        for j, s in enumerate(series):
            mine = [r for r in rows if r.get("variant") == name and r.get(key) == s]
            mean, ci, values = _spread(view, table, {"variant": name, key: s}, metric, mine)
            if not values:
                continue
            y = i + (j - (len(series) - 1) / 2) * step
            style = _style(key, j)
            drawn += values + (list(ci) if ci is not None else [])
            if ci is not None:
                ax.plot(ci, [y, y], color=style["color"], lw=1.2)
            if len(values) > 1:
                ax.plot(values, [y] * len(values), linestyle="", marker="o", markersize=3, mfc="none",
                        color="0.35", mew=0.6)
            ax.plot([mean], [y], linestyle="", markersize=6, **style)
    if spec.chance:
        chance = [float(r[spec.chance]) for r in rows if r.get(spec.chance) not in (None, "")]
        if chance:
            drawn.append(float(np.mean(chance)))
            ax.axvline(drawn[-1], color="0.4", linestyle="--", lw=0.9)
    _zoom(ax, drawn, spec.range)
    better = {"max": "higher is better", "min": "lower is better"}.get(spec.direction, "")
    note = "; dashed: chance" if spec.chance else ""
    ax.set_title(f"{metric}\n({better}{note})" if better else metric, fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(axis="x", alpha=0.3)


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
        sections.append(("Explanation quality", format_table(quality) + _quality_help(), []))
    tested = any(run.dir.tested_checkpoints() for run in view.runs)  # a card needs a tested model
    if tested:
        sections.append(("Model card", model_card(view), []))
    sections.append(("Across variants", "", _images(view.dir.figures)))
    for run in view.runs:
        figs = _images(run.dir.figures)
        if figs:
            sections.append((f"Variant {run.label}", "", figs))
    if tested:
        sections.append(("Appendix: reporting checklist (CLAIM, TRIPOD+AI)", checklist(view), []))
    return sections


def _ci(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    if not isinstance(value, (int, float)):
        return ""
    ci = (metrics.get("ci") or {}).get(key)
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _tested(run) -> tuple[str, dict]:
    """(checkpoint, test metrics) of a run's first tested checkpoint of test.checkpoints."""
    wanted = list((run.config.get("test") or {}).get("checkpoints") or [])
    have = run.dir.tested_checkpoints()
    ckpt = next((c for c in wanted if c in have), have[0] if have else "")
    return ckpt, (run.dir.read_test_metrics(ckpt) or {}) if ckpt else {}


def model_card(view: ExperimentView) -> str:
    """The model card (Mitchell et al. 2019) of the experiment: intended use and caveats from ``card:``, the rest
    from the runs (data, splits, metrics with CIs, calibration, conformal sets, subgroups, explanation quality)."""
    card = view.config.get("card") or {}
    blank = "_(not given: add it under `card:` in the experiment file)_"
    lines = [f"**Intended use.** {card.get('intended_use') or blank}\n",
             f"**Caveats.** {card.get('caveats') or blank}\n"]
    if card.get("authors") or card.get("contact"):
        lines.append(f"**Authors.** {card.get('authors') or ''} {card.get('contact') or ''}\n")
    first = view.runs[0]
    manifest = first.dir.read_manifest() if first.dir.manifest.is_file() else {}
    data = manifest.get("data") or {}
    dataset = first.config.get("dataset") or {}
    lines.append(f"**Data.** {dataset.get('name')} at {dataset.get('image_size')} px; classes "
                 f"{', '.join(data.get('classes') or [])}; images per split "
                 f"{', '.join(f'{k} {v}' for k, v in (data.get('sizes') or {}).items())}; fingerprint "
                 f"`{data.get('fingerprint')}`.\n")
    rows = []
    for run in view.runs:
        ckpt, m = _tested(run)
        if not m:
            continue
        cal = m.get("calibration") or {}
        conf = m.get("conformal") or {}
        rows.append({"variant": run.label, "checkpoint": ckpt, "roc_auc [95% CI]": _ci(m, "roc_auc"),
                     "sensitivity": _ci(m, "recall"), "specificity": _ci(m, "specificity"),
                     "calibration": cal.get("method", "none"), "ece15": _ci(m, "ece15"),
                     "conformal coverage": _ci(m, "coverage") if conf else "",
                     "worst subgroup": "; ".join(f"{w['column']}={w['group']} ({w['metric']} {w['value']:.3f})"
                                                 for w in (m.get("subgroups") or {}).get("worst", [])
                                                 if w["metric"] == "roc_auc") or ""})
    if rows:
        lines.append("**Metrics** (test split, percentile bootstrap 95% CIs):\n\n" + format_table(rows))
    quality = view.tables.get("quality") or []
    if quality:
        lines.append(f"**Explanation quality.** {len(quality)} row(s) in the table above (methods x variants).\n")
    return "\n".join(lines) + "\n"


# the CLAIM (2024) and TRIPOD+AI (2024) items a run can fill; the others are listed for the authors
CHECKLIST = (
    ("Data partitions and patient disjointness", "partitioning"),
    ("Preprocessing (size, channels, normalisation)", "preprocessing"),
    ("Model (backbone, attention, head)", "model"),
    ("Initialisation of the weights", "initialisation"),
    ("Training (epochs, optimiser, augmentation, seed)", "training"),
    ("Model selection (checkpoint, decision threshold)", "selection"),
    ("Performance metrics with confidence intervals", "metrics"),
    ("Calibration", "calibration"),
    ("Robustness on a shifted split", "robustness"),
    ("Performance by subgroup", "subgroups"),
    ("Explainability", "explainability"),
    ("Code and configuration (versions, hashes)", "code"),
    ("Intended use and clinical setting", "intended_use"),
    ("Study design and participants (eligibility, recruitment, dates)", None),
    ("Reference standard and its readers", None),
    ("Sample size justification", None),
    ("Handling of missing data and poor-quality inputs", None),
    ("Ethics approval, consent, funding and conflicts of interest", None),
)


def checklist(view: ExperimentView) -> str:
    """The checklist appendix: each item with what the run says, or a blank for the authors."""
    run = view.runs[0]
    config = run.config
    manifest = run.dir.read_manifest() if run.dir.manifest.is_file() else {}
    ckpt, m = _tested(run)
    test = config.get("test") or {}
    train = config.get("train") or {}
    model = config.get("model") or {}
    dataset = config.get("dataset") or {}
    backbone = model.get("backbone") or {}
    sizes = (manifest.get("data") or {}).get("sizes") or {}
    filled = {
        "partitioning": f"splits {', '.join(f'{k} {v}' for k, v in sizes.items())}; split by patient group where "
                        "the data set gives one (splits.json)",
        "preprocessing": f"{dataset.get('image_size')} px, normalisation {dataset.get('normalize', 'backbone')}",
        "model": f"{backbone.get('name')} + {(model.get('attention') or {}).get('name')} "
                 f"({(model.get('head') or {}).get('name', 'default head')})",
        "initialisation": "pretrained weights" if (backbone.get("params") or {}).get("pretrained") else
        "random initialisation (from scratch)",
        "training": f"{train.get('epochs')} epochs, {(train.get('optimizer') or {}).get('name')} lr "
                    f"{(train.get('optimizer') or {}).get('lr')}, augment {train.get('augment')}, seed "
                    f"{config.get('seed')}",
        "selection": f"checkpoint {ckpt}; threshold {m.get('threshold', '')} "
                     f"({(m.get('operating_point') or {}).get('source', '')})",
        "metrics": f"ROC AUC {_ci(m, 'roc_auc')}; accuracy {_ci(m, 'accuracy')} "
                   f"({(m.get('ci') or {}).get('resamples', '')} bootstrap resamples)" if m else "",
        "calibration": f"{test.get('calibration', 'none')}; ECE (15 bins) {_ci(m, 'ece15')}" if "ece15" in m else "",
        "robustness": ", ".join(f"{k}: ROC AUC {v.get('roc_auc', float('nan')):.3f}"
                                for k, v in (m.get("splits") or {}).items()),
        "subgroups": ", ".join(test.get("subgroups") or []) and f"by {', '.join(test['subgroups'])} "
                     "(metrics/subgroups_<checkpoint>.csv)",
        "explainability": ", ".join(x.get("name", "") for x in (config.get("explain") or {}).get("methods") or [])
        if "explain" in (config.get("jobs") or []) else "",
        "intended_use": (config.get("card") or {}).get("intended_use") or "",
        "code": f"medattn {(manifest.get('versions') or {}).get('medattn', '')}, git {manifest.get('git_sha')}, "
                f"config sha256 {str(manifest.get('config_sha256', ''))[:16]}",
    }
    rows = [{"item": item, "where this run reports it": (filled.get(key) or "") if key else "",
             "status": ("filled by the run" if key and filled.get(key) else "blank: for the authors")}
            for item, key in CHECKLIST]
    return format_table(rows) + "\nItems marked blank need the authors' own text (CLAIM 2024, TRIPOD+AI 2024).\n"


def _quality_help() -> str:
    """Which way each quality score is better, from the metrics' declarations."""
    parts = []
    for name in metric_names(source="quality"):
        spec = metric_spec(name)
        way = {"max": "higher is better", "min": "lower is better"}.get(spec.direction, "")
        parts.append(f"{name}: {way or spec.description}")
    return "\nWhich way is better: " + "; ".join(parts) + ".\n"


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
        if line.strip():  # **bold**, _italics_ and `code` of the model card's paragraphs
            text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(line))
            text = re.sub(r"(?<!\w)_(.+?)_(?!\w)", r"<i>\1</i>", text)
            text = re.sub(r"`(.+?)`", r"<code>\1</code>", text)
            out.append(f"<p>{text}</p>")
    return "\n".join(out)
