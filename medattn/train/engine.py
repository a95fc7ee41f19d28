"""The training and evaluation loops shared by the train and test jobs, and the pieces they are built from:
loss (with class weights), optimiser, scheduler, mixed precision, loaders, determinism and RNG states."""
from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import reproducible
from ..errors import UserError


class NonFiniteLoss(UserError):
    """The training loss became NaN or infinite."""


# ---------------------------------------------------------------------------------------------------------------
# loss, optimiser, scheduler


def loss_function(model: nn.Module, class_weights: list[float] | None = None) -> nn.Module:
    """BCE-with-logits for a single-output (sigmoid) model, cross-entropy otherwise; class weights optional.

    For a sigmoid model the weights [w0, w1] become ``pos_weight = w1 / w0``.
    """
    if model.output == "sigmoid":
        if class_weights:
            return nn.BCEWithLogitsLoss(pos_weight=torch.tensor([class_weights[1] / class_weights[0]]))
        return nn.BCEWithLogitsLoss()
    if class_weights:
        return nn.CrossEntropyLoss(weight=torch.tensor(class_weights, dtype=torch.float32))
    return nn.CrossEntropyLoss()


def compute_loss(model: nn.Module, loss_fn: nn.Module, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The loss of a batch, shaped for the model's output kind."""
    if model.output == "sigmoid":
        return loss_fn(logits.reshape(-1).float(), labels.float())
    return loss_fn(logits.float(), labels.long())


def class_weights_for(spec: Any, labels: list[int], n_classes: int) -> list[float] | None:
    """``none`` -> None, ``balanced`` -> n / (k * count_c) (sklearn's rule), or the given list (checked)."""
    if spec in (None, "none"):
        return None
    if spec == "balanced":
        from sklearn.utils.class_weight import compute_class_weight

        present = sorted(set(labels))
        if len(present) != n_classes:
            raise UserError(f"train.class_weights: balanced needs every class in the training split "
                            f"(found classes {present} of {n_classes})")
        return [float(w) for w in compute_class_weight("balanced", classes=np.arange(n_classes), y=np.asarray(labels))]
    weights = [float(w) for w in spec]
    if len(weights) != n_classes:
        raise UserError(f"train.class_weights: {len(weights)} weights for {n_classes} classes")
    return weights


def make_optimizer(model: nn.Module, spec: dict[str, Any]) -> torch.optim.Optimizer:
    """adam | adamw | sgd (momentum, nesterov) with weight decay, over the trainable parameters
    (``spec``: the validated ``train.optimizer`` section)."""
    params = [p for p in model.parameters() if p.requires_grad]
    name, lr, wd = spec["name"], float(spec["lr"]), float(spec["weight_decay"])
    if name == "sgd":
        momentum, nesterov = float(spec["momentum"]), bool(spec["nesterov"])
        if nesterov and momentum <= 0:
            raise UserError("train.optimizer.nesterov: needs momentum > 0")
        return torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=momentum, nesterov=nesterov)
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, weight_decay=wd, betas=tuple(spec["betas"]))  # type: ignore[arg-type]


def make_scheduler(optimizer: torch.optim.Optimizer, spec: dict[str, Any], epochs: int) -> Any:
    """none | plateau (Keras ReduceLROnPlateau semantics: absolute min_delta) | cosine | step; stepped per epoch
    (``spec``: the validated ``train.scheduler`` section)."""
    name = spec["name"]
    if name == "none":
        return None
    if name == "plateau":
        from ..evidence.metrics import mode_of

        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=mode_of(spec["monitor"]) if spec["mode"] == "auto" else spec["mode"],
            factor=float(spec["factor"]), patience=int(spec["patience"]), threshold=float(spec["min_delta"]),
            threshold_mode="abs", cooldown=int(spec["cooldown"]), min_lr=float(spec["min_lr"]))
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(spec["t_max"] or epochs),
                                                          eta_min=float(spec["min_lr"]))
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=int(spec["step_size"]), gamma=float(spec["gamma"]))
    raise UserError(f"train.scheduler.name: unknown scheduler {name!r}")


def restore_scheduler(scheduler: Any, state: dict[str, Any], spec: dict[str, Any], epochs: int) -> None:
    """Load a saved scheduler state. A cosine schedule whose length follows ``train.epochs`` (``t_max: null``)
    takes the new length when a run is continued to more epochs, and goes on from the point of the longer
    curve that the epochs done reach (the saved curve would restart its cycle, upwards)."""
    if scheduler is None or not state:
        return
    if not isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR) or spec["t_max"] is not None \
            or state["T_max"] == epochs:
        scheduler.load_state_dict(state)
        return
    scheduler.load_state_dict({**state, "T_max": epochs})
    done, eta_min = scheduler.last_epoch, scheduler.eta_min
    lrs = [eta_min + (base - eta_min) * (1 + math.cos(math.pi * done / epochs)) / 2 for base in scheduler.base_lrs]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = lrs  # what get_last_lr() reports, as after a step


def scheduler_step(scheduler: Any, spec: dict[str, Any], row: dict[str, float]) -> None:
    """Advance the scheduler after an epoch (plateau reads its monitored value from the history row)."""
    if scheduler is None:
        return
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        monitor = spec["monitor"]
        if monitor not in row:
            raise UserError(f"train.scheduler.monitor: {monitor!r} is not measured; have {', '.join(row)}")
        scheduler.step(row[monitor])
    else:
        scheduler.step()


# ---------------------------------------------------------------------------------------------------------------
# precision, memory format, determinism


@dataclass
class Precision:
    """Mixed-precision settings resolved for a device: autocast dtype (or None) and a GradScaler."""

    dtype: torch.dtype | None = None
    scaler: Any = None
    channels_last: bool = False

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """torch.autocast for the configured dtype, or a no-op."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)


def precision_for(device: torch.device, amp: str, channels_last: bool, log: Callable[[str], None]) -> Precision:
    """AMP (bf16, or fp16 with a GradScaler) and channels_last, on CUDA only; off elsewhere (said once)."""
    if device.type != "cuda":
        if amp != "none" or channels_last:
            log(f"   train: amp/channels_last apply to CUDA only; off on {device}")
        return Precision()
    dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    if dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise UserError(f"train.amp: bf16 is not supported on {torch.cuda.get_device_name(device)}; use fp16")
    scaler = torch.amp.GradScaler("cuda", enabled=dtype is torch.float16)
    return Precision(dtype, scaler, channels_last)


def configure_determinism(deterministic: bool) -> None:
    """``deterministic: true``, and always in the reproducible mode: torch deterministic algorithms, no cuDNN
    autotuning, fixed cuBLAS workspace (:func:`medattn.reproducible.deterministic_algorithms`); else they are off."""
    if deterministic or reproducible.active():
        reproducible.deterministic_algorithms()
    elif torch.are_deterministic_algorithms_enabled():  # (imports torch._inductor: 2 s)
        torch.use_deterministic_algorithms(False)


def rng_states() -> dict[str, Any]:
    """Every global RNG state (python, numpy, torch CPU, each CUDA device) for an exact resume, as tensors,
    lists and numbers only, so that a checkpoint holding them loads with ``torch.load(weights_only=True)``."""
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "python": {"version": version, "state": list(words), "gauss": gauss},
        "numpy": {"kind": kind, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` captured."""
    py, npy = states["python"], states["numpy"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    np.random.set_state((npy["kind"], np.asarray(npy["keys"], dtype=np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# ---------------------------------------------------------------------------------------------------------------
# loaders


@dataclass
class LoaderSettings:
    """DataLoader knobs from the experiment file (``dataset.num_workers`` and ``train.loader``)."""

    num_workers: int
    pin_memory: str | bool  # "auto": on CUDA
    persistent_workers: bool
    prefetch_factor: int


def make_loader(ds: Any, batch_size: int, shuffle: bool, seed: int, device: torch.device,
                settings: LoaderSettings, sampler: Any = None, drop_last: bool = False
                ) -> torch.utils.data.DataLoader:
    """A DataLoader whose shuffling and worker seeds come from ``seed`` (torch seeds each worker's python,
    numpy and torch RNG from the loader's generator), with pinned memory / workers / prefetch as configured."""
    s = settings
    gen = torch.Generator()
    gen.manual_seed(seed)
    pin = device.type == "cuda" if s.pin_memory == "auto" else bool(s.pin_memory)
    extra: dict[str, Any] = {}
    if s.num_workers > 0:
        extra = {"persistent_workers": s.persistent_workers, "prefetch_factor": s.prefetch_factor}
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=shuffle and sampler is None,
                                       sampler=sampler, num_workers=s.num_workers, generator=gen,
                                       pin_memory=pin, drop_last=drop_last, **extra)


# ---------------------------------------------------------------------------------------------------------------
# loops


@dataclass
class Outputs:
    """What a pass over a loader collected: mean loss, labels, scores, ids, groups, images, seconds."""

    loss: float
    labels: np.ndarray
    scores: np.ndarray
    ids: list[str] = field(default_factory=list)
    groups: list[str] | None = None
    images: int = 0
    seconds: float = 0.0
    index: np.ndarray | None = None  # dataset indices, in loader order (for de-duplicating DDP shards)
    terms: dict[str, float] = field(default_factory=dict)  # mean of each train.loss term (training passes)
    logits: np.ndarray | None = None  # (N, outputs) float32 (evaluation passes): what calibration is fitted on

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def bar(iterable: Any, desc: str, progress: bool, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr, shown only when ``progress`` and stderr is a terminal (never ``\\r`` in a log)."""
    return tqdm(iterable, desc=desc, dynamic_ncols=True, disable=None if progress else True, **kwargs)


def _batches(loader: Any, desc: str, progress: bool) -> Iterator[Any]:
    return iter(bar(loader, desc, progress, leave=False, unit="batch"))


def _to(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x


SYNC_EVERY = 64  # steps whose losses stay on the device before they are read back (one host sync for all)


class LossSum:
    """The sum of (batch loss x images) over a pass, without a host sync per step.

    Each step's loss stays on the device; the pending ones are read back together (``flush``: one sync) every
    :data:`SYNC_EVERY` steps, when a progress bar is redrawn and at the end, and are added in Python in step order,
    exactly as reading each loss with ``.item()`` did (the same float64 sums: history.csv keeps its digits). A
    non-finite training loss raises :class:`NonFiniteLoss` naming its batch, at the flush that reads it (the steps
    in between have run; nothing of them is saved, since the epoch does not end)."""

    def __init__(self, desc: str, n_batches: int) -> None:
        self.desc, self.n_batches = desc, n_batches
        self.total, self.count = 0.0, 0
        self._pending: list[tuple[int, torch.Tensor, int, bool]] = []

    def add(self, step: int, loss: torch.Tensor, images: int, check: bool = True) -> None:
        """Keep one step's loss (on its device); ``check``: a non-finite value raises (training passes)."""
        self._pending.append((step, loss.detach().reshape(1), images, check))
        if len(self._pending) >= SYNC_EVERY:
            self.flush()

    def flush(self) -> float:
        """Read the pending losses back (one sync) and add them; returns the mean loss so far."""
        if self._pending:
            values = torch.cat([loss for _, loss, _, _ in self._pending]).tolist()
            pending, self._pending = self._pending, []
            for (step, _, images, check), value in zip(pending, values):
                if check and not math.isfinite(value):
                    raise NonFiniteLoss(f"{self.desc}: the loss became {value} at batch {step + 1}/{self.n_batches}")
                self.total += value * images
                self.count += images
        return self.total / max(self.count, 1)


def train_epoch(model: nn.Module, loader: Any, optimizer: torch.optim.Optimizer, device: torch.device,
                desc: str = "train", loss_fn: nn.Module | None = None, precision: Precision | None = None,
                accumulate: int = 1, clip_norm: float = 0.0, forward: nn.Module | None = None,
                progress: bool = True, terms: Any = None) -> Outputs:
    """One pass over the loader with gradient accumulation and clipping; returns the mean (unscaled) loss,
    the labels and the class scores as predicted while training. ``forward`` is the wrapped module (DDP /
    compiled) when there is one; ``model`` carries ``output`` / ``probabilities``. ``terms``: the
    :class:`medattn.components.losses.LossTerms` of ``train.loss`` (None: the classification loss alone); the mean of each
    term goes to ``Outputs.terms``."""
    net = forward if forward is not None else model
    net.train()
    prec = precision or Precision()
    loss_fn = (loss_fn or loss_function(model)).to(device)
    scaler = prec.scaler
    labels, scores, term_sums = [], [], {}
    n_batches = len(loader)
    losses = LossSum(desc, n_batches)
    t0 = shown = time.perf_counter()
    batches = bar(loader, desc, progress, leave=False, unit="batch")
    optimizer.zero_grad(set_to_none=True)
    try:
        for step, batch in enumerate(batches):
            x = _to(batch["image"], device, prec.channels_last)
            y = batch["label"].to(device, non_blocking=True)
            boundary = (step + 1) % accumulate == 0 or step + 1 == n_batches
            sync = contextlib.nullcontext() if boundary or not hasattr(net, "no_sync") else net.no_sync()
            with sync:
                with prec.autocast(device):
                    if terms is None:
                        logits = net(x)
                        loss = compute_loss(model, loss_fn, logits, y)
                    else:
                        scale = scaler.get_scale() if scaler is not None and scaler.is_enabled() else 1.0
                        logits, loss, parts = _terms_loss(model, net, terms, batch, x, y, loss_fn, scale)
                        if scale != 1.0 and _scaled_gradients_overflowed(scaler, terms, loss):
                            optimizer.zero_grad(set_to_none=True)  # the window is lost, as a skipped step's
                            continue
                        for key, part in parts.items():
                            term_sums[key] = term_sums.get(key, 0.0) + part.float() * len(y)
                losses.add(step, loss, len(y))
                scaled = loss / accumulate
                (scaler.scale(scaled) if scaler is not None and scaler.is_enabled() else scaled).backward()
            if boundary:
                if scaler is not None and scaler.is_enabled():
                    if clip_norm > 0:
                        scaler.unscale_(optimizer)
                        nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    if clip_norm > 0:
                        nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            labels.append(y.detach())
            scores.append(model.probabilities(logits.detach()).float())
            if not batches.disable and time.perf_counter() - shown >= 0.5:  # a redraw reads the losses back
                shown = time.perf_counter()
                batches.set_postfix(loss=f"{losses.flush():.4f}", img_s=f"{losses.count / (shown - t0):.0f}")
        loss = losses.flush()
    except Exception:
        losses.flush()  # a non-finite loss among the pending ones is the cause to report, not what it led to
        raise
    seconds = time.perf_counter() - t0
    count = losses.count
    return Outputs(loss, torch.cat(labels).cpu().numpy() if labels else np.zeros(0, int),
                   torch.cat(scores).cpu().numpy() if scores else np.zeros(0), images=count, seconds=seconds,
                   terms={k: float(v) / max(count, 1) for k, v in term_sums.items()})


def _scaled_gradients_overflowed(scaler: Any, terms: Any, loss: torch.Tensor) -> bool:
    """Under fp16 with a GradScaler, whether a non-finite loss is the overflow of a term's scaled gradients
    (input gradients, a Grad-CAM): then the scale is lowered (the GradScaler's backoff, as after an overflowing
    backward) and the step skipped. It reads the loss back (one sync per step, only for such terms under fp16).
    Below a scale of 1 scaling is not the cause any more: the loss itself diverged (LossSum reports it)."""
    if not (terms.needs_input_gradients or terms.needs_features) or scaler.get_scale() <= 1.0:
        return False
    if bool(torch.isfinite(loss.detach()).all()):
        return False
    scaler.update(scaler.get_scale() * scaler.get_backoff_factor())
    return True


class _MapsNotAsked(Mapping):
    """``LossBatch.attention`` when no term declared ``needs_attention_maps``: the maps are not built (the position
    attention's (B, N, N) weights would be, with their graph, on every step), and a term that reads them anyway gets
    an error that says what to declare, not an empty dict that looks like a module without maps."""

    def _refuse(self) -> NoReturn:
        raise UserError("a loss term of train.loss reads LossBatch.attention, but no term declares "
                        "needs_attention_maps = True, so the attention maps were not built; set that attribute on "
                        "the term (as the built-in attention_mask does)")

    def __getitem__(self, key: str) -> Any:
        self._refuse()

    def __iter__(self) -> Iterator[str]:
        self._refuse()

    def __len__(self) -> int:
        self._refuse()

    def __repr__(self) -> str:
        return "<attention maps not asked for>"


MAPS_NOT_ASKED = _MapsNotAsked()


def _terms_loss(model: nn.Module, net: nn.Module, terms: Any, batch: dict, x: torch.Tensor, y: torch.Tensor,
                loss_fn: nn.Module, grad_scale: float = 1.0
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """(logits, weighted loss, {term: value}) of one batch through the terms of ``train.loss``: the forward
    with what the terms asked for (input gradients, the backbone's levels and the attention's output; the attention
    maps only when a term declares ``needs_attention_maps``), then each term on a LossBatch (``grad_scale``: the
    fp16 GradScaler's scale, for the terms' own gradients)."""
    from ..hookspecs import LossBatch

    if terms.needs_input_gradients:
        x = x.detach().requires_grad_(True)
    seen: dict[str, Any] = {}
    hook = (model.attention.register_forward_hook(lambda mod, args, out: seen.update(features=args[0], attended=out))
            if terms.needs_features else None)
    try:
        logits = net(x)
    finally:
        if hook is not None:
            hook.remove()
    masks, confound = batch.get("mask"), batch.get("confound_mask")
    groups = batch.get("group")
    lb = LossBatch(images=x, labels=y, logits=logits, model=model, ids=[str(i) for i in batch["id"]],
                   masks=masks.to(x.device, non_blocking=True).float() if masks is not None else None,
                   groups=[str(g) for g in groups] if groups is not None else None,
                   attention=(model.attention_maps() if hasattr(model, "attention_maps") else {})
                   if terms.needs_attention_maps else MAPS_NOT_ASKED,
                   features=seen.get("features"), attended=seen.get("attended"),
                   classification=lambda z: compute_loss(model, loss_fn, z, y), grad_scale=grad_scale,
                   confound_masks=confound.to(x.device, non_blocking=True).float() if confound is not None else None)
    loss, parts = terms(lb)
    return logits, loss, parts


@torch.no_grad()
def collect(model: nn.Module, loader: Any, device: torch.device, desc: str = "eval",
            precision: Precision | None = None, forward: nn.Module | None = None, progress: bool = True,
            loss_fn: nn.Module | None = None) -> Outputs:
    """Mean loss, labels, class scores, ids and groups over a loader, in eval mode."""
    net = forward if forward is not None else model
    net.eval()
    prec = precision or Precision()
    loss_fn = (loss_fn or loss_function(model)).to(device)
    labels, scores, ids, groups, raw = [], [], [], [], []
    losses = LossSum(desc, 0)  # not checked: a non-finite evaluation loss is recorded as it is
    t0 = time.perf_counter()
    for step, batch in enumerate(_batches(loader, desc, progress)):
        x = _to(batch["image"], device, prec.channels_last)
        y = batch["label"].to(device, non_blocking=True)
        with prec.autocast(device):
            logits = net(x)
        losses.add(step, compute_loss(model, loss_fn, logits, y), len(y), check=False)
        labels.append(y)
        scores.append(model.probabilities(logits.float()).float())
        raw.append(logits.detach().float().reshape(len(y), -1))
        ids.extend(str(i) for i in batch["id"])
        if "group" in batch:
            groups.extend(str(g) for g in batch["group"])
    loss = losses.flush()
    count = losses.count
    return Outputs(loss, torch.cat(labels).cpu().numpy() if labels else np.zeros(0, int),
                   torch.cat(scores).cpu().numpy() if scores else np.zeros(0), ids,
                   groups if len(groups) == count and count else None, count, time.perf_counter() - t0,
                   logits=torch.cat(raw).cpu().numpy() if raw else None)


def split_metadata(ds: Any) -> dict[str, dict[str, str]]:
    """{image id: metadata columns} of a (prepared) split, from the data set's ``metadata()`` when it has one
    (a data set's own columns, e.g. the site of each image), else empty."""
    base = getattr(ds, "base", ds)
    found = getattr(base, "metadata", None)
    return dict(found()) if callable(found) else {}


def split_labels(ds: Any) -> list[int]:
    """Every label of a (prepared) split, from a ``labels()`` / ``labels`` / ``targets`` of the dataset when it
    has one, else by reading the items."""
    base = getattr(ds, "base", ds)
    for attr in ("labels", "targets"):
        value = getattr(base, attr, None)
        if callable(value):
            value = value()
        if value is not None and len(value) == len(base):
            return [int(v) for v in value]
    return [int(base[i]["label"]) for i in range(len(base))]
