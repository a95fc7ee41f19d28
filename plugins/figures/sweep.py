"""Experiment figures of a ``medattn sweep``: each study's optimisation history and parameter importances,
drawn by Optuna's matplotlib visualisations from the journals in the experiment's ``sweep/`` folder."""
from __future__ import annotations

import warnings
from pathlib import Path

from medattn.api import ExperimentView, save_figure


def _studies(params: dict, view: ExperimentView) -> list:
    """Every study of the sweep: the journals beside the runs, or the RDB ``params["storage"]``."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if params["storage"]:
        storages = [params["storage"]]
    else:
        folder = view.dir.file("sweep")
        journals = sorted(folder.glob("*.journal")) if folder.is_dir() else []
        storages = [JournalStorage(JournalFileBackend(str(p))) for p in journals]
    out = []
    for storage in storages:
        for summary in optuna.get_all_study_summaries(storage):
            if summary.study_name.startswith(f"{view.name}/"):
                out.append(optuna.load_study(study_name=summary.study_name, storage=storage))
    return out


def draw(params: dict, view: ExperimentView) -> list[Path]:
    """figures/sweep_<variant>_history and sweep_<variant>_importance for each study with complete trials."""
    import matplotlib.pyplot as plt
    import optuna
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as ovm

    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for study in _studies(params, view):
            variant = study.study_name.split("/", 1)[1]
            complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if not complete:
                continue
            ax = ovm.plot_optimization_history(study)
            ax.set_title(f"{variant}: optimisation history")
            written.append(save_figure(ax.figure, view, f"sweep_{variant}_history"))
            if len(complete) < 2:
                continue
            try:
                ax = ovm.plot_param_importances(study)
            except (ValueError, RuntimeError) as exc:  # e.g. every trial scored the same
                plt.close("all")
                view.log(f"   figure sweep: no importances for {variant}: {exc}")
                continue
            ax.set_title(f"{variant}: parameter importances")
            written.append(save_figure(ax.figure, view, f"sweep_{variant}_importance"))
    return written
