"""The training and evaluation loops shared by the train and test jobs."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .errors import UserError


def loss_function(model: nn.Module) -> nn.Module:
    """BCE-with-logits for a single-output (sigmoid) model, cross-entropy otherwise."""
    return nn.BCEWithLogitsLoss() if model.output == "sigmoid" else nn.CrossEntropyLoss()


def compute_loss(model: nn.Module, loss_fn: nn.Module, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if model.output == "sigmoid":
        return loss_fn(logits.reshape(-1), labels.float())
    return loss_fn(logits, labels.long())


def make_optimizer(model: nn.Module, spec: dict[str, Any]) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    name, lr, wd = spec.get("name", "adam"), float(spec.get("lr", 1e-4)), float(spec.get("weight_decay", 0.0))
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=float(spec.get("momentum", 0.0)))
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, weight_decay=wd)


def train_epoch(model: nn.Module, loader: Any, optimizer: torch.optim.Optimizer, device: torch.device,
                desc: str = "train") -> tuple[float, np.ndarray, np.ndarray]:
    """One pass over the loader; returns mean loss, labels and class scores (as predicted while training)."""
    model.train()
    loss_fn = loss_function(model)
    total, count, labels, scores = 0.0, 0, [], []
    bar = tqdm(loader, desc=desc, leave=False, unit="batch", dynamic_ncols=True)
    for batch in bar:
        x = batch["image"].to(device, non_blocking=True)
        y = batch["label"].to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        loss = compute_loss(model, loss_fn, logits, y)
        if not math.isfinite(loss.item()):
            raise UserError(f"{desc}: the loss became {loss.item()} (lower the learning rate or check the data); "
                            "the last good checkpoint is kept")
        loss.backward()
        optimizer.step()
        total += loss.item() * len(y)
        count += len(y)
        labels.append(y.cpu())
        scores.append(model.probabilities(logits.detach()).float().cpu())
        bar.set_postfix(loss=f"{total / count:.4f}")
    return total / max(count, 1), torch.cat(labels).numpy(), torch.cat(scores).numpy()


@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, device: torch.device, desc: str = "eval"
             ) -> tuple[float, np.ndarray, np.ndarray, list[str]]:
    """Mean loss, labels, class scores and sample ids over a loader, in eval mode."""
    model.eval()
    loss_fn = loss_function(model)
    total, count, labels, scores, ids = 0.0, 0, [], [], []
    for batch in tqdm(loader, desc=desc, leave=False, unit="batch", dynamic_ncols=True):
        x = batch["image"].to(device, non_blocking=True)
        y = batch["label"].to(device, non_blocking=True)
        logits = model(x)
        total += compute_loss(model, loss_fn, logits, y).item() * len(y)
        count += len(y)
        labels.append(y.cpu())
        scores.append(model.probabilities(logits).float().cpu())
        ids.extend(str(i) for i in batch["id"])
    return total / max(count, 1), torch.cat(labels).numpy(), torch.cat(scores).numpy(), ids
