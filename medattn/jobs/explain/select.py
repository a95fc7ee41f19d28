"""Which images the explain job explains, what the model says of them, and which class each map explains.

Planning reads :func:`compared_runs` (no torch import at module level)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import UserError
from ...store.rundir import ExperimentDir, RunDir

if TYPE_CHECKING:
    from torch import nn


def method_labels(methods: list[dict]) -> list[str]:
    """File labels for the methods: their names, numbered where a name repeats."""
    names = [m["name"] for m in methods]
    return [n if names.count(n) == 1 else f"{n}-{names[:i].count(n) + 1}" for i, n in enumerate(names)]


def placement(rd: RunDir, seed: int) -> tuple[ExperimentDir, str, int | None]:
    """(experiment folder, variant, repeat seed or None) of a run directory as :meth:`ExperimentDir.run` lays
    it out; ``seed`` is the run's config seed (a repeat's own seed under ``seeds:``)."""
    above = ExperimentDir(rd.root.parent.parent)
    if above.run(rd.root.parent.name, seed).root == rd.root:
        return above, rd.root.parent.name, seed
    return ExperimentDir(rd.root.parent), rd.root.name, None


def compared_runs(rd: RunDir, seed: int, listed: list[str]) -> dict[str, RunDir]:
    """``select: agreed``: {variant: run directory} of the variants to agree over (``explain.variants``, else
    every variant of the experiment on disk), this run's own included; with ``seeds:``, the runs of this seed."""
    experiment, variant, repeat = placement(rd, seed)
    names = list(listed) or sorted({r.root.name if r.root.parent == experiment.root else r.root.parent.name
                                    for r in experiment.runs()})
    if variant not in names:
        names.append(variant)
    return {name: experiment.run(name, repeat) for name in names}


def agreed_ids(rd: RunDir, seed: int, checkpoint: str, listed: list[str]) -> tuple[set[str], list[str]]:
    """Test image ids every other compared variant classifies correctly (the original's selection), from their
    test predictions; this run's own predictions are recomputed by :func:`select`."""
    runs = compared_runs(rd, seed, listed)
    ok: set[str] | None = None
    missing = []
    for name, other in runs.items():
        if other.root == rd.root:
            continue
        if not other.predictions(checkpoint).is_file():
            missing.append(name)
            continue
        right = {r["id"] for r in other.read_predictions(checkpoint) if r["label"] == r["prediction"]}
        ok = right if ok is None else ok & right
    if missing:
        raise UserError(f"explain.select: agreed needs the test predictions of every compared variant; missing "
                        f"{rd.predictions(checkpoint).name} for {', '.join(missing)} beside {rd.root}. Run "
                        f"the train and test jobs of every variant first (medattn run FILE --jobs train,test), then "
                        f"explain (--jobs explain,figure), or list the variants to compare in explain.variants")
    return (ok if ok is not None else set()), list(runs)


def candidate_order(cfg: dict, n_items: int, seed: int) -> tuple[list[int], int]:
    """(positions in the split to look at, in order; how many images to pick) for select first / random /
    correct / misclassified / indices / agreed."""
    n = min(int(cfg["samples"]), n_items)
    if cfg["select"] == "random":
        seed = seed if cfg["select_seed"] is None else int(cfg["select_seed"])
        return np.random.default_rng(seed).permutation(n_items).tolist(), n
    if cfg["select"] == "indices":
        order = [int(i) for i in cfg["indices"]]
        bad = [i for i in order if not 0 <= i < n_items]
        if not order or bad:
            raise UserError(f"explain.indices: {bad or 'empty'}: give indices in 0..{n_items - 1} of the "
                            f"{cfg['split']} split")
        return order, len(order)
    return list(range(n_items)), n


def wanted(mode: str, label: int, pred: int) -> bool:
    """Whether an image with this label and prediction qualifies for ``select: mode``."""
    right = int(pred) == int(label)
    if mode in ("correct", "agreed"):
        return right
    return not right if mode == "misclassified" else True


def select(run: Any, rd: RunDir, cfg: dict, model: nn.Module, ds) -> dict | None:
    """The images to explain and what the model says of them (predictions batched); None when none qualifies."""
    import torch

    from ...evidence.metrics import predictions

    order, n = candidate_order(cfg, len(ds), int(run.config["seed"]))
    allowed: set[str] | None = None
    if cfg["select"] == "agreed":
        allowed, names = agreed_ids(rd, run.config["seed"], cfg["checkpoint"], list(cfg["variants"]))
        run.log(f"   explain: images every variant classifies correctly ({', '.join(names)})")
    picked: list[tuple[int, dict, np.ndarray, dict]] = []  # (position, item, scores, attention maps)
    bs = int(cfg["batch_size"])
    for start in range(0, len(order), bs):
        chunk = [(i, ds[i]) for i in order[start:start + bs]]
        if allowed is not None:
            chunk = [(i, it) for i, it in chunk if str(it["id"]) in allowed]
        if not chunk:
            continue
        with torch.no_grad():
            score = model.probabilities(model(torch.stack([it["image"] for _, it in chunk]).to(run.device)))
            att = {k: v.detach().float().cpu().numpy() for k, v in model.attention_maps().items()}
        score = score.cpu().numpy()
        for j, ((i, it), s, p) in enumerate(zip(chunk, score, predictions(score))):
            if wanted(cfg["select"], it["label"], p):
                picked.append((i, it, s, {k: v[j] for k, v in att.items()}))
            if len(picked) == n:
                return chosen_arrays(picked)
    return chosen_arrays(picked) if picked else None


def chosen_arrays(picked: list[tuple[int, dict, np.ndarray, dict]]) -> dict:
    """The picked images as arrays: index, ids, labels, scores, preds, images (un-normalised), inputs (the model's
    tensors), attention (the attention module's maps, when it has any), masks and confound_masks (when every image
    has one)."""
    import torch

    from ...evidence.metrics import predictions

    items = [it for _, it, _, _ in picked]
    scores = np.stack([s for _, _, s, _ in picked])
    out = {
        "index": np.array([i for i, _, _, _ in picked]), "ids": np.array([str(it["id"]) for it in items]),
        "labels": np.array([int(it["label"]) for it in items]), "scores": scores,
        "preds": predictions(scores).astype(int),
        "images": torch.stack([it["raw"] for it in items]).numpy().astype(np.float32),
        "inputs": torch.stack([it["image"] for it in items]),
    }
    maps = picked[0][3]
    if maps:
        out["attention"] = {k: np.stack([m[k] for _, _, _, m in picked]) for k in maps}
    if all("mask" in it for it in items):
        out["masks"] = torch.stack([it["mask"] for it in items]).numpy().astype(np.float32)
    if all("confound_mask" in it for it in items):
        out["confound_masks"] = torch.stack([it["confound_mask"] for it in items]).numpy().astype(np.float32)
    return out


def targets_for(cfg: dict, model: nn.Module, chosen: dict) -> np.ndarray | None:
    """Class indices to explain: predicted (default), true, or a given class; None for a single-output model."""
    if model.output == "sigmoid":
        return None
    how = cfg["target"]
    if how == "predicted":
        return chosen["preds"].astype(int)
    if how == "true":
        return chosen["labels"].astype(int)
    if not 0 <= int(how) < model.num_outputs:
        raise UserError(f"explain.target: class {how} does not exist (the model has {model.num_outputs} outputs)")
    return np.full(len(chosen["labels"]), int(how))
