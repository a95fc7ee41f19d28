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


def needs(reg: Registry, spec: dict) -> list[str]:
    """What a term's record says it needs from the data set (``defaults["needs"]``, e.g. ``["masks"]``)."""
    return list(reg.get("loss", spec["name"]).defaults.get("needs", []))


def needs_masks(reg: Registry, config: dict) -> bool:
    """Whether any term of ``train.loss`` needs lesion masks."""
    return any("masks" in needs(reg, s) for s in (config.get("train") or {}).get("loss") or [])


def mask_problems(reg: Registry, config: dict, has_masks: bool) -> list[tuple[tuple, str]]:
    """(field path, message) for each term that needs masks when the data set gives none."""
    if has_masks:
        return []
    dataset = config["dataset"]["name"]
    return [(("train", "loss", i, "name"),
             f"loss {s['name']!r} needs lesion masks, but dataset {dataset!r} gives none (use a data set with "
             f"masks (see its params in `medattn plugins`), or drop the term)")
            for i, s in enumerate(config["train"]["loss"]) if "masks" in needs(reg, s)]


@dataclass
class LossTerms:
    """The built terms: (label, weight, term); called on a :class:`medattn.api.LossBatch`."""

    terms: list[tuple[str, float, Any]]
    needs_input_gradients: bool = False
    needs_features: bool = False
    needs_attention_maps: bool = False

    def __post_init__(self) -> None:
        self.needs_input_gradients = any(getattr(t, "needs_input_gradients", False) for _, _, t in self.terms)
        self.needs_features = any(getattr(t, "needs_features", False) for _, _, t in self.terms)
        self.needs_attention_maps = any(getattr(t, "needs_attention_maps", False) for _, _, t in self.terms)

    def to(self, device: Any) -> LossTerms:
        for _, _, term in self.terms:
            if hasattr(term, "to"):
                term.to(device)
        return self

    def __call__(self, batch: Any) -> tuple[Any, dict[str, Any]]:
        """(weighted sum, {label: detached value}); a single term of weight 1 is returned as it is (bit-exact)."""
        total, parts = None, {}
        for label, weight, term in self.terms:
            value = term(batch)
            parts[label] = value.detach()
            weighted = value if weight == 1.0 else value * weight
            total = weighted if total is None else total + weighted
        return total, parts


def build_losses(reg: Registry, config: dict, model: Any, has_masks: bool,
                 class_weights: list[float] | None) -> LossTerms:
    """The terms of ``train.loss`` for ``model``; a term that cannot be built is one UserError naming it."""
    from ..hookspecs import LossContext
    from .model import image_size

    specs = config["train"]["loss"]
    problems = mask_problems(reg, config, has_masks)
    if problems:
        raise UserError(f"{'.'.join(map(str, problems[0][0]))}: {problems[0][1]}")
    ctx = LossContext(output=model.output, num_outputs=model.num_outputs, image_size=image_size(config),
                      has_masks=has_masks, class_weights=class_weights)
    built = []
    for i, (label, spec) in enumerate(zip(term_labels(specs), specs)):
        term = reg.build("loss", spec, ctx, field=f"train.loss.{i}")
        built.append((label, float(spec["weight"]), term))
    return LossTerms(built)

