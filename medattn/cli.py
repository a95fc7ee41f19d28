"""``medattn run | validate | plugins | schema``.

Bad input ends as one clear message on stderr and exit status 2; ``plugins`` and ``schema`` never import
torch, so they answer fast.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import ConfigError, UserError

EXIT_BAD_INPUT = 2


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="the experiment YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=3 (repeatable; value parsed as YAML)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps (overrides the file's device)")
    p.add_argument("--output-dir", help="where runs are written (overrides the file's output_dir)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="medattn", description="Attention mechanisms and explanations for medical "
                                 "image classifiers, run from YAML experiment files.")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    run = sub.add_parser("run", help="run an experiment's jobs (train, test, explain, figure)",
                         description="Run every matrix variant of an experiment; each gets its run directory "
                                     "OUTPUT_DIR/NAME/VARIANT. An interrupted run resumes from its last checkpoint.")
    _add_config_args(run)
    run.add_argument("--jobs", help="comma-separated subset of jobs to run on existing runs, e.g. explain,figure")
    run.add_argument("--devices", help="run matrix variants in parallel, one per device slot, e.g. cuda:0,cuda:1 "
                                       "(repeat a device to run several variants on it); complete variants are skipped")
    run.add_argument("--shard", metavar="I/N", help="run only the I-th (0-based) of N slices of the matrix, e.g. "
                                                   "$SLURM_ARRAY_TASK_ID/4; complete variants are skipped")
    val = sub.add_parser("validate", help="check an experiment without training",
                         description="Check schema, plugins, data paths, pretrained weights, device and models: "
                                     "everything short of training.")
    _add_config_args(val)
    plug = sub.add_parser("plugins", help="list components and plugin load errors")
    plug.add_argument("--json", action="store_true", help="machine-readable output")
    plug.add_argument("--markdown", action="store_true",
                      help="a Markdown reference of every component and its params (the README's plugin reference)")
    plug.add_argument("--kind", help="only this kind (dataset, backbone, attention, head, explainer, ...)")
    sch = sub.add_parser("schema", help="print the composed JSON Schema of experiment files",
                         description="The JSON Schema (Draft 2020-12) of experiment files, with every installed "
                                     "component's params; point yaml-language-server at it.")
    sch.add_argument("--output", "-o", type=Path, help="write to this file instead of stdout")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return {"run": cmd_run, "validate": cmd_validate, "plugins": cmd_plugins, "schema": cmd_schema}[
            args.command](args)
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
    except (UserError, OSError) as exc:  # bad input, an unwritable folder, a full disk: what was written is kept
        print(render_error(exc), file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("medattn: interrupted; what was written is kept (run again to resume)", file=sys.stderr)
        return 130


def render_error(exc: UserError | OSError) -> str:
    """The text shown for bad input (every problem of a config) or an OS error; never a traceback."""
    if isinstance(exc, ConfigError):
        n = len(exc.problems)
        return "\n".join([f"medattn: {n} problem{'s' if n != 1 else ''} in the experiment:",
                          *(f"  {line}" for line in exc.problems)])
    if isinstance(exc, UserError):
        return f"medattn: error: {user_message(exc)}"
    where = f": {exc.filename}" if exc.filename else ""
    return f"medattn: error: {exc.strerror or exc}{where}"


def user_message(exc: UserError) -> str:
    """The message of a UserError, unwrapped when a DataLoader worker re-raised it with its traceback text."""
    text = str(exc)
    if "Original Traceback" in text:  # torch's ExceptionWrapper: keep the original error's last line
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if last.split(":", 1)[0].endswith("Error") else last
    return text


def _load(args):
    from .config import load_experiment

    return load_experiment(args.file, args.overrides)


def cmd_run(args) -> int:
    from .runner import run_experiment

    exp = _load(args)
    jobs = [j.strip() for j in args.jobs.split(",") if j.strip()] if args.jobs else None
    run_experiment(exp, output_dir=args.output_dir, jobs=jobs, device=args.device, devices=args.devices,
                   shard=args.shard)
    return 0


def cmd_validate(args) -> int:
    from .runner import check_run_dir, plan

    exp = _load(args)
    runs = plan(exp, output_dir=args.output_dir, device=args.device)
    for run, jobs in runs:
        device = run.device
        state = check_run_dir(run)
        bundle, splits = run.data()
        model = run.new_model()
        if "explain" in jobs:  # layer methods (gradcam, ...) name their layer: it must exist in this model
            for i, method in enumerate(run.config["explain"]["methods"]):
                layer = (method.get("params") or {}).get("layer")
                try:
                    model.cam_layer(layer)
                except UserError as exc:
                    raise UserError(f"explain.methods.{i}.params.layer: {exc}") from None
        counts = ", ".join(f"{s} {len(splits[s])}" for s in ("train", "val", "test"))
        params = sum(p.numel() for p in model.parameters())
        print(f"ok {run.variant}: device {device}; data {counts} ({len(bundle.class_names)} classes); "
              f"model {params / 1e6:.2f}M parameters; jobs {', '.join(jobs)}; run dir {state}")
    print(f"{args.file}: valid ({len(runs)} run{'s' if len(runs) != 1 else ''})")
    return 0


def cmd_plugins(args) -> int:
    from .registry import default_registry

    reg = default_registry()
    comps = [c for c in reg.all() if not args.kind or c.kind == args.kind]
    if args.json:
        print(json.dumps({
            "components": [{"kind": c.kind, "name": c.name, "description": c.description, "plugin": c.plugin,
                            "version": c.version, "params": c.params_schema} for c in comps],
            "errors": [{"plugin": e.plugin, "error": e.error} for e in reg.errors],
            "clashes": [{"kind": k, "name": n, "plugins": [c.plugin for c in cs]} for (k, n), cs in reg.clashes.items()],
        }, indent=2))
        return 0
    if args.markdown:
        print(markdown_reference(comps))
        return 0
    width = max([len(c.name) for c in comps] + [4])
    kind = None
    for c in comps:
        if c.kind != kind:
            kind = c.kind
            print(f"\n{kind}:")
        print(f"  {c.name.ljust(width)}  {c.description}  [{c.plugin} {c.version}]".rstrip())
    for (k, n), cs in reg.clashes.items():
        print(f"\nCLASH: {k} {n!r} provided by " + " and ".join(c.plugin for c in cs), file=sys.stderr)
    if reg.errors:
        print("\nplugins that failed to load:", file=sys.stderr)
        for e in reg.errors:
            print(f"  {e.plugin}: {e.error}", file=sys.stderr)
    return 0


def markdown_reference(comps) -> str:
    """Every component with its description and a table of its params (name, type, default, meaning)."""
    out = []
    kind = None
    for c in comps:
        if c.kind != kind:
            kind = c.kind
            out.append(f"\n#### {kind}\n")
        out.append(f"**`{c.name}`** ({c.plugin}): {c.description}\n")
        props = c.params_schema.get("properties", {}) if c.kind != "job" else {}
        if props:
            out.append("| param | type | default | description |\n|---|---|---|---|")
            for name, sub in props.items():
                typ = sub.get("type") or ("one of " + ", ".join(map(str, sub["enum"])) if "enum" in sub else "")
                typ = "/".join(typ) if isinstance(typ, list) else typ
                default = json.dumps(sub["default"]) if "default" in sub else ""
                desc = sub.get("description", "").replace("|", "\\|")
                out.append(f"| `{name}` | {str(typ).replace('|', '/')} | `{default}` | {desc} |")
            out.append("")
    return "\n".join(out).strip() + "\n"


def cmd_schema(args) -> int:
    from .config import composed_schema
    from .registry import default_registry

    text = json.dumps(composed_schema(default_registry()), indent=2)
    if args.output:
        args.output.write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
