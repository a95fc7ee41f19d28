"""``medattn sweep --slurm``: an array of sweep workers submitted through submitit, all sharing the studies.

Each array task is one :func:`medattn.sweep.study.worker_main`, so it claims trials exactly as a local worker does;
the array can be larger or smaller than the trial budget, and a task that is pre-empted leaves a trial that is
retried. submitit's local executor (``slurm.cluster: local``) runs the same array as processes here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import Experiment
from ..errors import UserError
from .study import open_studies, sweep_folder, sweep_spec, worker_main


def slurm_settings(exp: Experiment, flags: dict[str, Any]) -> dict:
    """The ``sweep.slurm`` section with the command-line flags that were given laid over it."""
    return {**sweep_spec(exp)["slurm"], **{k: v for k, v in flags.items() if v is not None}}


def executor_parameters(slurm: dict, name: str) -> dict:
    """submitit AutoExecutor parameters: the generic ones and the ``slurm_`` ones (other clusters ignore them)."""
    params: dict[str, Any] = {"name": f"medattn-sweep-{name}", "timeout_min": slurm["time"],
                              "gpus_per_node": slurm["gpus"], "cpus_per_task": slurm["cpus"], "tasks_per_node": 1,
                              "slurm_array_parallelism": slurm["parallelism"] or slurm["array"]}
    if slurm["partition"]:
        params["slurm_partition"] = slurm["partition"]
    if slurm["mem_gb"]:
        params["mem_gb"] = slurm["mem_gb"]
    if slurm["setup"]:
        params["slurm_setup"] = list(slurm["setup"])
    return params


def make_executor(folder: Path, slurm: dict, name: str) -> Any:
    """A submitit AutoExecutor writing its logs under ``folder`` (auto: Slurm when sbatch exists, else local)."""
    import submitit

    cluster = None if slurm["cluster"] == "auto" else slurm["cluster"]
    try:
        executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    except (RuntimeError, ValueError) as exc:
        raise UserError(f"sweep.slurm.cluster: {slurm['cluster']}: {exc}") from None
    executor.update_parameters(**executor_parameters(slurm, name))
    return executor


def submit_array(exp: Experiment, flags: dict[str, Any], output_dir: str | None = None, device: str | None = None,
                 storage: str | None = None) -> tuple[Any, list[Any]]:
    """Submit ``slurm.array`` workers as one job array; returns (executor, jobs)."""
    slurm = slurm_settings(exp, flags)
    open_studies(exp, output_dir, storage)  # created here, before the tasks start together
    folder = sweep_folder(exp, output_dir) / "slurm" / "%j"
    executor = make_executor(folder, slurm, exp.name)
    n = slurm["array"]
    jobs = executor.map_array(worker_main, [str(exp.path.resolve())] * n, [list(exp.overrides)] * n,
                              [output_dir] * n, [device] * n, [storage] * n, [slurm["cpus"]] * n, list(range(n)))
    return executor, jobs
