"""The train job: builds the model, optimiser, loaders and callbacks of a run and hands them to the trainer.

Writes ``checkpoints/last.pt`` (resume) and ``best_*.pt`` (self-contained model files, see
:mod:`medattn.store.checkpoints`) and ``metrics/history.csv``. An interrupted run resumes exactly from last.pt; a
finished one given more epochs continues from it (:mod:`medattn.train.trainer`). Under ``torchrun`` the model is
wrapped in DDP and only rank 0 writes files.
"""
from __future__ import annotations

from typing import Any

from ..errors import UserError
from ..params import slot
from .base import Job
from .checkpoint_names import CHECKPOINT_NAMES, EXPLANATION, METRIC_NAMES

MONITOR = "^(train|val)_(" + "|".join(METRIC_NAMES) + ")$"  # the scheduler steps before the callbacks run
STOP_MONITOR = "^((train|val)_(" + "|".join(METRIC_NAMES) + ")|" + EXPLANATION + ")$"
BEST = "^best_((train|val)_(" + "|".join(METRIC_NAMES) + ")|" + EXPLANATION + ")$"


def _key(schema: dict, default: Any, description: str) -> dict:
    return {**schema, "default": default, "description": description}


PARAMS = {
    "type": "object", "additionalProperties": False, "default": {},
    "description": "training: optimiser, schedule, epochs, batch size, augmentation, checkpoints, precision",
    "properties": {
        "epochs": _key({"type": "integer", "minimum": 1}, 10, "passes over the training split"),
        "batch_size": _key({"type": "integer", "minimum": 1}, 32, "images per step (per process under torchrun)"),
        "accumulate": _key({"type": "integer", "minimum": 1}, 1,
                           "gradient accumulation: optimiser step every N batches (effective batch N x batch_size)"),
        "optimizer": {
            "type": "object", "additionalProperties": False, "default": {}, "description": "optimiser settings",
            "properties": {
                "name": _key({"enum": ["adam", "adamw", "sgd"]}, "adam", "torch.optim class"),
                "lr": _key({"type": "number", "exclusiveMinimum": 0}, 1.0e-4, "learning rate"),
                "weight_decay": _key({"type": "number", "minimum": 0}, 0.0,
                                     "weight decay (L2 for adam/sgd, decoupled for adamw)"),
                "momentum": _key({"type": "number", "minimum": 0, "maximum": 1}, 0.0, "SGD momentum"),
                "nesterov": _key({"type": "boolean"}, False, "SGD Nesterov momentum (needs momentum > 0)"),
                "betas": _key({"type": "array", "items": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                               "minItems": 2, "maxItems": 2}, [0.9, 0.999], "Adam/AdamW betas"),
            },
        },
        "scheduler": {
            "type": "object", "additionalProperties": False, "default": {},
            "description": "learning-rate schedule, stepped once per epoch",
            "properties": {
                "name": _key({"enum": ["none", "plateau", "cosine", "step"]}, "none",
                             "none; plateau = ReduceLROnPlateau (Mishra: monitor train_loss, factor 0.1, "
                             "patience 10, min_delta 1e-4); cosine = CosineAnnealingLR; step = StepLR"),
                "monitor": _key({"type": "string", "pattern": MONITOR}, "train_loss",
                                "plateau: the history value watched (train_/val_ + loss or a metric)"),
                "mode": _key({"enum": ["auto", "min", "max"]}, "auto",
                             "plateau: min or max; auto = min for losses, max for metrics"),
                "factor": _key({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}, 0.1,
                               "plateau: lr multiplier on a plateau"),
                "patience": _key({"type": "integer", "minimum": 0}, 10, "plateau: epochs without improvement"),
                "min_delta": _key({"type": "number", "minimum": 0}, 1.0e-4,
                                  "plateau: absolute change that counts as an improvement (Keras epsilon)"),
                "cooldown": _key({"type": "integer", "minimum": 0}, 0, "plateau: epochs to wait after a cut"),
                "min_lr": _key({"type": "number", "minimum": 0}, 0.0, "plateau/cosine: lower bound of the lr"),
                "t_max": _key({"type": ["integer", "null"], "minimum": 1}, None,
                              "cosine: epochs of the half cosine (null: train.epochs)"),
                "step_size": _key({"type": "integer", "minimum": 1}, 30, "step: epochs between cuts"),
                "gamma": _key({"type": "number", "exclusiveMinimum": 0}, 0.1, "step: lr multiplier per cut"),
            },
        },
        "clip_grad_norm": _key({"type": "number", "minimum": 0}, 0.0,
                               "clip the global gradient norm to this value (0: no clipping)"),
        "class_weights": _key({"anyOf": [{"enum": ["none", "balanced"]},
                                         {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0},
                                          "minItems": 2}]}, "none",
                              "loss weights per class: none, balanced (n / (k * count)) or a list; for a "
                              "sigmoid model [w0, w1] becomes pos_weight w1 / w0"),
        "augment": slot("transform", "train-time augmentation preset (a transform component)"),
        "loss": _key({"type": "array", "minItems": 1,
                      "items": slot("loss", "a loss term", {
                          "weight": {"anyOf": [
                              {"type": "number", "minimum": 0},
                              {"type": "object", "additionalProperties": False, "required": ["start", "end", "epochs"],
                               "properties": {
                                   "start": {"type": "number", "minimum": 0, "description": "weight in the first epoch"},
                                   "end": {"type": "number", "minimum": 0,
                                           "description": "weight from epoch `epochs` + 1 on"},
                                   "epochs": {"type": "integer", "minimum": 1,
                                              "description": "epochs of the linear warm-up from start to end"}}}],
                              "default": 1.0,
                              "description": "the term's weight in the training loss: a number, or a warm-up "
                                             "{start, end, epochs} (linear from start in the first epoch to end "
                                             "after `epochs` epochs)"}})},
                     [{"name": "classification"}],
                     "the training loss: a weighted sum of loss terms, e.g. [{name: classification}, {name: "
                     "attention_mask, weight: 1.0}]; each is logged per epoch as loss_<term> (validation loss: "
                     "the classification loss)"),
        "explanation_score": {
            "type": ["object", "null"], "additionalProperties": False, "required": ["explainer"], "default": None,
            "description": "a localisation score of an explainer's maps on the first validation images, measured "
                           "every epoch as the history column val_explanation: keep the checkpoint that looks "
                           "most at the lesion with train.checkpoints: [..., best_val_explanation] (needs masks)",
            "properties": {
                "explainer": slot("explainer", "the attribution method scored"),
                "score": _key({"enum": ["energy_in_mask", "pointing_game", "iou_top"]}, "energy_in_mask",
                              "the localisation score (higher is better)"),
                "samples": _key({"type": "integer", "minimum": 1}, 64, "validation images scored"),
                "batch_size": _key({"type": "integer", "minimum": 1}, 16, "images per attribution call"),
            },
        },
        "checkpoints": _key({"type": "array", "uniqueItems": True,
                             "items": {"type": "string", "pattern": BEST}},
                            CHECKPOINT_NAMES[:2],
                            "best checkpoints kept besides last.pt: best_<train|val>_<loss|metric>, min for "
                            "loss/brier/ece and max otherwise (the original's pair: lowest val and train loss), "
                            "or best_val_explanation (train.explanation_score)"),
        "early_stopping": {
            "type": "object", "additionalProperties": False, "default": {},
            "description": "stop when the monitored value has not improved for `patience` epochs",
            "properties": {
                "patience": _key({"type": "integer", "minimum": 0}, 0, "epochs without improvement (0: off)"),
                "monitor": _key({"type": "string", "pattern": STOP_MONITOR}, "val_loss", "history value watched"),
                "min_delta": _key({"type": "number", "minimum": 0}, 0.0, "change that counts as an improvement"),
            },
        },
        "deterministic": _key({"type": "boolean"}, False,
                              "torch.use_deterministic_algorithms(True), cuDNN benchmark off (slower on GPU)"),
        "amp": _key({"enum": ["none", "bf16", "fp16"]}, "none",
                    "CUDA mixed precision: bf16, or fp16 with a GradScaler (ignored on CPU)"),
        "channels_last": _key({"type": "boolean"}, False, "CUDA: NHWC memory format for model and inputs"),
        "compile": _key({"type": "boolean"}, False, "torch.compile the model before training"),
        "loader": {
            "type": "object", "additionalProperties": False, "default": {},
            "description": "DataLoader settings (worker count: dataset.num_workers)",
            "properties": {
                "pin_memory": _key({"enum": ["auto", True, False]}, "auto",
                                   "page-locked host memory + non-blocking copies (auto: on CUDA)"),
                "persistent_workers": _key({"type": "boolean"}, False,
                                           "keep workers between epochs (faster; with random augmentation in "
                                           "workers a resumed run is no longer bit-identical)"),
                "prefetch_factor": _key({"type": "integer", "minimum": 1}, 2, "batches loaded ahead per worker"),
            },
        },
        "progress": _key({"type": "boolean"}, True,
                         "tqdm bars with loss and throughput when stderr is a terminal (else a log line per epoch)"),
        "tensorboard": _key({"enum": ["auto", True, False]}, "auto",
                            "write runs/.../tensorboard event files (auto: when tensorboard is installed)"),
    },
}

class TrainJob(Job):
    """Train the run's model, or resume or continue it from last.pt; see the module docstring."""

    name = "train"
    writes = ("checkpoint", "history")
    distributed = True

    def check(self, config: dict[str, Any]) -> list[str | tuple[tuple, str]]:
        """What reads the explanation score (the best_val_explanation checkpoint, early stopping on it) needs
        train.explanation_score; a term's weight schedule must fit in train.epochs."""
        from ..components.losses import schedule_problems

        cfg, out = config["train"], list(schedule_problems(config))
        if not cfg["explanation_score"]:
            need = (f"needs train.explanation_score (e.g. explanation_score: {{explainer: {{name: saliency}}}}), "
                    f"which measures {EXPLANATION} every epoch; without it the checkpoint is never written")
            out += [(("train", "checkpoints", i), f"best_{EXPLANATION} {need}")
                    for i, name in enumerate(cfg["checkpoints"]) if name == f"best_{EXPLANATION}"]
            if cfg["early_stopping"]["patience"] > 0 and cfg["early_stopping"]["monitor"] == EXPLANATION:
                out.append((("train", "early_stopping", "monitor"), f"{EXPLANATION} {need}"))
        return out

    def check_model(self, config: dict[str, Any], model: Any) -> list[tuple[tuple, str]]:
        """What a loss term can only check against the built model (the attention maps it names)."""
        from ..components.losses import model_problems

        return model_problems(self.registry, config, model)

    def check_data(self, config: dict[str, Any], bundle: Any, splits: dict[str, Any]) -> list[tuple[tuple, str]]:
        """A loss term that needs masks on a data set without them."""
        from ..components.losses import mask_problems

        found = mask_problems(self.registry, config, bool(bundle.has_masks),
                              bool(getattr(bundle, "has_confound_masks", False)))
        if config["train"]["explanation_score"] and not bundle.has_masks:
            found.append((("train", "explanation_score"), f"needs lesion masks, but dataset "
                                                          f"{config['dataset']['name']!r} gives none"))
        return found

    def run(self, run: Any) -> None:
        from .. import distributed
        from ..train import engine as E
        from ..train.callbacks import BestCheckpoints

        cfg = run.config["train"]
        dist = distributed.setup(run.device)
        E.configure_determinism(cfg["deterministic"])
        trainer = _trainer(run, dist)
        if not trainer.resume():
            return
        trainer.net = _forward(trainer.model, dist, cfg["compile"])
        trainer.fit()
        best = next(c.best for c in trainer.callbacks if isinstance(c, BestCheckpoints))
        shown = ", ".join(f"{k} {v:.4f}" for k, v in best.items()) or "no best checkpoint"
        trainer.say(f"   train: {trainer.state.epoch} epochs; {shown}; history in {run.dir.history}")


def _trainer(run: Any, dist: Any) -> Any:
    """The trainer of a run: model (seeded), precision, optimiser, schedule, loss, loaders and callbacks."""
    import torch

    from ..components.losses import build_losses
    from ..train import engine as E
    from ..train.trainer import Trainer

    cfg = run.config["train"]
    bundle, splits = run.data()
    model = run.new_model().to(dist.device)  # seeded: the same initial weights on every rank
    precision = E.precision_for(dist.device, cfg["amp"], cfg["channels_last"], run.log)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = E.make_optimizer(model, cfg["optimizer"])
    weights = E.class_weights_for(cfg["class_weights"], E.split_labels(splits["train"])
                                  if cfg["class_weights"] == "balanced" else [], len(bundle.class_names))
    train_loader, val_loader, val_sampler = _loaders(run, dist, splits)
    terms = build_losses(run.registry, run.config, model, bundle.has_masks, weights,
                         bool(getattr(bundle, "has_confound_masks", False))).to(dist.device)
    return Trainer(model=model, optimizer=optimizer,
                   scheduler=E.make_scheduler(optimizer, cfg["scheduler"], cfg["epochs"]),
                   schedule=cfg["scheduler"], precision=precision, loss_fn=E.loss_function(model, weights),
                   train_loader=train_loader, val_loader=val_loader, val_sampler=val_sampler, dist=dist,
                   epochs=cfg["epochs"], accumulate=cfg["accumulate"], clip_grad_norm=cfg["clip_grad_norm"],
                   last=run.dir.last, callbacks=_callbacks(run, model, bundle, splits), log=run.log,
                   progress=cfg["progress"] and dist.main, terms=terms)


def _loaders(run: Any, dist: Any, splits: dict) -> tuple[Any, Any, Any]:
    """(epoch -> shuffled train loader, val loader, val sampler); each epoch's order comes from (seed, epoch)."""
    from .. import distributed
    from ..train import engine as E

    cfg, seed = run.config["train"], run.config["seed"]
    settings = E.LoaderSettings(run.config["dataset"]["num_workers"], **cfg["loader"])
    train_sampler = distributed.sampler(splits["train"], dist, shuffle=True, seed=seed)
    val_sampler = distributed.sampler(splits["val"], dist, shuffle=False, seed=seed)

    def train_loader(epoch: int) -> Any:
        if train_sampler is not None:
            train_sampler.set_epoch(epoch)
        return E.make_loader(splits["train"], cfg["batch_size"], True, seed * 1000 + epoch, dist.device, settings,
                             train_sampler)

    val_loader = E.make_loader(splits["val"], cfg["batch_size"], False, seed, dist.device, settings, val_sampler)
    return train_loader, val_loader, val_sampler


def _callbacks(run: Any, model: Any, bundle: Any, splits: dict) -> list:
    """The explanation score, progress, early stopping, best and last checkpoints, history, TensorBoard; in this
    order (last.pt saves the state of those before it); then the run's epoch hook, if it has one (it sees the
    epoch saved)."""
    from ..store.checkpoints import model_meta
    from ..store.manifest import data_fingerprint
    from ..train import callbacks as C

    cfg, rd = run.config["train"], run.dir
    fingerprint = data_fingerprint(bundle, run)
    meta = model_meta(run.config, bundle.class_names, model.backbone, run.registry, fingerprint)
    model_file = C.ModelFile(meta, run.config["test"])
    stop = cfg["early_stopping"]
    scored = [_explanation_score(run, model, bundle, splits)] if cfg["explanation_score"] else []
    hook = [C.EpochHook(run.epoch_hook)] if run.epoch_hook is not None else []
    return [*scored, C.Progress(cfg["progress"], run.label),
            C.EarlyStopping(stop["patience"], stop["monitor"], stop["min_delta"]),
            C.BestCheckpoints(cfg["checkpoints"], rd.checkpoints, model_file),
            C.LastCheckpoint(rd.last, model_file),
            C.History(rd.history),
            C.TensorBoard(rd.tensorboard, cfg["tensorboard"])] + hook


def _explanation_score(run: Any, model: Any, bundle: Any, splits: dict) -> Any:
    """The callback of train.explanation_score: its explainer, on the first validation images and their masks."""
    import torch

    from ..hookspecs import ExplainContext
    from ..train.callbacks import ExplanationScore

    spec = run.config["train"]["explanation_score"]
    if not bundle.has_masks:
        raise UserError(f"train.explanation_score: needs lesion masks, but dataset "
                        f"{run.config['dataset']['name']!r} gives none")
    ctx = ExplainContext(model=model, num_outputs=model.num_outputs, batch_size=int(spec["batch_size"]))
    explainer = run.registry.build("explainer", spec["explainer"], ctx, field="train.explanation_score.explainer")
    items = [splits["val"][i] for i in range(min(int(spec["samples"]), len(splits["val"])))]
    return ExplanationScore(explainer, torch.stack([it["image"] for it in items]),
                            torch.stack([it["mask"] for it in items]).numpy(), spec["score"], int(spec["batch_size"]),
                            EXPLANATION)


def _forward(model: Any, dist: Any, compile_model: bool) -> Any:
    """The module that runs forward: DDP around the model under torchrun, compiled when asked."""
    import torch

    from .. import distributed

    net = distributed.wrap(model, dist)
    return torch.compile(net) if compile_model else net
