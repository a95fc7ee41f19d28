"""``medattn run | validate | plugins | schema | predict | export | runs | sweep``.

Bad input ends as one clear message on stderr and exit status 2; ``plugins`` and ``schema`` never import
torch, so they answer fast.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from . import __version__
from .errors import EXIT_BAD_INPUT, MedattnWarning, UserError, render_error
from .inference.cli import COMMANDS as INFERENCE_COMMANDS
from .inference.cli import add_parsers
from .sweep.cli import add_parser as add_sweep_parser
from .sweep.cli import cmd_sweep


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="the experiment YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=3 (repeatable; value parsed as YAML)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps (overrides the file's device)")
    p.add_argument("--output-dir", help="where runs are written (overrides the file's output_dir)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="medattn", description="Attention mechanisms and explanations for medical "
                                 "image classifiers, run from YAML experiment files.")
    ap.add_argument("--version", action="version", version=f"medattn {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    run = sub.add_parser("run", help="run an experiment's jobs (train, test, explain, figure)",
                         description="Run every matrix variant of an experiment; each gets its run directory "
                                     "OUTPUT_DIR/NAME/VARIANT. An interrupted run resumes from its last checkpoint; "
                                     "jobs already done for the same config are skipped.")
    _add_config_args(run)
    run.add_argument("--print-config", action="store_true",
                     help="print each run's resolved config (defaults filled in) and exit")
    run.add_argument("--jobs", help="comma-separated subset of jobs to run on existing runs, e.g. explain,figure (those "
                          "already done for this config are skipped; see --force)")
    run.add_argument("--force", metavar="JOB[,JOB]",
                     help="run these jobs again although they are done for this config (all: every job); "
                          "the jobs after them run again too")
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
                      help="a Markdown reference of every component and its params (docs/reference.md)")
    plug.add_argument("--check", action="store_true",
                      help="import every component's factory and report what fails (for plugin authors)")
    plug.add_argument("--kind", help="only this kind (dataset, backbone, attention, head, explainer, ...)")
    sch = sub.add_parser("schema", help="print the composed JSON Schema of experiment files",
                         description="The JSON Schema (Draft 2020-12) of experiment files, with every installed "
                                     "component's params; point yaml-language-server at it.")
    sch.add_argument("file", type=Path, nargs="?",
                     help="an experiment file: also include the components of its plugins: list")
    sch.add_argument("--output", "-o", type=Path, help="write to this file instead of stdout")
    add_parsers(sub)
    add_sweep_parser(sub, _add_config_args)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(hydra_overrides(sys.argv[1:] if argv is None else list(argv)))
    try:
        with warnings.catch_warnings():
            warnings.showwarning = medattn_warnings_as_lines(warnings.showwarning)
            return COMMANDS[args.command](args)
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
    except (UserError, OSError) as exc:  # bad input, an unwritable folder, a full disk: what was written is kept
        print(render_error(exc), file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as exc:
        print(f"medattn: interrupted; {interrupt_hint(exc)}", file=sys.stderr)
        return 130


def medattn_warnings_as_lines(show):
    """A ``warnings.showwarning`` that prints medattn's own warnings as one ``medattn: warning:`` line on stderr
    and hands the others to ``show``."""
    def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, MedattnWarning):
            print(f"medattn: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)
    return show_warning


def hydra_overrides(argv: list[str]) -> list[str]:
    """Bare ``a.b=c`` arguments after ``run`` / ``validate`` become ``--set a.b=c`` (the Hydra/OmegaConf habit)."""
    if not argv or argv[0] not in ("run", "validate"):
        return argv
    out = argv[:1]
    for prev, arg in zip(argv, argv[1:]):
        key = arg.split("=", 1)[0]
        bare = "=" in arg and not arg.startswith("-") and key.replace(".", "").replace("_", "").isalnum()
        out += ["--set", arg] if bare and prev not in VALUE_OPTIONS else [arg]
    return out


VALUE_OPTIONS = ("--set", "--device", "--output-dir", "--jobs", "--force", "--devices", "--shard", "--output", "-o")


def interrupt_hint(exc: BaseException) -> str:
    """What an interrupt left: the train job says whether a checkpoint to resume from exists."""
    hint = getattr(exc, "resume_hint", None)
    return hint or "what was written is kept"


def _load(args):
    from .config import load_experiment

    return load_experiment(args.file, args.overrides)


def cmd_run(args) -> int:
    exp = _load(args)
    if args.print_config:
        import yaml

        from .runs.plan import plan

        for run, jobs in plan(exp, output_dir=args.output_dir, device=args.device, writes=False):
            print(f"# {exp.name}/{run.label} (jobs: {', '.join(jobs)})")
            print(yaml.safe_dump(run.config, sort_keys=False))
        return 0
    from .runs.runner import run_experiment

    jobs = [j.strip() for j in args.jobs.split(",") if j.strip()] if args.jobs is not None else None
    if jobs == []:
        raise UserError(f"--jobs {args.jobs!r}: name at least one job, e.g. --jobs test,figure")
    force = [j.strip() for j in args.force.split(",") if j.strip()] if args.force else None
    run_experiment(exp, output_dir=args.output_dir, jobs=jobs, device=args.device, devices=args.devices,
                   shard=args.shard, force=force)
    return 0


def cmd_validate(args) -> int:
    """Everything short of training, every problem reported together; writes nothing."""
    from .errors import ConfigError
    from .runs.validation import validate_runs

    exp = _load(args)
    lines, problems = validate_runs(exp, output_dir=args.output_dir, device=args.device)
    for line in lines:
        print(line)
    if problems:
        raise ConfigError(problems)
    n = len(lines)
    print(f"{args.file}: valid ({n} run{'s' if n != 1 else ''})")
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
            "disabled": list(reg.disabled),
        }, indent=2))
        return 0
    if args.markdown:
        print(markdown_reference(comps))
        return 0
    if args.check:
        return check_plugins(reg)
    width = max([len(c.name) for c in comps] + [4])
    kind = None
    for c in comps:
        if c.kind != kind:
            kind = c.kind
            print(f"\n{kind}:")
        print(f"  {c.name.ljust(width)}  {c.description}  [{c.plugin} {c.version}]".rstrip())
    report_load_problems(reg)
    return 0


def report_load_problems(reg) -> None:
    if reg.disabled:
        print(f"\nswitched off by MEDATTN_DISABLE_PLUGINS: {', '.join(reg.disabled)}", file=sys.stderr)
    for (k, n), cs in reg.clashes.items():
        print(f"\nCLASH: {k} {n!r} provided by " + " and ".join(c.plugin for c in cs), file=sys.stderr)
    if reg.errors:
        print("\nplugins that failed to load:", file=sys.stderr)
        for e in reg.errors:
            print(f"  {e.plugin}: {e.error}", file=sys.stderr)


def check_plugins(reg) -> int:
    """Import every factory; exit 1 when a plugin failed to load, clashes or has a factory that cannot load."""
    problems = reg.check_factories() if hasattr(reg, "check_factories") else []
    report_load_problems(reg)
    for line in problems:
        print(f"  {line}", file=sys.stderr)
    bad = len(problems) + len(reg.errors) + len(reg.clashes)
    print(f"{len(reg.all())} components checked; {bad} problem{'s' if bad != 1 else ''}")
    return 1 if bad else 0


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

    reg = default_registry()
    if args.file is not None:
        from .config import load_plugins_of

        load_plugins_of(args.file, reg)
    text = json.dumps(composed_schema(reg), indent=2)
    if args.output:
        args.output.write_text(text + "\n")
    else:
        print(text)
    return 0


COMMANDS = {"run": cmd_run, "validate": cmd_validate, "plugins": cmd_plugins, "schema": cmd_schema,
            "sweep": cmd_sweep, **INFERENCE_COMMANDS}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
