"""The medattn plugin contract: the one file a plugin author needs to read.

A plugin is a module with a function marked ``@hookimpl`` named ``medattn_components`` that returns a
list of :class:`Component` records. The registry finds plugins through the entry-point group
``medattn`` (installed distributions) or through ``plugins:`` in an experiment file (module names or
``.py`` paths). Records are plain data, so listing plugins and printing the schema never imports torch:
``factory`` is a ``"package.module:function"`` string imported only when the component is built.

The registry checks each plugin when it registers it; a failed check is a load error naming the plugin
(``medattn plugins`` lists them): a ``@hookimpl`` whose name matches no hook below (a misspelling), a
factory string that is not ``package.module:function``, a ``params_schema`` that is not valid JSON Schema
(Draft 2020-12). ``MEDATTN_DISABLE_PLUGINS=a,b`` switches installed plugins off by entry-point or
distribution name.

Factory contracts, by kind (``params`` is the validated ``params`` mapping of the experiment file, with the
defaults of the component's JSON Schema filled in: read ``params["key"]``, do not restate defaults):

dataset    ``factory(params, ctx: DataContext) -> DataBundle``. Each split is a torch ``Dataset`` whose
           items are dicts: ``image`` float tensor (ctx.channels, H, W) in [0, 1] at ctx.image_size,
           ``label`` int, ``id`` str, optionally ``mask`` float tensor (1, H, W) (ground truth region,
           used to score explanations), ``confound_mask`` (1, H, W) (where a known shortcut lives: a
           ruler, a hospital token, burnt-in text; ``DataBundle.has_confound_masks``) and ``group`` str
           (patient id). No normalisation: the core applies the train-time ``transform`` and the
           normalisation of the backbone. A split may offer ``confound_pair(index) -> (image with the
           confound, the same image without it)``, [0, 1] tensors like ``image``: the test job then reports
           ``shortcut.reliance``.
transform  ``factory(params, ctx: TransformContext) -> callable(tensor) -> tensor``: the train-time
           augmentation (``train.augment``) applied to each [0, 1] image before normalisation; random
           draws come from torch's global generator, which the core seeds.
backbone   ``factory(params, ctx: ModelContext) -> Backbone``: a ``torch.nn.Module`` that satisfies the
           :class:`Backbone` protocol. Which levels it returns is fixed when the factory returns: every level
           of ``feature_info``, from ONE pass; attention modules pick the ones they need.
attention  ``factory(params, ctx: AttentionContext) -> torch.nn.Module`` whose ``forward(features)``
           takes the backbone's dict and returns a tensor (B, C, H, W) or (B, D). ``none`` is the
           identity on the last level. Optional: attribute ``default_head`` (``{"name", "params"}``,
           the head its paper uses; overrides the record's ``defaults["head"]``) and method
           ``attention_maps() -> dict[str, Tensor]`` with the maps of the last forward; while the module
           trains with gradients on, the maps should keep their graph (not ``detach()``) so that a loss term
           can supervise them; and ``attention_map_kinds() -> dict[str, str]``, the kind of each map
           (:data:`MAP_KINDS`: spatial, position, channel, other). A map whose kind is not declared is
           taken as spatial only when it is (B, 1, h, w) and as channel only when it is (B, C, 1, 1)
           (:func:`attention_map_kinds`): a square (B, N, N) is never guessed.
head       ``factory(params, ctx: HeadContext) -> torch.nn.Module`` mapping the attention output of
           shape ctx.in_shape (without batch) to (B, ctx.num_outputs) logits.
explainer  ``factory(params, ctx: ExplainContext) -> callable(model, inputs, target) -> Tensor``:
           attributions for ``inputs`` (B, C, H, W) with shape (B, C, H, W) or (B, 1, H, W).
           ``target`` is a LongTensor (B,) or None for a single-output (sigmoid) model.
job        built in (medattn.jobs): ``factory()`` returns the job object; the job's ``params_schema`` is the
           schema of the top-level config section named after the job.
loss       ``factory(params, ctx: LossContext) -> callable(batch: LossBatch) -> Tensor``: one term of ``train.loss``
           (a weighted list), returning a scalar to minimise (``torch.nn.Module`` or any callable). Optional
           attributes on the term: ``needs_input_gradients = True`` (the core makes ``batch.images`` require
           gradients before the forward, for :meth:`LossBatch.input_gradients`) and ``needs_features = True``
           (the core keeps the backbone's levels of the forward in ``batch.features`` and the attention module's
           output in ``batch.attended``) and ``needs_attention_maps = True`` (the core calls the model's
           ``attention_maps()`` after the forward, for ``batch.attention``; without it the maps are not built,
           and reading ``batch.attention`` is an error). A term that needs lesion
           masks says so in its record: ``defaults={"needs": ["masks"]}``; ``validate`` refuses it on a data set
           without masks.
figure     ``factory(params, view: RunView) -> list[pathlib.Path]`` (scope run) or
           ``factory(params, view: ExperimentView) -> list[pathlib.Path]`` (scope experiment): writes figures
           from the files of a run or an experiment (never builds the data set).

A factory raises :class:`UserError` for bad params, with the field path from the component's place, e.g.
``backbone.params.weights: ...`` (the core puts ``model.`` in front). Any other exception a factory or the
first forward raises (an AssertionError inside a library) reaches the user as one
``model.<slot>: <name> cannot be built on <arch> at <size> px: <reason>`` line (other kinds:
``<kind> '<name>' (plugin <plugin>) cannot be built: <reason>``); every component is built by
``Registry.build(kind, spec, ctx)``, which checks the params and fills their defaults first.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pluggy

if TYPE_CHECKING:  # listing plugins must not import torch
    import torch

PROJECT = "medattn"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
"""The marker of a plugin's hook functions: ``@hookimpl def medattn_components(): ...``."""

KINDS = ("dataset", "transform", "backbone", "attention", "head", "loss", "explainer", "job", "figure")
"""The kinds of component a plugin can provide."""


@dataclass(frozen=True)
class Component:
    """One thing a plugin provides: a dataset, a backbone, an attention module, ..."""

    kind: str
    name: str
    factory: str | Callable[..., Any]  # "package.module:function", or the function itself (a one-file plugin)
    description: str
    params_schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "object"})
    defaults: Mapping[str, Any] = field(default_factory=dict)
    plugin: str = ""  # filled in by the registry: distribution or module name
    version: str = ""  # filled in by the registry


@dataclass(frozen=True)
class FeatureInfo:
    """One level a backbone returns: its name, channels, and reduction (input side / level side, e.g. 32 for
    the last stage of a ResNet; None for a global pool, a (C, 1, 1) map whatever the input size)."""

    name: str
    channels: int
    reduction: int | None

    @property
    def spatial(self) -> bool:
        """True for a feature map whose size follows the input (not a global pool)."""
        return self.reduction is not None

    def __getitem__(self, key: str) -> Any:
        """``info["channels"]``: the 0.1 API's dict levels, kept until 0.3 (warns); use ``info.channels``."""
        from .deprecation import warn_renamed

        if key not in ("name", "channels", "reduction"):
            raise KeyError(key)
        warn_renamed(f'feature_info[i][{key!r}]', f"feature_info[i].{key}")
        return getattr(self, key)


@runtime_checkable
class Backbone(Protocol):
    """What a backbone factory returns (a ``torch.nn.Module``); the core checks these attributes are there.

    ``forward(x)`` returns ``{level: tensor}`` for every level of ``feature_info``, in that order (shallow to
    deep, the final level last), all from ONE pass. The levels are fixed when the factory returns.
    """

    arch: str  # the architecture's name: attention modules may pick per-architecture defaults by it
    in_chans: int  # channels of the input images (1 or 3)
    mean: tuple[float, ...]  # normalisation the weights expect, one value per input channel
    std: tuple[float, ...]
    feature_info: Sequence[FeatureInfo]  # the levels forward returns, shallow to deep
    cam_layer: str  # dotted name of the module (inside the backbone) Grad-CAM hooks by default

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]: ...


@dataclass
class DataContext:
    """What a dataset factory is told by the core."""

    seed: int  # the run's random seed (for split shuffles)
    image_size: tuple[int, int]  # (height, width) every image is resized to
    channels: int  # 1 or 3: what the backbone consumes
    cache_dir: Any = None  # pathlib.Path or None: where decoded images may be kept across runs
    run_dir: Any = None  # medattn.api.RunDir (``run_dir.splits``, ``run_dir.skipped``), or None: write nothing
    log: Callable[[str], None] = print


@dataclass
class DataBundle:
    """What a dataset factory returns."""

    splits: dict[str, Any]  # "train" / "val" / "test" -> torch Dataset
    class_names: list[str]
    has_masks: bool = False
    info: dict[str, Any] = field(default_factory=dict)  # free-form: counts, fingerprint, skipped...
    has_confound_masks: bool = False  # items carry ``confound_mask``: where a known shortcut lives (a ruler, a token)


@dataclass
class TransformContext:
    """What a transform factory is told by the core."""

    image_size: tuple[int, int]  # (height, width) of the images the transform gets
    channels: int  # channels of those images (transforms draw from torch's global generator, seeded by the core)


@dataclass
class ModelContext:
    """What a backbone factory is told by the core."""

    image_size: tuple[int, int]  # (height, width) of the input images


@dataclass
class AttentionContext:
    """What an attention factory is told by the core."""

    backbone: Backbone  # the built backbone: the levels it returns are ``backbone.feature_info``
    image_size: tuple[int, int]  # (height, width) of the input images
    num_outputs: int  # logits of the whole model


@dataclass
class HeadContext:
    """What a head factory is told by the core."""

    in_shape: tuple[int, ...]  # attention output shape without batch
    num_outputs: int  # logits to return


@dataclass
class ExplainContext:
    """What an explainer factory is told by the core."""

    model: Any  # the prepared medattn model (for layer methods: model.backbone, model.cam_layer())
    num_outputs: int
    batch_size: int = 8


@dataclass
class LossContext:
    """What a loss factory is told by the core."""

    output: str  # "sigmoid" (one logit, BCE) or "softmax" (one logit per class, cross-entropy)
    num_outputs: int  # logits of the model
    image_size: tuple[int, int]  # (height, width) of the input images
    has_masks: bool  # the data set gives a lesion mask per image
    class_weights: list[float] | None = None  # train.class_weights resolved, or None


MAP_KINDS = ("spatial", "position", "channel", "other")
"""The kinds of attention map: ``spatial`` (B, 1, h, w) weights over the image grid; ``position`` attention
(B, N, N), N the positions of a level, or its (B, 1, h, w) column-mean summary; ``channel`` weights (B, C, 1, 1)
or channel attention (B, C, C), which have no place in the image; ``other`` (anything else)."""


def attention_map_kinds(attention: Any, maps: dict[str, Any]) -> dict[str, str]:
    """{key: kind} of the maps an attention module exposed: what its ``attention_map_kinds()`` declares; for a
    key it does not declare, ``spatial`` for a (B, 1, h, w) map with more than one cell, ``channel`` for
    (B, C, 1, 1), else ``other``. A square (B, N, N) map is never read by its shape (N may equal C)."""
    fn = getattr(attention, "attention_map_kinds", None)
    declared = dict(fn()) if callable(fn) else {}
    out = {}
    for key, m in maps.items():
        kind = declared.get(key)
        if kind not in MAP_KINDS:
            shape = tuple(m.shape)
            if len(shape) == 4 and shape[1] == 1 and shape[2] * shape[3] > 1:
                kind = "spatial"
            elif len(shape) == 4 and shape[2:] == (1, 1):
                kind = "channel"
            else:
                kind = "other"
        out[key] = kind
    return out


@dataclass
class LossBatch:
    """What a loss term is called with: one training batch and what the model produced for it.

    ``images`` are the normalised inputs (B, C, H, W); ``masks`` (B, 1, H, W) in [0, 1], ``confound_masks`` (the
    same, where a known shortcut lives) and ``groups`` are there when the data set gives them (else None).
    ``attention`` holds the attention module's ``attention_maps()`` right after the forward (with their graph)
    when a term declared ``needs_attention_maps``; ``features`` the backbone's levels and ``attended`` the attention
    module's output when a term asked for them.
    """

    images: torch.Tensor
    labels: torch.Tensor
    logits: torch.Tensor
    model: Any  # the medattn model (forward, ``output``, ``probabilities``); a second forward is allowed
    ids: list[str]
    masks: torch.Tensor | None = None
    groups: list[str] | None = None
    attention: dict[str, torch.Tensor] = field(default_factory=dict)
    features: dict[str, torch.Tensor] | None = None
    attended: torch.Tensor | None = None  # the attention module's output (what the head gets), with ``features``
    mask_weight: torch.Tensor | None = None  # (B,) 0/1: which images may use their mask (mask_fraction)
    confound_masks: torch.Tensor | None = None  # (B, 1, H, W): where a known shortcut lives, when the data set says
    classification: Callable[[torch.Tensor], torch.Tensor] | None = None  # logits -> the model's BCE/CE loss
    grad_scale: float = 1.0  # the GradScaler's scale under fp16 autocast (1.0 otherwise): see gradients()

    def gradients(self, outputs: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """d sum(outputs) / d inputs with ``create_graph=True`` (double backprop), so that a term's loss can
        depend on them. Under fp16 autocast the sum is multiplied by ``grad_scale`` before differentiating and
        the gradient divided by it after, as PyTorch's AMP recipe for gradient penalties does: small gradients
        do not underflow in the half-precision backward. A gradient that overflowed comes back non-finite, and
        the training loop then lowers the scale and skips the step, as the GradScaler does."""
        import torch

        scale = float(self.grad_scale)
        total = outputs.float().sum()
        grads = torch.autograd.grad(total * scale if scale != 1.0 else total, inputs, create_graph=True)[0]
        return grads / scale if scale != 1.0 else grads

    def input_gradients(self, outputs: torch.Tensor) -> torch.Tensor:
        """d sum(outputs) / d images (see :meth:`gradients`). Needs ``needs_input_gradients = True`` on the term."""
        if not self.images.requires_grad:
            raise RuntimeError("input gradients need needs_input_gradients = True on the loss term")
        return self.gradients(outputs, self.images)

    def class_logit(self, logits: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) the logit of each image's own label: the one logit of a sigmoid model, signed (-z for label 0),
        or the label's column of a softmax model."""
        z = self.logits if logits is None else logits
        if self.model.output == "sigmoid":
            z = z.reshape(-1)
            return z * (2 * self.labels.to(z.dtype) - 1)
        return z.gather(1, self.labels.long().view(-1, 1)).reshape(-1)


class MedattnSpec:
    """Hook specifications."""

    @hookspec
    def medattn_components(self) -> list[Component]:  # type: ignore[empty-body]
        """Return the components this plugin provides (plain records: import nothing heavy here)."""
