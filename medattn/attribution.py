"""Attribution over a run (the explain job's implementation): attributions of selected images for each configured explainer, saved under explanations/.

Files: ``samples.npz`` (images un-normalised, labels, scores, ids, masks when the data set has them) and one
``<method>.npz`` per explainer with ``attributions`` (N, C, H, W) aligned with the samples.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .config.schema import component_params
from .errors import UserError
from .hookspecs import ExplainContext
from .metrics import predictions


def prepare_for_attribution(model: nn.Module) -> nn.Module:
    """A copy of the model safe for hook-based attribution: no in-place activations."""
    prepared = copy.deepcopy(model).eval()
    for module in prepared.modules():
        if hasattr(module, "inplace") and isinstance(module.inplace, bool):
            module.inplace = False
    for p in prepared.parameters():
        p.requires_grad_(False)
    return prepared


def method_labels(methods: list[dict]) -> list[str]:
    """File labels for the methods: their names, numbered where a name repeats."""
    names = [m["name"] for m in methods]
    return [n if names.count(n) == 1 else f"{n}-{names[:i].count(n) + 1}" for i, n in enumerate(names)]


def select(run, cfg: dict, model: nn.Module, ds) -> dict:
    """The images to explain and what the model says of them."""
    n = min(int(cfg["samples"]), len(ds))
    order = list(range(len(ds)))
    if cfg["select"] == "random":
        order = np.random.default_rng(int(run.config.get("seed", 42))).permutation(len(ds)).tolist()
    picked, items = [], []
    with torch.no_grad():
        for i in order:
            item = ds[i]
            score = model.probabilities(model(item["image"][None].to(run.device))).cpu().numpy()
            pred = int(predictions(score)[0])
            if cfg["select"] == "correct" and pred != item["label"]:
                continue
            if cfg["select"] == "misclassified" and pred == item["label"]:
                continue
            picked.append(i)
            items.append((item, score[0], pred))
            if len(picked) == n:
                break
    if not picked:
        raise UserError(f"explain.select: {cfg['select']}: no {cfg['split']} image qualifies")
    out = {
        "index": np.array(picked), "ids": np.array([str(it["id"]) for it, _, _ in items]),
        "labels": np.array([int(it["label"]) for it, _, _ in items]),
        "scores": np.stack([s for _, s, _ in items]), "preds": np.array([p for _, _, p in items]),
        "images": torch.stack([it["raw"] for it, _, _ in items]).numpy().astype(np.float32),
        "inputs": torch.stack([it["image"] for it, _, _ in items]),
    }
    if all("mask" in it for it, _, _ in items):
        out["masks"] = torch.stack([it["mask"] for it, _, _ in items]).numpy().astype(np.float32)
    return out


def explain_run(run) -> None:
    cfg = run.config["explain"]
    if not cfg["methods"]:
        raise UserError("explain.methods: empty; list at least one explainer (see `medattn plugins`)")
    _, splits = run.data()
    model = run.load_model(cfg["checkpoint"])
    chosen = select(run, cfg, model, splits[cfg["split"]])
    inputs = chosen.pop("inputs")
    np.savez_compressed(run.path("explanations", "samples.npz"), **chosen)
    prepared = prepare_for_attribution(model)
    bs = int(cfg["batch_size"])
    ctx = ExplainContext(model=prepared, num_outputs=model.num_outputs, batch_size=bs)
    for spec, label in zip(cfg["methods"], method_labels(cfg["methods"])):
        explainer = run.registry.factory("explainer", spec["name"])(component_params(run.registry, "explainer", spec), ctx)
        parts = []
        for start in tqdm(range(0, len(inputs), bs), desc=f"explain {label}", leave=False, unit="batch"):
            x = inputs[start:start + bs].to(run.device)
            target = None if model.output == "sigmoid" else torch.as_tensor(chosen["preds"][start:start + bs],
                                                                             device=run.device)
            attr = explainer(prepared, x, target)
            parts.append(attr.detach().float().cpu())
        attributions = torch.cat(parts).numpy()
        np.savez_compressed(run.path("explanations", f"{label}.npz"), attributions=attributions,
                            method=spec["name"], params=repr(spec.get("params", {})))
        run.log(f"   explain {label}: {attributions.shape[0]} image(s) -> explanations/{label}.npz")
