"""``medattn predict | export | runs``: trained models from the command line (medattn.cli wires these in).

Building the parsers imports nothing heavy; torch is imported when ``predict`` or ``export`` runs.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..store.rundir import ExperimentDir, RunDir
from .export import EXPORTERS

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom", ".dic")


def _batch_size(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number of at least 1")
    return int(text)


def _allow_changed_plugins(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-changed-plugins", action="store_true",
                   help="load the run's plugin files even when they differ from the sha256 the model file records "
                        "(a warning; without it, that is an error: a changed plugin is a different model)")


def add_parsers(sub: Any) -> None:
    """Add ``predict``, ``export`` and ``runs`` to the CLI's sub-parsers."""
    pre = sub.add_parser("predict", help="predict (and explain) new images with a trained run",
                         description="Class probabilities and the predicted class of each image, written as one CSV "
                                     "(path, prob_<class>..., predicted, threshold, error). An unreadable image gets "
                                     "a row with its error; the exit status is non-zero only when no image could be "
                                     "predicted. Needs no training data: the model file carries what it needs.")
    pre.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory (or a model file *.pt)")
    pre.add_argument("inputs", nargs="*", metavar="INPUT",
                     help="image files (PNG, JPEG, TIFF, DICOM), folders (searched recursively) or CSV files with a "
                          "path column (relative paths are taken from the CSV's folder); none with --dicomweb")
    pre.add_argument("--checkpoint", default="best_val_loss", help="which checkpoint (default: best_val_loss)")
    pre.add_argument("--output", "-o", type=Path, default=Path("predictions.csv"),
                     help="the CSV to write (default: predictions.csv)")
    pre.add_argument("--explain", metavar="METHOD",
                     help="also write attributions (.npz) and overlays (.png) of this explainer (e.g. saliency, "
                          "gradcam) into <output stem>_<METHOD>/")
    pre.add_argument("--tta", choices=["none", "flips", "d4"], default="none",
                     help="average test-time views of each image, stacked into the batch: flips (4 views) or d4 (8 views: "
                          "flips, 90-degree turns and transposes; square inputs only)")
    pre.add_argument("--mc-dropout", type=_batch_size, default=0, metavar="N",
                     help="average N Monte Carlo dropout passes (the model needs dropout)")
    pre.add_argument("--uncertainty", action="store_true",
                     help="add each image's entropy, spread and mutual_information columns (over the --tta views "
                          "and --mc-dropout samples)")
    pre.add_argument("--batch-size", type=_batch_size, default=32, help="images per forward pass (default: 32)")
    pre.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default: auto)")
    pre.add_argument("--path-column", default="path", help="the path column of CSV inputs (default: path)")
    dicom = pre.add_argument_group("DICOM and PACS", "research use only: medattn is not a medical device")
    dicom.add_argument("--dicom-out", type=Path, metavar="DIR",
                       help="write a DICOM Comprehensive SR (TID 1500) per DICOM input into DIR, and with --explain a "
                            "Parametric Map of the attribution on the source's grid")
    dicom.add_argument("--dicomweb", metavar="URL",
                       help="predict the instances of a DICOMweb server (its root, e.g. http://pacs:8042/dicom-web) "
                            "chosen by --study, --series or --query; credentials from MEDATTN_DICOMWEB_TOKEN, or "
                            "MEDATTN_DICOMWEB_USER and MEDATTN_DICOMWEB_PASSWORD, never from the command line")
    dicom.add_argument("--study", metavar="UID", help="with --dicomweb: the instances of this study")
    dicom.add_argument("--series", metavar="UID", help="with --dicomweb: the instances of this series")
    dicom.add_argument("--query", metavar="QUERY",
                       help="with --dicomweb: a QIDO-RS query of instances, e.g. 'Modality=MG&StudyDate=20240101-'")
    dicom.add_argument("--store", action="store_true",
                       help="with --dicomweb: send the SRs (and maps) back to the server with STOW-RS")
    dicom.add_argument("--workers", type=_batch_size, default=4,
                       help="with --dicomweb: instances fetched and decoded at a time (default: 4)")
    dicom.add_argument("--timeout", type=float, default=30.0,
                       help="with --dicomweb: seconds before a request is given up (default: 30)")
    dicom.add_argument("--retries", type=_batch_size, default=3,
                       help="with --dicomweb: tries per request on server errors and lost connections (default: 3)")
    _allow_changed_plugins(pre)
    formats = "; ".join(f"{e.name}: {e.description}" for e in EXPORTERS.values())
    exp = sub.add_parser("export", help=f"export a trained run's model ({', '.join(EXPORTERS)})",
                         description="Write the model and, beside it, <name>.json: input size, channels, mean/std, "
                                     "class names, threshold. The export is checked against PyTorch before it is "
                                     f"written (logits within 1e-4). Formats: {formats}.")
    exp.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory (or a model file *.pt)")
    exp.add_argument("--format", required=True, choices=list(EXPORTERS), help=" or ".join(EXPORTERS))
    exp.add_argument("--checkpoint", default="best_val_loss", help="which checkpoint (default: best_val_loss)")
    suffixes = "|".join(e.suffix for e in EXPORTERS.values())
    exp.add_argument("--output", "-o", type=Path,
                     help=f"the model file to write (default: <variant>_<checkpoint>{suffixes} in this folder)")
    _allow_changed_plugins(exp)
    runs = sub.add_parser("runs", help="list the runs under a folder",
                          description="One line per run: experiment, variant, jobs done, best checkpoint with its "
                                      "monitored value, test score, date.")
    runs.add_argument("dir", nargs="?", type=Path, default=Path("runs"), metavar="DIR",
                      help="an output folder, an experiment folder or a run (default: runs)")


# ---------------------------------------------------------------------------------------------------------------
# predict
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Source:
    """One input image: its name in the CSV, its path, and why it cannot be read when that is known already."""

    name: str
    path: Path | None
    error: str | None = None


def collect_inputs(inputs: list[str | Path], path_column: str = "path") -> list[Source]:
    """The images named by INPUT arguments: files, folders (recursively, by suffix) and CSV lists."""
    out: list[Source] = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            out += [Source(str(p), p) for p in found] or [
                Source(str(path), None, f"no images in this folder ({', '.join(IMAGE_SUFFIXES)})")]
        elif path.suffix.lower() == ".csv" and path.is_file():
            out += _from_csv(path, path_column)
        else:
            out.append(Source(str(path), path, None if path.exists() else "file not found"))
    return out


def _from_csv(file: Path, column: str) -> list[Source]:
    try:
        with open(file, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if column not in (reader.fieldnames or []):
                raise UserError(f"{file}: no {column!r} column (columns: {', '.join(reader.fieldnames or [])}); "
                                "use --path-column")
            rows = list(reader)
    except UnicodeDecodeError as exc:
        raise UserError(f"{file}: not a UTF-8 CSV ({exc.reason})") from None
    out = []
    for line, row in enumerate(rows, start=2):
        cell = (row.get(column) or "").strip()
        if not cell:
            out.append(Source(f"{file}:{line}", None, f"empty {column}"))
            continue
        path = Path(cell) if Path(cell).is_absolute() else file.parent / cell
        out.append(Source(str(path), path, None if path.exists() else f"file not found (listed in {file} line {line})"))
    return out


def cmd_predict(args: argparse.Namespace) -> int:
    """Predict every input; write the CSV (and, with --explain, the attributions and overlays; with --dicom-out,
    the SRs and maps). With --dicomweb, the inputs are a DICOMweb server's instances."""
    from tqdm.auto import tqdm

    from ..evidence.metrics import class_probabilities
    from ..files import write_csv
    from .predictor import load_run

    if args.output.is_dir():  # checked before any prediction, not when the CSV is written
        raise UserError(f"--output {args.output}: is a folder; give the CSV file's path, e.g. {args.output / 'predictions.csv'}")
    check_dicom_arguments(args)
    if args.dicomweb:
        return cmd_predict_dicomweb(args)
    sources = collect_inputs(args.inputs, args.path_column)
    predictor = load_run(args.run_dir, args.checkpoint, args.device, allow_changed_plugins=args.allow_changed_plugins)
    predictor.check_sampling(args.tta, args.mc_dropout)
    explainer = predictor.explainer(args.explain, args.batch_size) if args.explain else None
    spread = ("entropy", "spread", "mutual_information") if args.uncertainty else ()
    folder = args.output.with_name(f"{args.output.stem}_{args.explain}") if args.explain else None
    writer = None
    if args.dicom_out is not None:
        from .dicom_out import DicomWriter

        writer = DicomWriter(predictor, args.dicom_out, args.explain)
    rows: dict[int, dict[str, Any]] = {i: {**predictor_row(predictor, s.name, error=s.error),
                                           **dict.fromkeys(spread, "")} for i, s in enumerate(sources) if s.error}
    readable = [i for i, s in enumerate(sources) if s.error is None]
    with tqdm(total=len(sources), unit="img", desc="predict", disable=not sys.stderr.isatty()) as bar:
        bar.update(len(rows))
        for batch in predictor.batches([sources[i].path for i in readable], args.batch_size, tta=args.tta,
                                       mc_samples=args.mc_dropout, uncertainty=args.uncertainty):
            for k, why in batch.errors.items():
                rows[readable[k]] = predictor_row(predictor, sources[readable[k]].name, error=why)
                rows[readable[k]].update(dict.fromkeys(spread, ""))
            if batch.ok:
                maps = predictor.attribute(explainer, batch) if explainer is not None else None
                probs = class_probabilities(batch.scores)
                sets = predictor.sets(probs)
                for j, (k, index) in enumerate(zip(batch.ok, predictor.classify(batch.scores))):
                    i = readable[k]
                    rows[i] = predictor_row(predictor, sources[i].name, probs[j], int(index),
                                            conformal_set=None if sets is None else sets[j])
                    rows[i].update({k: f"{batch.uncertainty[k][j]:.6f}" for k in spread})
                    if maps is not None:
                        rows[i].update(save_explanation(folder, i, sources[i], predictor, args.explain,
                                                        batch.raw[j].numpy(), maps[j], probs[j], rows[i]))
                    if writer is not None:
                        rows[i].update(write_dicom(writer, sources[i], probs[j], int(index),
                                                   maps[j] if maps is not None else None))
            bar.update(len(batch.items))
    columns = prediction_columns(predictor, spread)
    columns += ["attribution", "overlay"] if explainer is not None else []
    columns += ["sr", "note"] if writer is not None else []
    write_csv(args.output, [rows[i] for i in range(len(sources))], columns)
    done = sum(1 for r in rows.values() if not r["error"])
    if not done:
        first = next((f"{rows[i]['path']}: {rows[i]['error']}" for i in sorted(rows)), "no inputs")
        raise UserError(f"none of the {len(sources)} input(s) could be predicted (rows in {args.output}); "
                        f"first: {first}")
    bad = len(sources) - done
    if predictor.made_before_calibration:
        print(f"note: {predictor.file} was made before medattn kept a calibration in its model files: the "
              "probabilities are the model's own (run the test job with test.calibration to add one)",
              file=sys.stderr)
    reports = sum(1 for r in rows.values() if r.get("sr"))
    print(f"{done} of {len(sources)} image(s) predicted with {predictor.file} -> {args.output}"
          + (f"; {bad} could not be read (see the error column)" if bad else "")
          + (f"; attributions and overlays in {folder}" if folder else "")
          + (f"; {reports} SR(s) in {args.dicom_out}" + (f", {done - reports} predicted input(s) without one (see the "
                                                          "note column)" if done > reports else "")
             if writer is not None else ""))
    return 0


def check_dicom_arguments(args: argparse.Namespace) -> None:
    """The DICOM options that go together: --dicomweb (a well-formed URL) with one of --study/--series/--query
    and no INPUT; those options and --store only with --dicomweb; --dicom-out not an existing file. Checked
    before the model loads."""
    chosen = [f"--{k}" for k in ("study", "series", "query") if getattr(args, k)]
    if args.dicomweb:
        if args.inputs:
            raise UserError(f"--dicomweb takes no INPUT files (got {args.inputs[0]}); choose the instances with "
                            "--study, --series or --query")
        if not chosen:
            raise UserError("--dicomweb: give --study UID, --series UID or --query 'KEYWORD=VALUE&...'")
        if args.query and (args.study or args.series):
            raise UserError("--query goes alone: put the study or series into it (StudyInstanceUID=...)")
        sampled = [name for name, on in (("--tta", args.tta != "none"), ("--mc-dropout", args.mc_dropout),
                                         ("--uncertainty", args.uncertainty)) if on]
        if sampled:
            raise UserError(f"{', '.join(sampled)}: not with --dicomweb (its instances are predicted once each); "
                            "predict the downloaded files for test-time views, MC dropout or uncertainty")
        from .dicomweb import check_url

        check_url(args.dicomweb)
    else:
        used = chosen + (["--store"] if args.store else [])
        if used:
            raise UserError(f"{', '.join(used)}: only with --dicomweb URL")
        if not args.inputs:
            raise UserError("no INPUT: give image files, folders or CSV lists (or --dicomweb URL)")
    if args.dicom_out is not None and args.dicom_out.exists() and not args.dicom_out.is_dir():
        raise UserError(f"--dicom-out {args.dicom_out}: is a file; give a folder")


def write_dicom(writer: Any, source: Source, probabilities: Any, index: int, attribution: Any) -> dict[str, str]:
    """The SR (and map) of one predicted input, as CSV cells: ``sr`` (the SR's path) and ``note`` (why there is
    no SR or no map: a non-DICOM input, a source highdicom refuses)."""
    from ..image_io import is_dicom

    if source.path is None or not is_dicom(source.path):
        return {"sr": "", "note": "not a DICOM input: no SR written"}
    from .dicom_out import dicom_header

    written = writer.write(dicom_header(source.path), probabilities, index, attribution)
    return {"sr": str(written.files[0]) if written.files else "", "note": written.note}


def cmd_predict_dicomweb(args: argparse.Namespace) -> int:
    """``predict --dicomweb``: one message per instance with a problem (stderr), the CSV, a summary line."""
    from ..files import write_csv
    from .predictor import load_run

    predictor = load_run(args.run_dir, args.checkpoint, args.device, allow_changed_plugins=args.allow_changed_plugins)
    result = predictor.predict_dicomweb(args.dicomweb, args.study, args.series, args.query, store=args.store,
                                        dicom_out=args.dicom_out, explain=args.explain, batch_size=args.batch_size,
                                        workers=args.workers, timeout=args.timeout, retries=args.retries,
                                        progress=sys.stderr.isatty())
    for line in result.messages:
        print(f"medattn: {line}", file=sys.stderr)
    columns = prediction_columns(predictor)
    columns += ["sr", "note"] + (["stored"] if args.store else []) if (args.dicom_out or args.store) else []
    write_csv(args.output, result.rows, columns)
    print(f"{result.summary()} -> {args.output}")
    if not result.tally.get("predicted"):
        raise UserError(f"none of the {len(result.instances)} instance(s) could be predicted (rows in {args.output})")
    return 0


def prediction_columns(predictor: Any, uncertainty: tuple[str, ...] = ()) -> list[str]:
    """The predictions CSV's leading columns (what :func:`predictor_row` fills): path, prob_<class>..., predicted,
    threshold, set (where the model file has conformal thresholds), the ``uncertainty`` columns, error."""
    return ["path", *(f"prob_{c}" for c in predictor.class_names), "predicted", "threshold",
            *(["set"] if predictor.conformal is not None else []), *uncertainty, "error"]


def predictor_row(predictor: Any, name: str, probabilities: Any = None, index: int = -1, error: str | None = None,
                  conformal_set: Any = None) -> dict[str, Any]:
    """One CSV row: path, prob_<class>..., predicted, threshold, (set,) error."""
    import numpy as np

    from .predictor import prediction_row

    if predictor.conformal is not None and conformal_set is None:  # an unread input: an empty set cell
        conformal_set = np.zeros(len(predictor.class_names), dtype=bool)
    return prediction_row(name, predictor.class_names, probabilities, index, predictor.threshold, error,
                          conformal_set)


def save_explanation(folder: Path, position: int, source: Source, predictor: Any, method: str, image: Any,
                     attribution: Any, probabilities: Any, row: dict[str, Any]) -> dict[str, str]:
    """``<folder>/<position>_<stem>.npz`` (attribution, image, prediction) and ``.png`` (overlay), written
    atomically; returns the CSV cells naming them (relative to the CSV's folder)."""
    import numpy as np

    from ..files import atomic_write_bytes
    from .predictor import overlay

    stem = f"{position:05d}_{source.path.stem if source.path else 'image'}"
    npz = io.BytesIO()
    np.savez_compressed(npz, attribution=attribution.astype(np.float32), image=image.astype(np.float32),
                        probabilities=np.asarray(probabilities, dtype=np.float32),
                        class_names=np.array(predictor.class_names), predicted=np.array(row["predicted"]),
                        method=np.array(method), source=np.array(source.name))
    png = io.BytesIO()
    overlay(image, attribution).save(png, format="PNG")
    atomic_write_bytes(folder / f"{stem}.npz", npz.getvalue())
    atomic_write_bytes(folder / f"{stem}.png", png.getvalue())
    return {"attribution": f"{folder.name}/{stem}.npz", "overlay": f"{folder.name}/{stem}.png"}


# ---------------------------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    """Export the model and its contract; print both paths."""
    from .export import export_run

    model, contract = export_run(args.run_dir, args.format, args.checkpoint, args.output,
                                 allow_changed_plugins=args.allow_changed_plugins)
    parity = json.loads(contract.read_text(encoding="utf-8"))["parity"]
    print(f"{model}\n{contract}\n(max |logit difference| from PyTorch: {parity['max_abs_logit_difference']:.2g} "
          f"under {parity['runtime']})")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# runs
# ---------------------------------------------------------------------------------------------------------------
def find_runs(folder: Path) -> list[RunDir]:
    """The runs at or below ``folder``: a run, an experiment folder, or an output folder of experiments."""
    if RunDir(folder).config.is_file():
        return [RunDir(folder)]
    found = {r.root: r for r in ExperimentDir(folder).runs()}
    for child in sorted(folder.iterdir()):
        if child.is_dir() and not child.name.startswith("."):
            found.update({r.root: r for r in ExperimentDir(child).runs()})
    return [found[k] for k in sorted(found)]


def run_row(rd: RunDir) -> dict[str, str]:
    """experiment, variant, jobs, best (checkpoint, monitored value, epoch), test score, date of one run."""
    try:
        manifest = rd.read_manifest() if rd.manifest.is_file() else {}
        done = rd.read_jobs_done()
    except UserError:
        manifest, done = {}, {}
    seeded = rd.root.name.startswith("seed-")
    variant = manifest.get("variant") or (rd.root.parent.name if seeded else rd.root.name)
    experiment = manifest.get("experiment") or (rd.root.parent.parent if seeded else rd.root.parent).name
    names = rd.checkpoint_names()
    tested = rd.tested_checkpoints()
    best = next((n for n in [*tested, *names] if n.startswith("best_")), names[0] if names else "")
    finished = sorted(str(v.get("finished", "")) for v in done.values() if isinstance(v, dict))
    return {"experiment": experiment, "variant": variant + (f"/{rd.root.name}" if seeded else ""),
            "jobs": ",".join(done) or "-", "best": _best(rd, best) if best else "-",
            "test": _test(rd, best) if best in tested else "-",
            "date": (finished[-1] if finished else str(manifest.get("created", "")))[:16].replace("T", " ") or "-"}


def _best(rd: RunDir, checkpoint: str) -> str:
    """``best_val_loss: val_loss 0.4123 (epoch 7)`` from the history (the best epoch of the monitored column)."""
    monitor = checkpoint[len("best_"):]
    values = []
    for row in rd.read_history():
        try:
            values.append((float(row[monitor]), int(float(row.get("epoch") or 0))))
        except (KeyError, TypeError, ValueError):
            continue
    if not values:
        return checkpoint
    from ..evidence.metric_specs import mode_of

    value, epoch = (min if mode_of(monitor) == "min" else max)(values, key=lambda v: v[0])
    return f"{checkpoint}: {monitor} {value:.4g} (epoch {epoch})"


def _test(rd: RunDir, checkpoint: str) -> str:
    metrics = rd.read_test_metrics(checkpoint) or {}
    shown = [f"{k} {metrics[k]:.4g}" for k in ("roc_auc", "accuracy") if isinstance(metrics.get(k), (int, float))]
    return ", ".join(shown) or "-"


def cmd_runs(args: argparse.Namespace) -> int:
    """Print a table of the runs under DIR."""
    from ..files import format_table

    folder = Path(args.dir)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder (give the output folder of your experiments, e.g. runs)")
    runs = find_runs(folder)
    print(format_table([run_row(rd) for rd in runs], empty=f"{folder}: no runs (no run directory below it)"))
    return 0


COMMANDS = {"predict": cmd_predict, "export": cmd_export, "runs": cmd_runs}
