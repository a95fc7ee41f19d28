"""What the ``test`` section fits on held-out images and every model file keeps beside the weights: the
calibration (``test.calibration``, on the validation split), the decision threshold (``test.threshold_method``,
on the calibrated validation scores) and the conformal predictor (``test.conformal``, on its calibration split).

The train job fits them on each epoch's validation outputs when it keeps a checkpoint, and the test job again on
the split the config names when the model file's differ from the config (``test`` is not part of a run's identity,
so it may change after training); both call :func:`fit`, so a model file and the test metrics always agree.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import calibration as C
from . import conformal as K


def output_of(logits: np.ndarray) -> str:
    """``sigmoid`` for one logit per image, ``softmax`` for several."""
    z = np.asarray(logits)
    return "sigmoid" if z.ndim == 1 or z.shape[1] == 1 else "softmax"


def scores(calibration: Mapping[str, Any] | None, logits: Any, raw: Any) -> np.ndarray:
    """The class scores the metrics, the threshold and the sets use: ``raw`` (the model's own, as the test job
    has always recorded them) without calibration, else the calibrated probabilities in float64."""
    if calibration is None:
        return np.asarray(raw)
    return C.probabilities(C.apply(calibration, logits), calibration["output"])


def conformal_settings(test: Mapping[str, Any]) -> dict[str, Any] | None:
    """``test.conformal`` with its defaults, or None when it is off."""
    spec = test.get("conformal")
    if not spec:
        return None
    return {"alpha": spec.get("alpha", 0.1), "score": spec.get("score", "lac"),
            "class_conditional": bool(spec.get("class_conditional", True)), "split": spec.get("split", "val")}


def matches(meta: Mapping[str, Any], test: Mapping[str, Any]) -> bool:
    """Whether a model file's calibration and conformal predictor are what ``test`` asks for (so the test job
    uses them as they are)."""
    cal, want = meta.get("calibration"), test.get("calibration", "none")
    if "calibration" not in meta or (cal is None) != (want == "none") or (cal is not None and (
            cal.get("method") != want or cal.get("split") != "val")):
        return False
    conf, spec = meta.get("conformal"), conformal_settings(test)
    if (conf is None) != (spec is None):
        return False
    return conf is None or all(conf.get(k) == v for k, v in spec.items())


def fit(labels: Any, logits: Any, raw: Any, test: Mapping[str, Any], class_names: Sequence[str],
        conformal_split: tuple[Any, Any, Any] | None = None) -> dict[str, Any]:
    """``{"calibration", "threshold", "conformal"}`` fitted on validation ``labels``, ``logits`` and the model's
    ``raw`` scores by the rules of ``test``; ``conformal_split``: (labels, logits, raw) of the conformal
    calibration split when it is not the validation split (None: the validation split, or none given)."""
    from .metrics import class_probabilities, operating_point

    method = test.get("calibration", "none")
    cal = C.fit(logits, labels, method, output_of(logits), "val") if method != "none" else None
    threshold = operating_point(labels, scores(cal, logits, raw), test)
    conf = None
    spec = conformal_settings(test)
    if spec is not None:
        y, z, r = (labels, logits, raw) if spec["split"] == "val" else (conformal_split or (None, None, None))
        if y is not None:
            probs = class_probabilities(np.asarray(scores(cal, z, r), dtype=np.float64))
            conf = K.fit(probs, y, spec["alpha"], spec["score"], spec["class_conditional"], spec["split"],
                         class_names)
    return {"calibration": cal, "threshold": threshold, "conformal": conf}
