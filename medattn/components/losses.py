"""``train.loss``: the weighted loss terms of training (components of kind ``loss``), built once per run.

The default, ``[{name: classification}]``, is the model's BCE-with-logits / cross-entropy with
``train.class_weights``, computed exactly as before the seam existed. Each term is logged per epoch in
history.csv as ``loss_<term>`` (unweighted mean per image); the training loss is their weighted sum.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from ..registry import Registry


def term_labels(specs: list[dict]) -> list[str]:
    """History column suffixes of the terms: their names, numbered where a name repeats."""
    names = [s["name"] for s in specs]
    return [n if names.count(n) == 1 else f"{n}_{names[:i].count(n) + 1}" for i, n in enumerate(names)]


GIVEN = {"masks": "lesion masks", "confound_masks": "confound masks"}  # what a term may need from the data set


def needs(reg: Registry, spec: dict) -> list[str]:
    """What a term needs from the data set: its record's ``defaults["needs"]`` (e.g. ``["masks"]``), replaced by
    the first rule of ``defaults["needs_if"]`` whose dotted param has the given value (``["region", "confound",
    ["confound_masks"]]``: rrr with ``region: confound`` needs confound masks instead of lesion masks)."""
    rec = reg.get("loss", spec["name"]).defaults
    params = spec.get("params") or {}
    for path, value, wanted in rec.get("needs_if", []):
        here: Any = params
        for key in str(path).split("."):
            here = here.get(key) if isinstance(here, dict) else None
        if here == value:
            return list(wanted)
    return list(rec.get("needs", []))


def needs_masks(reg: Registry, config: dict) -> bool:
    """Whether any term of ``train.loss`` needs lesion or confound masks (they then move with augmentation)."""
    return any(set(GIVEN) & set(needs(reg, s)) for s in (config.get("train") or {}).get("loss") or [])


def mask_problems(reg: Registry, config: dict, has_masks: bool,
                  has_confound_masks: bool = False) -> list[tuple[tuple, str]]:
    """(field path, message) for each term that needs masks (lesion or confound) the data set does not give."""
    given = {"masks": has_masks, "confound_masks": has_confound_masks}
    dataset = config["dataset"]["name"]
    out = []
    for i, s in enumerate(config["train"]["loss"]):
        for need in needs(reg, s):
            if need in given and not given[need]:
                hint = ("use a data set that gives confound masks" if need == "confound_masks"
                        else "use a data set with masks") + " (see its params in `medattn plugins`)"
                out.append((("train", "loss", i, "name"),
                            f"loss {s['name']!r} needs {GIVEN[need]}, but dataset {dataset!r} gives none ({hint}, "
                            f"or drop the term)"))
    return out


def weight_at(weight: Any, epoch: int) -> float:
    """A term's weight in epoch ``epoch`` (0 = the first): a number, or a warm-up ``{start, end, epochs}`` that
    goes linearly from ``start`` in the first epoch to ``end`` after ``epochs`` epochs, and stays there."""
    if not isinstance(weight, dict):
        return float(weight)
    start, end, span = float(weight["start"]), float(weight["end"]), int(weight["epochs"])
    return start + (end - start) * min(epoch, span) / span


def schedule_problems(config: dict) -> list[tuple[tuple, str]]:
    """(field path, message) for each weight schedule longer than the training."""
    epochs = int(config["train"]["epochs"])
    return [(("train", "loss", i, "weight", "epochs"),
             f"the weight's warm-up takes {s['weight']['epochs']} epochs, but train.epochs is {epochs} (it would "
             f"never reach its end value {s['weight']['end']})")
            for i, s in enumerate(config["train"]["loss"])
            if isinstance(s.get("weight"), dict) and int(s["weight"]["epochs"]) > epochs]


def model_problems(reg: Registry, config: dict, model: Any) -> list[tuple[tuple, str]]:
    """(field path, message) of what each term of ``train.loss`` finds wrong with the built model: a term may
    offer ``model_problems(model) -> [(path under its params, message)]`` (e.g. a map key the model lacks)."""
    from ..hookspecs import LossContext
    from .model import image_size

    out: list[tuple[tuple, str]] = []
    ctx = LossContext(output=model.output, num_outputs=model.num_outputs, image_size=image_size(config),
                      has_masks=True, class_weights=None)
    for i, spec in enumerate(config["train"]["loss"]):
        try:
            term = reg.build("loss", spec, ctx, field=f"train.loss.{i}")
        except UserError as exc:
            out.append((("train", "loss", i), str(exc)))
            continue
        check = getattr(term, "model_problems", None)
        if callable(check):
            out += [(("train", "loss", i, "params", *path), message) for path, message in check(model)]
    return out


@dataclass
class LossTerms:
    """The built terms: (label, weight, term); called on a :class:`medattn.api.LossBatch`. A weight is a number
    or a schedule (:func:`weight_at`), followed by :meth:`set_epoch`."""

    terms: list[tuple[str, Any, Any]]
    needs_input_gradients: bool = False
    needs_features: bool = False
    needs_attention_maps: bool = False
    epoch: int = 0

    def __post_init__(self) -> None:
        self.needs_input_gradients = any(getattr(t, "needs_input_gradients", False) for _, _, t in self.terms)
        self.needs_features = any(getattr(t, "needs_features", False) for _, _, t in self.terms)
        self.needs_attention_maps = any(getattr(t, "needs_attention_maps", False) for _, _, t in self.terms)

    def to(self, device: Any) -> LossTerms:
        for _, _, term in self.terms:
            if hasattr(term, "to"):
                term.to(device)
        return self

    def set_epoch(self, epoch: int) -> None:
        """The epoch (0 = the first) scheduled weights are taken at."""
        self.epoch = int(epoch)

    def __call__(self, batch: Any) -> tuple[Any, dict[str, Any]]:
        """(weighted sum, {label: detached value}); a single term of weight 1 is returned as it is (bit-exact)."""
        total, parts = None, {}
        for label, weight, term in self.terms:
            value = term(batch)
            parts[label] = value.detach()
            w = weight_at(weight, self.epoch)
            weighted = value if w == 1.0 else value * w
            total = weighted if total is None else total + weighted
        return total, parts


def build_losses(reg: Registry, config: dict, model: Any, has_masks: bool,
                 class_weights: list[float] | None, has_confound_masks: bool = False) -> LossTerms:
    """The terms of ``train.loss`` for ``model``; a term that cannot be built is one UserError naming it."""
    from ..hookspecs import LossContext
    from .model import image_size

    specs = config["train"]["loss"]
    problems = mask_problems(reg, config, has_masks, has_confound_masks) + schedule_problems(config)
    if problems:
        raise UserError(f"{'.'.join(map(str, problems[0][0]))}: {problems[0][1]}")
    ctx = LossContext(output=model.output, num_outputs=model.num_outputs, image_size=image_size(config),
                      has_masks=has_masks, class_weights=class_weights)
    built = []
    for i, (label, spec) in enumerate(zip(term_labels(specs), specs)):
        term = reg.build("loss", spec, ctx, field=f"train.loss.{i}")
        weight = spec["weight"]
        built.append((label, dict(weight) if isinstance(weight, dict) else float(weight), term))
    return LossTerms(built)
