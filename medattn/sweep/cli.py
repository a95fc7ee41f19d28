"""``medattn sweep FILE [--workers N | --slurm ...] [--status] [--finalize] [--storage URL]``."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError


def add_parser(sub: argparse._SubParsersAction, config_args) -> None:
    sw = sub.add_parser("sweep", help="tune each variant with an Optuna study; trials are ordinary runs",
                        description="Run the trials of the file's sweep: section, one Optuna study per matrix "
                                    "variant, in OUTPUT_DIR/NAME/sweep/ (VARIANT.journal and VARIANT/trial-NNN/). "
                                    "Running it again continues the studies. See docs/sweeps.md.")
    config_args(sw)
    sw.add_argument("--workers", type=int, default=1, metavar="N",
                    help="worker processes on this machine, the cores divided between them (default 1)")
    sw.add_argument("--storage", metavar="URL",
                    help="an RDB URL (postgresql://..., mysql://..., sqlite:///...) instead of the journal files")
    sw.add_argument("--status", action="store_true", help="print a table per variant and exit")
    sw.add_argument("--finalize", action="store_true",
                    help="write FILE-tuned.yaml beside FILE (FILE's name without .yaml): each variant's best params, "
                         "with seeds:, compare: and the test and figure jobs")
    sw.add_argument("--output", "-o", type=Path,
                    help="--finalize: write the tuned file here instead (extends and plugin files are rebased)")
    sw.add_argument("--retry-failed", action="store_true",
                    help="after fixing what made trials fail: the failed trials so far no longer count toward a "
                         "variant's failure limit, so the variants that stopped go on")
    sl = sw.add_argument_group("Slurm (through submitit; flags override the file's sweep.slurm section)")
    sl.add_argument("--slurm", action="store_true", help="submit a job array of workers instead of running here")
    sl.add_argument("--partition", help="Slurm partition")
    sl.add_argument("--time", type=int, metavar="MIN", help="minutes per array task")
    sl.add_argument("--gpus", type=int, help="GPUs per array task")
    sl.add_argument("--cpus", type=int, help="CPUs per array task")
    sl.add_argument("--array", type=int, metavar="N", help="array tasks (workers)")
    sl.add_argument("--cluster", choices=["auto", "slurm", "local", "debug"],
                    help="submitit executor (local: processes on this machine, for a dry run)")


def cmd_sweep(args) -> int:
    from ..config import load_experiment
    from .results import status_rows, status_text, stopped_variants, write_finalized
    from .study import retry_failed, run_workers, sweep_spec

    exp = load_experiment(args.file, args.overrides)
    sweep_spec(exp)
    if args.workers < 1:
        raise UserError(f"--workers {args.workers}: give 1 or more")
    if args.status:
        print(status_text(exp, args.output_dir, args.storage))
        return 0
    if args.finalize:
        path = write_finalized(exp, args.output, args.output_dir, args.storage)
        print(f"{path}: the tuned experiment; run it with: medattn run {path}")
        return 0
    if args.retry_failed:
        again = retry_failed(exp, args.output_dir, args.storage)
        print(f"--retry-failed: earlier failed trials no longer count; {', '.join(again) or 'no variant'} had stopped")
    if args.slurm:
        return _submit(exp, args)
    failed = run_workers(exp, args.workers, args.output_dir, args.device, args.storage)
    rows = status_rows(exp, args.output_dir, args.storage)
    print(status_text(exp, args.output_dir, args.storage, rows))
    problems = []
    if failed:
        problems.append("worker(s) ended early: " + ", ".join(f"worker {i} (exit {c})" for i, c in failed)
                        + "; run the same command again to continue the studies")
    stopped = stopped_variants(rows)
    if stopped:
        problems.append(f"variant(s) {', '.join(stopped)} stopped: more failed trials than sweep.trials (the last "
                        f"reason is in the table above). Fix the cause, then: medattn sweep {args.file} --retry-failed")
    if problems:
        raise UserError("\n".join(problems))
    return 0


def _submit(exp, args) -> int:
    from .results import status_text
    from .slurm import submit_array

    flags = {"partition": args.partition, "time": args.time, "gpus": args.gpus, "cpus": args.cpus,
             "array": args.array, "cluster": args.cluster}
    executor, jobs = submit_array(exp, flags, args.output_dir, args.device, args.storage)
    print(f"submitted {len(jobs)} worker(s) to {executor.cluster}: {', '.join(j.job_id for j in jobs)}")
    if executor.cluster in ("local", "debug"):  # no scheduler keeps them: wait here
        codes = [_wait(j) for j in jobs]
        print(status_text(exp, args.output_dir, args.storage))
        return max(codes)
    print(f"follow them with: medattn sweep {args.file} --status")
    return 0


def _wait(job) -> int:
    try:
        job.result()
        return 0
    except Exception as exc:  # submitit re-raises the task's failure here
        print(f"worker {job.job_id} failed: {str(exc).strip().splitlines()[-1] if str(exc).strip() else exc}")
        return 1
