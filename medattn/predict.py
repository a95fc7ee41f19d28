"""Moved to :mod:`medattn.inference.predictor` in 0.2; this name warns and is removed in 0.3."""
from __future__ import annotations

from .deprecation import warn_renamed
from .inference.predictor import *  # noqa: F403
from .inference.predictor import Predictions, Predictor, load_run, model_file  # noqa: F401

warn_renamed("medattn.predict", "medattn.inference.predictor", stacklevel=2)
