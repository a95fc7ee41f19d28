"""The medattn plugin contract: the one file a plugin author needs to read.

A plugin is a module with a function marked ``@hookimpl`` named ``medattn_components`` that returns a
list of :class:`Component` records. The registry finds plugins through the entry-point group
``medattn`` (installed distributions) or through ``plugins:`` in an experiment file (module names or
``.py`` paths). Records are plain data, so listing plugins and printing the schema never imports torch:
``factory`` is a ``"package.module:function"`` string imported only when the component is built.

Factory contracts, by kind (``params`` is the validated ``params`` mapping of the experiment file,
with the defaults of the component's JSON Schema filled in):

dataset    ``factory(params, ctx: DataContext) -> DataBundle``. Each split is a torch ``Dataset`` whose
           items are dicts: ``image`` float tensor (ctx.channels, H, W) in [0, 1] at ctx.image_size,
           ``label`` int, ``id`` str, optionally ``mask`` float tensor (1, H, W) (ground truth region,
           used to score explanations) and ``group`` str (patient id). No normalisation: the core
           applies the train-time ``transform`` and the normalisation of the backbone.
transform  ``factory(params, ctx: TransformContext) -> callable(tensor) -> tensor``: the train-time
           augmentation (``train.augment``) applied to each [0, 1] image before normalisation.
backbone   ``factory(params, ctx: ModelContext) -> torch.nn.Module`` whose ``forward(x)`` returns an
           ordered ``dict[level_name, Tensor]`` of feature maps from ONE pass (shallow to deep; the
           last entry is the final level). Attributes: ``arch`` (str, e.g. "vgg16"), ``in_chans``,
           ``mean`` and ``std`` (normalisation tuples), ``feature_info`` (list of dicts
           ``{name, channels, reduction}`` for the levels currently returned), ``cam_layer`` (dotted
           name of the module, inside the backbone, that Grad-CAM uses by default). Method
           ``request_levels(names)`` makes later forwards also return the named levels (attention
           plugins call it); ``available_levels`` lists the names it accepts.
attention  ``factory(params, ctx: AttentionContext) -> torch.nn.Module`` whose ``forward(features)``
           takes the backbone's dict and returns a tensor (B, C, H, W) or (B, D). ``none`` is the
           identity on the last level. Optional: attribute ``default_head`` (``{"name", "params"}``,
           the head its paper uses; overrides the record's ``defaults["head"]``) and method
           ``attention_maps() -> dict[str, Tensor]`` with the maps of the last forward.
head       ``factory(params, ctx: HeadContext) -> torch.nn.Module`` mapping the attention output of
           shape ctx.in_shape (without batch) to (B, ctx.num_outputs) logits.
explainer  ``factory(params, ctx: ExplainContext) -> callable(model, inputs, target) -> Tensor``:
           attributions for ``inputs`` (B, C, H, W) with shape (B, C, H, W) or (B, 1, H, W).
           ``target`` is a LongTensor (B,) or None for a single-output (sigmoid) model.
job        ``factory(run) -> None``: one step of a run (train, test, explain, figure). The job's
           ``params_schema`` is the schema of the top-level config section named after the job.
figure     ``factory(params, run) -> list[pathlib.Path]``: writes figures of a run.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pluggy

PROJECT = "medattn"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

KINDS = ("dataset", "transform", "backbone", "attention", "head", "explainer", "job", "figure")


@dataclass(frozen=True)
class Component:
    """One thing a plugin provides: a dataset, a backbone, an attention module, ..."""

    kind: str
    name: str
    factory: str | Callable[..., Any]
    description: str
    params_schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "object"})
    defaults: Mapping[str, Any] = field(default_factory=dict)
    plugin: str = ""  # filled in by the registry: distribution or module name
    version: str = ""  # filled in by the registry


@dataclass
class DataContext:
    """What a dataset factory is told by the core."""

    seed: int
    image_size: tuple[int, int]
    channels: int  # 1 or 3: what the backbone consumes
    cache_dir: Any = None  # pathlib.Path or None
    run_dir: Any = None  # pathlib.Path or None: where a dataset may write split lists / skip logs
    log: Callable[[str], None] = print


@dataclass
class DataBundle:
    """What a dataset factory returns."""

    splits: dict[str, Any]  # "train" / "val" / "test" -> torch Dataset
    class_names: list[str]
    has_masks: bool = False
    info: dict[str, Any] = field(default_factory=dict)  # free-form: counts, fingerprint, skipped...


@dataclass
class TransformContext:
    image_size: tuple[int, int]
    channels: int
    seed: int


@dataclass
class ModelContext:
    image_size: tuple[int, int]
    num_outputs: int


@dataclass
class AttentionContext:
    backbone: Any  # the built backbone module (call request_levels on it)
    image_size: tuple[int, int]
    num_outputs: int


@dataclass
class HeadContext:
    in_shape: tuple[int, ...]  # attention output shape without batch
    num_outputs: int


@dataclass
class ExplainContext:
    model: Any  # the prepared medattn model (for layer methods: model.backbone, model.cam_layer())
    num_outputs: int
    batch_size: int = 8


class MedattnSpec:
    """Hook specifications."""

    @hookspec
    def medattn_components(self) -> list[Component]:  # type: ignore[empty-body]
        """Return the components this plugin provides."""
