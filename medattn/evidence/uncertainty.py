"""How unsure the model is about one image, and what that buys: test-time augmentation over a declared group of
flips and 90-degree rotations, Monte Carlo dropout, per-image predictive entropy, spread and mutual information,
risk-coverage curves with their area (AURC) and a triage table.

TTA stacks every view of a batch into one batch (no Python loop per view) and runs it in forwards of the
batch size, so 8 views cost about 8 images' worth of compute per image. MC dropout switches only the dropout modules to training
mode and runs ``samples`` forward passes. The probabilities of all views and samples are averaged; the
uncertainty of an image is the predictive entropy of that average (in nats), its spread the standard deviation of
the predicted class's probability across the views and samples, and the mutual information (entropy of the mean
minus the mean entropy) the part of the entropy the views and samples disagree on.

Selective prediction: the images are kept from the least to the most uncertain. The risk at coverage c is the
error rate of the kept images; AURC is the mean risk over the N coverages 1/N ... 1 (Geifman et al. 2019). The
triage table sends the most uncertain 5, 10 and 20% to a reader and gives the model's sensitivity, specificity,
PPV and NPV on the images it keeps. No well-kept library computes these from arrays: written here.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ..errors import UserError

# each view is a function of a (B, C, H, W) batch; a group lists the views it averages
_VIEWS: dict[str, Callable] = {
    "identity": lambda x: x,
    "hflip": lambda x: x.flip(-1),
    "vflip": lambda x: x.flip(-2),
    "rot180": lambda x: x.flip(-1).flip(-2),
    "rot90": lambda x: x.rot90(1, (-2, -1)),
    "rot270": lambda x: x.rot90(3, (-2, -1)),
    "transpose": lambda x: x.transpose(-2, -1),
    "antitranspose": lambda x: x.transpose(-2, -1).flip(-1).flip(-2),
}
GROUPS: dict[str, tuple[str, ...]] = {
    "none": ("identity",),
    "flips": ("identity", "hflip", "vflip", "rot180"),  # the flips: a group without 90-degree turns
    "d4": ("identity", "rot90", "rot180", "rot270", "hflip", "vflip", "transpose", "antitranspose"),
}
_TURNS = {"rot90", "rot270", "transpose", "antitranspose"}
FRACTIONS = (0.05, 0.10, 0.20)  # the triage table's referred shares


def check_tta(group: str, image_size: Sequence[int], where: str = "test.tta") -> tuple[str, ...]:
    """The views of ``group``; a UserError for an unknown group or for 90-degree turns of non-square images."""
    if group not in GROUPS:
        raise UserError(f"{where}: {group!r} is not one of {', '.join(GROUPS)}")
    h, w = int(image_size[0]), int(image_size[1])
    if h != w and any(v in _TURNS for v in GROUPS[group]):
        raise UserError(f"{where}: {group} turns images by 90 degrees, which needs square inputs; the model takes "
                        f"{h}x{w}: use flips")
    return GROUPS[group]


def views(x: Any, names: Sequence[str]) -> Any:
    """One batch of every view of ``x`` (V * B, C, H, W), view-major: rows v * B ... v * B + B - 1."""
    import torch

    return torch.cat([_VIEWS[n](x) for n in names], dim=0)


def dropout_modules(model: Any) -> list[Any]:
    """The dropout modules of a model (any torch.nn dropout variant)."""
    from torch import nn

    return [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]


def check_mc_dropout(model: Any, where: str = "test.mc_dropout") -> None:
    """A UserError when the model has no dropout to sample."""
    if not dropout_modules(model):
        raise UserError(f"{where}: the model has no dropout layer (p > 0) to sample; give the head dropout (e.g. "
                        "model.head: {name: linear, params: {dropout: 0.2}}) and train again, or use test.tta")


@contextlib.contextmanager
def mc_dropout(model: Any) -> Iterator[None]:
    """Dropout modules in training mode (sampling), everything else (batch norm) as it was."""
    modules = dropout_modules(model)
    was = [m.training for m in modules]
    for m in modules:
        m.train()
    try:
        yield
    finally:
        for m, t in zip(modules, was):
            m.train(t)


def sample_logits(forward: Callable[[Any], Any], x: Any, names: Sequence[str] = ("identity",),
                  samples: int = 1, model: Any = None, chunk: int | None = None) -> np.ndarray:
    """(S * V, B, outputs) float32 logits of every view and, with ``samples`` > 1 and ``model``, every MC-dropout
    sample. The views are stacked into one batch, run in forwards of at most ``chunk`` images (None: all at
    once): with ``chunk`` = the batch size, a forward holds as many images as without TTA (on a CPU a batch
    eight times larger costs more than eight times as much; measured in bench/tta_cost.py)."""
    import torch

    batch = views(x, names)
    step = len(batch) if not chunk else max(1, int(chunk))
    out = []
    context = mc_dropout(model) if samples > 1 and model is not None else contextlib.nullcontext()
    with torch.inference_mode(), context:
        for _ in range(max(1, samples)):
            z = torch.cat([forward(batch[i:i + step]).float() for i in range(0, len(batch), step)])
            out.append(z.reshape(len(names), len(x), -1).cpu().numpy())
    return np.concatenate(out, axis=0)


def sampled_summary(model: Any, x: Any, names: Sequence[str], samples: int, calibration: Any, output: str,
                    chunk: int | None = None) -> dict[str, np.ndarray]:
    """:func:`summarise` of a batch over the views ``names`` and ``samples`` MC-dropout passes, each one's logits
    calibrated as ``calibration`` says (None: as the model gives them); what the test job and predict share."""
    from . import calibration as C
    from .metrics import class_probabilities

    z = sample_logits(model, x, names, samples or 1, model, chunk=chunk)
    return summarise(np.stack([class_probabilities(C.probabilities(C.apply(calibration, zi), output)) for zi in z]))


def summarise(probabilities: np.ndarray) -> dict[str, np.ndarray]:
    """From (S, N, K) class probabilities of S views / samples: ``mean`` (N, K), and per image ``entropy``,
    ``spread`` and ``mutual_information`` (see the module docstring)."""
    p = np.asarray(probabilities, dtype=np.float64)
    mean = p.mean(axis=0)
    logs = np.log(np.clip(p, 1e-12, 1.0))
    entropy = -np.sum(mean * np.log(np.clip(mean, 1e-12, 1.0)), axis=1)
    expected = -np.sum(p * logs, axis=2).mean(axis=0)
    top = mean.argmax(axis=1)
    spread = p[:, np.arange(p.shape[1]), top].std(axis=0)
    return {"mean": mean, "entropy": entropy, "spread": spread,
            "mutual_information": np.maximum(entropy - expected, 0.0)}


def risk_coverage(correct: Any, uncertainty: Any) -> dict[str, Any]:
    """The risk-coverage curve (images kept from the least uncertain) and its area ``aurc``."""
    wrong = 1.0 - np.asarray(correct, dtype=np.float64)
    order = np.argsort(np.asarray(uncertainty, dtype=np.float64), kind="stable")
    kept = np.arange(1, len(order) + 1)
    risk = np.cumsum(wrong[order]) / kept
    return {"coverage": (kept / len(order)).tolist(), "risk": risk.tolist(),
            "aurc": float(risk.mean()) if len(order) else math.nan}


def weighted_aurc(correct: Any, uncertainty: Any, weights: np.ndarray) -> np.ndarray:
    """AURC under each row of image weights (R, N) -> (R,): the weighted mean of the risk at each kept image."""
    wrong = 1.0 - np.asarray(correct, dtype=np.float64)
    order = np.argsort(np.asarray(uncertainty, dtype=np.float64), kind="stable")
    w = np.atleast_2d(weights)[:, order]
    kept = np.cumsum(w, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        risk = np.where(kept > 0, np.cumsum(w * wrong[order], axis=1) / np.where(kept > 0, kept, 1), 0.0)
        return (w * risk).sum(axis=1) / w.sum(axis=1)


def _rates(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    tp, tn = int(((p == 1) & (y == 1)).sum()), int(((p == 0) & (y == 0)).sum())
    fp, fn = int(((p == 1) & (y == 0)).sum()), int(((p == 0) & (y == 1)).sum())
    ratio = lambda a, b: a / b if b else math.nan  # noqa: E731
    return {"sensitivity": ratio(tp, tp + fn), "specificity": ratio(tn, tn + fp), "ppv": ratio(tp, tp + fp),
            "npv": ratio(tn, tn + fn), "accuracy": ratio(tp + tn, len(y))}


def triage(labels: Any, predicted: Any, uncertainty: Any, fractions: Sequence[float] = FRACTIONS
           ) -> list[dict[str, Any]]:
    """One row per referred share (0 first): how many images the model keeps and refers, and its sensitivity,
    specificity, PPV, NPV and accuracy on those it keeps (binary: class 1 positive; otherwise accuracy only)."""
    y, p = np.asarray(labels).astype(int), np.asarray(predicted).astype(int)
    order = np.argsort(-np.asarray(uncertainty, dtype=np.float64), kind="stable")  # most uncertain first
    binary = set(np.unique(np.r_[y, p])) <= {0, 1}
    rows = []
    for share in (0.0, *fractions):
        referred = int(math.ceil(share * len(y) - 1e-9))
        keep = np.sort(order[referred:])
        rates = _rates(y[keep], p[keep])
        rows.append({"referred": share, "n_referred": referred, "n_kept": int(len(keep)),
                     **(rates if binary else {"accuracy": rates["accuracy"]})})
    return rows
