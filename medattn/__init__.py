"""medattn: attention mechanisms and explanations for medical image classifiers.

For notebooks: ``medattn.run(path_or_dict, **overrides)`` runs an experiment; ``medattn.load_run(RUN_DIR)``
returns a :class:`medattn.inference.predictor.Predictor` of a trained run. Plugin authors import :mod:`medattn.api`.
"""
from __future__ import annotations

import os as _os
import sys as _sys
import warnings
from typing import Any

from . import reproducible as _reproducible
from .errors import MedattnWarning as _MedattnWarning
from .errors import UserError as _UserError

try:  # before anything loads torch or numpy: the mode's settings are read as they load
    if _reproducible.requested():
        _reproducible.apply()
except _UserError as _exc:  # the medattn command refuses a bad value itself (one error, exit 2); other code warns
    if _os.path.basename((getattr(_sys, "argv", None) or [""])[0]) not in ("medattn", "medattn.exe"):
        warnings.warn(str(_exc), _MedattnWarning, stacklevel=2)

__version__ = "0.2.0"
__all__ = ["__version__", "load_run", "run"]


def load_run(run_dir: Any, checkpoint: str = "best_val_loss", device: Any = "cpu", *,
             allow_changed_plugins: bool = False) -> Any:
    """The Predictor of a trained run: ``.predict(images)``, ``.explain(images)``, ``.model``, ``.class_names``.
    A plugin file that differs from the model file's sha256 is refused unless ``allow_changed_plugins=True``."""
    from .inference.predictor import load_run as _load_run

    return _load_run(run_dir, checkpoint=checkpoint, device=device, allow_changed_plugins=allow_changed_plugins)


def run(source: Any, **overrides: Any) -> Any:
    """Run an experiment file (or a config dict) with dotted overrides, e.g. ``run("x.yaml", **{"train.epochs": 2})``
    or ``run("x.yaml", train__epochs=2)``; returns what was run and the summary rows."""
    from .inference.notebook import run_experiment_file

    return run_experiment_file(source, **overrides)
