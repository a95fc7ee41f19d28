"""Using a trained model: a run's model file as a :class:`Predictor` (predict and explain images)::

    import medattn
    p = medattn.load_run("runs/demo/default")          # checkpoints/best_val_loss.pt, on the CPU
    out = p.predict(["a.png", "b.dcm"])                # paths, PIL images, arrays or tensors
    out.labels, out.probabilities                      # predicted class names; (N, classes)
    ex = p.explain(["a.png"], method="gradcam")        # ex.attributions (N, C|1, H, W); ex.overlay(0)

Nothing here needs the training data: a kept checkpoint carries the model config, the class names, the input
size and channels, the normalisation and the decision threshold frozen on validation (medattn.store.checkpoints).
The test-time preprocessing (``Predictor.transform``) is the file datasets' own: decode to [0, 1] (PNG 8/16 bit,
JPEG, TIFF, DICOM with its modality LUT, VOI LUT / window and MONOCHROME1 inversion), resize to the model's
input size (bilinear, antialiased), match the channels, then ``(x - mean) / std``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..image_io import BadImage, decode, to_tensor
from ..store.rundir import ExperimentDir, RunDir


# ---------------------------------------------------------------------------------------------------------------
# the inputs: files, PIL images, arrays and tensors (decoded by medattn.image_io)
# ---------------------------------------------------------------------------------------------------------------
def describe(image: Any) -> str:
    """How an input is named in messages and tables: its path, else its type and shape."""
    if isinstance(image, (str, Path)):
        return str(image)
    shape = getattr(image, "shape", None) or getattr(image, "size", None)
    return f"<{type(image).__name__}{' ' + 'x'.join(map(str, shape)) if shape else ''}>"


def as_items(images: Any) -> list[Any]:
    """One image or many as a list: a path, PIL image or 2/3-D array is one; a 4-D array or tensor is a batch."""
    if isinstance(images, (str, Path)) or hasattr(images, "convert"):
        return [images]
    if isinstance(images, (np.ndarray, torch.Tensor)):
        return list(images) if images.ndim == 4 else [images]
    if isinstance(images, Iterable):
        return list(images)
    return [images]


# ---------------------------------------------------------------------------------------------------------------
# the test-time preprocessing
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Preprocess:
    """What the test job feeds the model, from a model file's meta: ``transform(image)`` -> (C, H, W) tensor."""

    image_size: tuple[int, int]
    channels: int
    mean: tuple[float, ...] | None = None  # None: the model was trained without normalisation
    std: tuple[float, ...] | None = None
    dicom_voi: bool = True
    _stats: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.mean is not None and self.std is not None:
            stats = (torch.tensor(list(self.mean)).view(-1, 1, 1), torch.tensor(list(self.std)).view(-1, 1, 1))
            object.__setattr__(self, "_stats", stats)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Preprocess:
        h, w = meta["image_size"]
        params = ((meta.get("config") or {}).get("dataset") or {}).get("params") or {}
        mean, std = meta.get("mean"), meta.get("std")
        return cls((int(h), int(w)), int(meta["channels"]), tuple(mean) if mean is not None else None,
                   tuple(std) if std is not None else None,
                   bool(params.get("dicom_voi", True)))  # a dataset without DICOM files has no such key

    def __call__(self, image: Any) -> torch.Tensor:
        """The normalised model input (C, H, W) of one image."""
        return self.normalise(self.load(image))

    def load(self, image: Any) -> torch.Tensor:
        """The image decoded, resized and channel-matched, before normalisation: (C, H, W) in [0, 1]."""
        return to_tensor(decode(image, self.dicom_voi, strict=True), self.image_size, self.channels)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` of one image (C, H, W) or a batch (B, C, H, W)."""
        if self._stats is None:
            return x
        mean, std = self._stats
        return (x - mean.to(x.device)) / std.to(x.device)

    def to_dict(self) -> dict[str, Any]:
        """The preprocessing contract as plain data (what an exported model's JSON records)."""
        return {"image_size": list(self.image_size), "channels": self.channels,
                "mean": list(self.mean) if self.mean is not None else None,
                "std": list(self.std) if self.std is not None else None, "dicom_voi": self.dicom_voi,
                "steps": ["decode to [0, 1] (DICOM: modality LUT, VOI LUT / window, MONOCHROME1 inverted)",
                          f"resize to {self.image_size[0]}x{self.image_size[1]} (bilinear, antialiased)",
                          f"{self.channels} channel(s) (grey repeated / RGB to grey)",
                          "(x - mean) / std per channel" if self.mean is not None else "no normalisation"]}


# ---------------------------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Predictions:
    """Class probabilities and predicted classes of N inputs (rows of unreadable inputs: NaN, -1, the error)."""

    class_names: list[str]
    probabilities: np.ndarray  # (N, classes) float32
    indices: np.ndarray  # (N,) predicted class index, -1 where the input could not be read
    threshold: float | None  # binary models: class 1 when P(class 1) >= threshold; else None (argmax)
    errors: list[str | None]
    sources: list[str] = field(default_factory=list)  # how each input is named (its path, else type and shape)
    sets: np.ndarray | None = None  # (N, classes) bool conformal prediction sets, when the model file has them
    uncertainty: dict[str, np.ndarray] | None = None  # per-image entropy, spread, ... (predict(uncertainty=...))

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def labels(self) -> list[str | None]:
        """The predicted class name of each input (None where it could not be read)."""
        return [self.class_names[i] if i >= 0 else None for i in self.indices]

    @property
    def set_labels(self) -> list[list[str]] | None:
        """Each input's conformal prediction set as class names (None without conformal sets; [] unread)."""
        if self.sets is None:
            return None
        return [[self.class_names[k] for k in np.flatnonzero(row)] if self.indices[i] >= 0 else []
                for i, row in enumerate(self.sets)]

    def rows(self) -> list[dict[str, Any]]:
        """One dict per input: path, prob_<class>..., predicted, threshold, (set, uncertainty columns), error."""
        names = self.sources or [str(k) for k in range(len(self))]
        out = []
        for i, name in enumerate(names):
            ok = self.indices[i] >= 0
            extra = {k: v[i] for k, v in (self.uncertainty or {}).items()} if ok else dict.fromkeys(
                self.uncertainty or {}, None)
            out.append(prediction_row(name, self.class_names, self.probabilities[i] if ok else None,
                                      int(self.indices[i]), self.threshold, self.errors[i],
                                      None if self.sets is None else self.sets[i], extra))
        return out


def prediction_row(name: str, class_names: list[str], probabilities: Any, index: int, threshold: float | None,
                   error: str | None = None, conformal_set: Any = None, uncertainty: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """One row of a predictions CSV: path, prob_<class>... (6 decimals), predicted, threshold, then ``set`` (the
    conformal set, class names joined by |) when ``conformal_set`` is given, one column per ``uncertainty``
    value, and error; ``probabilities`` holds one per class, None when the input was not read."""
    ok = probabilities is not None and index >= 0
    row: dict[str, Any] = {"path": name}
    row.update({f"prob_{c}": f"{float(probabilities[k]):.6f}" if ok else "" for k, c in enumerate(class_names)})
    row.update(predicted=class_names[index] if ok else "", threshold="" if threshold is None else f"{threshold:.6g}")
    if conformal_set is not None:
        from ..evidence.conformal import set_names

        row["set"] = set_names(np.asarray(conformal_set)[None], class_names)[0] if ok else ""
    for key, value in (uncertainty or {}).items():
        row[key] = f"{float(value):.6f}" if ok and value is not None else ""
    row["error"] = error or ""
    return row


@dataclass
class Explanation:
    """Attributions of N inputs by one explainer, with the model inputs and the predictions they explain."""

    method: str
    params: dict[str, Any]
    attributions: np.ndarray  # (N, C|1, H, W) float32; NaN for unreadable inputs
    images: np.ndarray  # (N, C, H, W) the model inputs before normalisation, in [0, 1]
    predictions: Predictions

    def overlay(self, i: int, min_side: int = 224) -> Any:
        """Input ``i`` with its attribution as a heat map on top (a PIL image)."""
        return overlay(self.images[i], self.attributions[i], min_side)


@dataclass
class Batch:
    """One batch of :meth:`Predictor.batches`: which inputs it holds, which were read, and their scores."""

    items: list[int]  # positions in the input list
    ok: list[int]  # the positions that were read, in the order of ``raw`` and ``scores``
    errors: dict[int, str]  # position -> why it could not be read
    raw: torch.Tensor | None  # (len(ok), C, H, W) model inputs before normalisation, in [0, 1]
    scores: np.ndarray | None  # the model's class scores: (len(ok),) P(class 1) for sigmoid, else (len(ok), K)
    uncertainty: dict[str, np.ndarray] | None = None  # entropy, spread, mutual_information (sampled batches)


def overlay(image: np.ndarray, attribution: np.ndarray, min_side: int = 224) -> Any:
    """A PIL RGB image: the (C, H, W) image in [0, 1] under a heat map of |attribution| (channels summed,
    scaled by its 99th percentile), upscaled so that the short side is at least ``min_side``."""
    from matplotlib import colormaps
    from PIL import Image

    img = np.asarray(image, dtype=np.float32)
    img = np.repeat(img, 3, axis=0) if img.shape[0] == 1 else img[:3]
    heat = np.abs(np.nan_to_num(np.asarray(attribution, dtype=np.float32))).sum(axis=0)
    top = float(np.percentile(heat, 99)) if heat.size else 0.0
    heat = np.clip(heat / top, 0, 1) if top > 0 else np.zeros_like(heat)
    colour = colormaps["jet"](heat)[..., :3].transpose(2, 0, 1)
    weight = 0.6 * heat[None]
    out = np.clip((1 - weight) * img + weight * colour, 0, 1).transpose(1, 2, 0)
    pic = Image.fromarray(np.round(out * 255).astype(np.uint8), "RGB")
    scale = max(1, math.ceil(min_side / max(1, min(pic.size))))
    return pic.resize((pic.width * scale, pic.height * scale), Image.Resampling.NEAREST) if scale > 1 else pic


# ---------------------------------------------------------------------------------------------------------------
# the predictor
# ---------------------------------------------------------------------------------------------------------------
class Predictor:
    """A trained model for new images: ``model`` (eval mode, on ``device``), ``class_names``, ``transform`` (the
    test-time preprocessing), ``threshold`` (frozen on validation; binary models only) and ``meta`` (all that the
    model file records). ``allow_changed_plugins``: the explainers' plugins, like the model's, may load from plugin
    files that differ from the model file's record (with a warning); else that is a UserError."""

    def __init__(self, model: torch.nn.Module, meta: dict[str, Any], file: Path, device: torch.device,
                 allow_changed_plugins: bool = False) -> None:
        self.model = model
        self.meta = meta
        self.file = Path(file)
        self.device = device
        self.class_names = [str(c) for c in (meta.get("class_names") or getattr(model, "class_names", []))]
        self.transform = Preprocess.from_meta(meta)
        self.threshold_rule = dict(meta.get("threshold") or {})
        value = self.threshold_rule.get("value")
        self.threshold = (float(value) if value is not None else 0.5) if len(self.class_names) == 2 else None
        from ..evidence import calibration, conformal

        # a model file from before medattn calibrated has no such keys: its probabilities stay the model's own
        self.calibration: dict[str, Any] | None = calibration.check(meta.get("calibration"),
                                                                   f"{file}: meta.calibration")
        self.conformal: dict[str, Any] | None = conformal.check(meta.get("conformal"), len(self.class_names),
                                                               f"{file}: meta.conformal")
        self.made_before_calibration = "calibration" not in meta
        self._prepared: torch.nn.Module | None = None
        self._registry: Any = None
        self.allow_changed_plugins = bool(allow_changed_plugins)

    def __repr__(self) -> str:
        return (f"Predictor({str(self.file)!r}, classes={self.class_names}, input={self.transform.channels}x"
                f"{self.transform.image_size[0]}x{self.transform.image_size[1]}, threshold={self.threshold}, "
                f"device={self.device})")

    # -- predicting --------------------------------------------------------------------------------------
    def predict(self, images: Any, batch_size: int = 32, errors: str = "raise", progress: bool = False, *,
                tta: str = "none", mc_samples: int = 0, uncertainty: bool = False) -> Predictions:
        """Class probabilities and predicted classes of ``images`` (one or a list of paths, PIL images, arrays or
        tensors; a 4-D array or tensor is a batch). ``errors="raise"``: an unreadable input is a UserError
        naming it; ``"keep"``: its row holds the error instead. ``tta`` (flips | d4) averages the views of each
        image, ``mc_samples`` (>= 2) Monte Carlo dropout samples; ``uncertainty`` adds each image's entropy,
        spread and mutual information (``Predictions.uncertainty``, and columns of ``rows()``)."""
        return self._run(as_items(images), batch_size, errors, progress, None, (tta, mc_samples, uncertainty))[0]

    def explain(self, images: Any, method: str = "saliency", *, target: str | int = "predicted", batch_size: int = 8,
                errors: str = "raise", progress: bool = False, **params: Any) -> Explanation:
        """Attributions of ``images`` by the explainer plugin ``method`` (``medattn plugins --kind explainer``
        lists them; ``params`` are its params) for the predicted class, or the class index ``target``."""
        fn = self.explainer(method, batch_size, **params)
        preds, attributions, raw = self._run(as_items(images), batch_size, errors, progress, (fn, target))
        return Explanation(method, params, attributions, raw, preds)

    def predict_dicomweb(self, url: str, study: str | None = None, series: str | None = None,
                         query: str | None = None, *, store: bool = False, dicom_out: str | Path | None = None,
                         explain: str | None = None, batch_size: int = 32, workers: int = 4, timeout: float = 30.0,
                         retries: int = 3, progress: bool = False) -> Any:
        """Predict the instances of a study, a series or a QIDO-RS ``query`` (``"Modality=MG&StudyDate=20240101-"``)
        on the DICOMweb server ``url``; with ``dicom_out`` or ``store``, write an SR per instance (and, with
        ``explain``, a parametric map) into that folder and / or send them back with STOW-RS. Credentials come from
        the environment (MEDATTN_DICOMWEB_TOKEN, or MEDATTN_DICOMWEB_USER and MEDATTN_DICOMWEB_PASSWORD). Returns a
        :class:`medattn.inference.dicomweb.DicomwebResult`: predictions, rows, messages, and counts of each kind."""
        from .dicomweb import predict_instances

        explainer = self.explainer(explain, batch_size) if explain else None

        def attribute(raw: torch.Tensor, scores: np.ndarray) -> np.ndarray:
            return self.attribute(explainer, Batch([], [], {}, raw, scores))

        result = predict_instances(self, url, study, series, query, store_results=store, dicom_out=dicom_out,
                                   attribute=attribute if explainer is not None else None, method=explain,
                                   batch_size=batch_size, workers=workers, timeout=timeout, retries=retries,
                                   progress=progress)
        sets = self.sets(result.probabilities)
        if sets is not None:
            sets[result.indices < 0] = False
        result.predictions = Predictions(self.class_names, result.probabilities, result.indices, self.threshold,
                                         result.errors, result.names, sets)
        result.rows = [{**row, **extra} for row, extra in zip(result.predictions.rows(), result.extras)]
        return result

    def _run(self, items: list[Any], batch_size: int, errors: str, progress: bool,
             explain: tuple[Callable, str | int] | None,
             sampling: tuple[str, int, bool] = ("none", 0, False)) -> tuple[Predictions, Any, Any]:
        from tqdm.auto import tqdm

        if errors not in ("raise", "keep"):
            raise UserError(f"errors={errors!r}: expected 'raise' or 'keep'")
        n = len(items)
        probs = np.full((n, len(self.class_names)), np.nan, dtype=np.float32)
        idx, errs = np.full(n, -1, dtype=np.int64), [None] * n
        attributions: dict[int, np.ndarray] = {}
        raw: dict[int, np.ndarray] = {}
        tta, mc_samples, want_uncertainty = sampling
        spread = {k: np.full(n, np.nan) for k in ("entropy", "spread", "mutual_information")}
        from ..evidence.metrics import class_probabilities

        with tqdm(total=n, unit="img", disable=not progress, leave=False) as bar:
            for b in self.batches(items, batch_size, tta=tta, mc_samples=mc_samples, uncertainty=want_uncertainty):
                if b.errors and errors == "raise":
                    i, why = next(iter(b.errors.items()))
                    raise UserError(f"{describe(items[i])}: {why}")
                for i, why in b.errors.items():
                    errs[i] = why
                if b.ok:
                    probs[b.ok] = class_probabilities(np.asarray(b.scores, dtype=np.float32))
                    idx[b.ok] = self.classify(b.scores)
                    for k, v in (b.uncertainty or {}).items():
                        spread[k][b.ok] = v
                    if explain is not None:
                        attributions.update(zip(b.ok, self.attribute(explain[0], b, explain[1])))
                        raw.update(zip(b.ok, b.raw.numpy()))
                bar.update(len(b.items))
        sets = self.sets(probs)  # (N, classes) probabilities: what the sets are defined on
        if sets is not None:
            sets[idx < 0] = False
        preds = Predictions(self.class_names, probs, idx, self.threshold, errs, [describe(x) for x in items], sets,
                            spread if want_uncertainty else None)
        return preds, _stack(attributions, n), _stack(raw, n)

    def batches(self, images: Iterable[Any], batch_size: int = 32, *, tta: str = "none", mc_samples: int = 0,
                uncertainty: bool = False) -> Iterator[Batch]:
        """Read, preprocess and score ``images`` batch by batch; the next batch is read while this one runs.
        ``tta``, ``mc_samples``, ``uncertainty``: as :meth:`predict` (the scores are then the averaged ones)."""
        items = list(images)
        if int(batch_size) < 1:
            raise UserError(f"batch size {batch_size}: must be at least 1")
        sampled = tta != "none" or mc_samples or uncertainty
        if sampled:
            self.check_sampling(tta, mc_samples)
        chunks = [list(range(s, min(s + int(batch_size), len(items)))) for s in range(0, len(items), int(batch_size))]
        if not chunks:
            return
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(self._read, items, chunks[0])
            for k, chunk in enumerate(chunks):
                ok, tensors, errors = pending.result()
                if k + 1 < len(chunks):
                    pending = pool.submit(self._read, items, chunks[k + 1])
                raw = torch.stack(tensors) if tensors else None
                scores, spread = (None, None) if raw is None else self.score_batch(raw, tta, mc_samples, uncertainty)
                yield Batch(chunk, ok, errors, raw, scores, spread)

    def score_batch(self, raw: torch.Tensor, tta: str = "none", mc_samples: int = 0, uncertainty: bool = False
                    ) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
        """(class scores, uncertainty or None) of a batch of model inputs before normalisation (B, C, H, W): the
        plain forward pass, or with ``tta`` / ``mc_samples`` / ``uncertainty`` the averaged sampled one (what
        :meth:`batches` and ``predict --dicomweb`` score with)."""
        x = self.transform.normalise(raw)
        if tta != "none" or mc_samples or uncertainty:
            return self.sample(x, tta, mc_samples)
        return self.scores(x), None

    def _read(self, items: list[Any], positions: list[int]) -> tuple[list[int], list[torch.Tensor], dict[int, str]]:
        ok, tensors, errors = [], [], {}
        for i in positions:
            try:
                tensors.append(self.transform.load(items[i]))
                ok.append(i)
            except BadImage as exc:
                errors[i] = str(exc)
            except Exception as exc:  # e.g. a 0-pixel image: the input's problem, kept in its row
                errors[i] = f"cannot preprocess: {type(exc).__name__}: {exc}"
        return ok, tensors, errors

    def scores(self, x: torch.Tensor) -> np.ndarray:
        """The model's class scores of a normalised batch (B, C, H, W): (B,) P(class 1) for a sigmoid model,
        else (B, classes) softmax probabilities (as the test job records them), calibrated by the model file's
        calibration when it has one."""
        with torch.inference_mode():
            logits = self.model(x.to(self.device))
            return self.scores_of(logits)

    def scores_of(self, logits: torch.Tensor) -> np.ndarray:
        """Class scores (float32) of a batch of the model's logits, calibrated as the model file says."""
        if self.calibration is None:
            return self.model.probabilities(logits.float()).float().cpu().numpy()
        from ..evidence import calibration

        z = calibration.apply(self.calibration, logits.float().cpu().numpy())
        return calibration.probabilities(z, self.calibration["output"]).astype(np.float32)

    def check_sampling(self, tta: str = "none", mc_samples: int = 0) -> None:
        """A UserError for a TTA group that does not fit the input shape, too few MC samples, or MC dropout on a
        model without dropout."""
        from ..evidence import uncertainty

        uncertainty.check_tta(tta, self.transform.image_size, "--tta")
        if mc_samples:
            if int(mc_samples) < 2:
                raise UserError(f"--mc-dropout {mc_samples}: give at least 2 samples")
            uncertainty.check_mc_dropout(self.model, "--mc-dropout")

    def sample(self, x: torch.Tensor, tta: str = "none", mc_samples: int = 0) -> tuple[np.ndarray, dict]:
        """(mean class scores, {entropy, spread, mutual_information}) of a normalised batch over the views of
        ``tta`` (one forward of all views) and ``mc_samples`` MC-dropout passes, calibrated as the file says."""
        from ..evidence import uncertainty

        summary = uncertainty.sampled_summary(self.model, x.to(self.device), uncertainty.GROUPS[tta], mc_samples,
                                              self.calibration, self.model.output, chunk=len(x))
        mean = summary.pop("mean").astype(np.float32)
        return (mean[:, 1] if self.model.output == "sigmoid" else mean), summary

    def sets(self, scores: np.ndarray) -> np.ndarray | None:
        """(B, classes) bool conformal prediction sets of class scores, or None when the model file has none."""
        if self.conformal is None:
            return None
        from ..evidence import conformal
        from ..evidence.metrics import class_probabilities

        return conformal.predict_sets(class_probabilities(np.asarray(scores, dtype=np.float64)), self.conformal)

    def classify(self, scores: np.ndarray) -> np.ndarray:
        """Predicted class indices of scores: the test job's rule (binary: P(class 1) >= threshold; else argmax)."""
        from ..evidence.metrics import predictions

        return predictions(np.asarray(scores), self.threshold if self.threshold is not None else 0.5)

    # -- explaining --------------------------------------------------------------------------------------
    @property
    def registry(self) -> Any:
        """The components (explainers) available to this model: installed plugins plus the config's."""
        if self._registry is None:
            from ..store.plugin_copies import registry_for

            self._registry = registry_for(self.file, self.meta, self.allow_changed_plugins)
        return self._registry

    def explainer(self, method: str = "saliency", batch_size: int = 8, **params: Any) -> Callable:
        """The explainer plugin ``method`` built for this model (params checked against its schema, the layer of
        a layer method checked to exist)."""
        from ..hookspecs import ExplainContext
        from ..jobs.explain.methods import check_layers

        reg = self.registry
        ctx = ExplainContext(model=self.model, num_outputs=self.model.num_outputs, batch_size=int(batch_size))
        explainer = reg.build("explainer", {"name": method, "params": params}, ctx)
        check_layers([(method, {"name": method, "params": params}, explainer)], self.model)
        return explainer

    def attributed_model(self, explainer: Callable) -> torch.nn.Module:
        """The model an explainer runs on: the hook-safe copy (built once) when the explainer hooks activations
        or layers (its ``needs_hook_safe_model`` flag; assumed when it has none), else the model itself."""
        from ..jobs.explain.attribution import frozen, prepare_for_attribution

        if not getattr(explainer, "needs_hook_safe_model", True):
            return frozen(self.model)
        if self._prepared is None:
            example = torch.zeros(1, self.transform.channels, *self.transform.image_size, device=self.device)
            self._prepared = prepare_for_attribution(self.model, example)
        return self._prepared

    def attribute(self, explainer: Callable, batch: Batch, target: str | int = "predicted") -> np.ndarray:
        """Attributions (len(batch.ok), C|1, H, W) of a batch's readable inputs."""
        from ..errors import NotApplicable
        from ..jobs.explain.methods import attribute

        x = self.transform.normalise(batch.raw)
        model = self.attributed_model(explainer)
        try:
            return attribute(explainer, model, x, self.targets(batch.scores, target), len(x), self.device)
        except NotApplicable as exc:
            raise UserError(f"{explainer!r} does not apply to the model of {self.file}: {exc}") from None

    def targets(self, scores: np.ndarray, target: str | int = "predicted") -> np.ndarray | None:
        """Class indices to explain; None for a single-output (sigmoid) model, which has one logit."""
        if getattr(self.model, "output", "softmax") == "sigmoid":
            return None
        if target == "predicted":
            return self.classify(scores)
        if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < len(self.class_names):
            raise UserError(f"target {target!r}: expected 'predicted' or a class index 0..{len(self.class_names) - 1}")
        return np.full(len(scores), target)


def _stack(parts: dict[int, np.ndarray], n: int) -> np.ndarray | None:
    """Rows by position into one (n, ...) array, NaN where a position has none; None when there are none."""
    if not parts:
        return None
    first = next(iter(parts.values()))
    out = np.full((n, *first.shape), np.nan, dtype=np.float32)
    for i, a in parts.items():
        out[i] = a
    return out


# ---------------------------------------------------------------------------------------------------------------
# loading a run's model
# ---------------------------------------------------------------------------------------------------------------
def model_file(run: str | Path, checkpoint: str = "best_val_loss") -> Path:
    """The model file of a run's checkpoint (or ``run`` itself when it is a model file); a UserError for a
    missing run or an unknown checkpoint."""
    path = Path(run).expanduser()
    if path.is_file():
        return path
    if not path.exists():
        raise UserError(f"{path}: no such run directory (medattn runs lists the runs of a folder)")
    rd = RunDir(path)
    names = rd.checkpoint_names()
    if not names:
        inside = [run_label(r) for r in ExperimentDir(path).runs()]
        why = ("it has no checkpoints: run the train job first" if rd.config.is_file() else
               f"an experiment folder: give one of its runs ({', '.join(inside)})" if inside else
               "not a medattn run directory (medattn runs lists the runs of a folder)")
        raise UserError(f"{path}: {why}")
    if checkpoint not in names:
        raise UserError(f"{path}: no checkpoint {checkpoint!r}; this run has: {', '.join(names)}")
    return rd.checkpoint(checkpoint)


def load_run(run: str | Path, checkpoint: str = "best_val_loss", device: str | torch.device = "cpu", *,
             allow_changed_plugins: bool = False) -> Predictor:
    """The :class:`Predictor` of a run directory's checkpoint (``best_val_loss``, ``last``, any kept
    ``best_<split>_<metric>``), or of a model file given directly. ``device``: cpu, cuda, cuda:N, mps or auto.
    A plugin file that differs from the sha256 the model file records is a UserError naming both hashes;
    ``allow_changed_plugins=True`` loads it with a warning."""
    from ..device import resolve_device
    from ..store import checkpoints

    file = model_file(run, checkpoint)
    dev = resolve_device(str(device))  # (a torch.device too: resolving is where the reproducible mode acts)
    model = checkpoints.load_model(file, device=str(dev), allow_changed_plugins=allow_changed_plugins)
    return Predictor(model, dict(model.meta), file, dev, allow_changed_plugins=allow_changed_plugins)


def run_label(rd: RunDir) -> str:
    """How a run is named in messages: ``variant``, or ``variant/seed-N``."""
    return f"{rd.root.parent.name}/{rd.root.name}" if rd.root.name.startswith("seed-") else rd.root.name
