"""The one checkpoint format: files that ``torch.load(weights_only=True)`` reads, so nothing is unpickled.

A checkpoint holds only tensors, dicts, lists, tuples, str, int, float, bool and None. Kept checkpoints
(``best_*.pt`` and ``last.pt``) are self-contained model files::

    {"format": 3, "model": state_dict, "epoch": int, "monitor": str | None, "value": float | None,
     "meta": {"config": the resolved config, "plugins": [{file, sha256, source} | {module, distribution, version}],
              "components": {kind: {name, plugin, version}}, "class_names": [...], "image_size": [h, w], "channels": int,
              "mean": [...] | None, "std": [...] | None,
              "threshold": {"value": float, "rule": "fixed" | "youden" | ..., "source": str},
              "calibration": None | {"method": "temperature" | "vector", "output", "weight", "bias", ...},
              "conformal": None | {"alpha", "score", "class_conditional", "thresholds", "split", ...},
              "versions": {"medattn": ..., "torch": ..., "<plugin>": ...}, "data_fingerprint": str | None}}

``mean``/``std`` are None when the config says ``dataset.normalize: none``; the threshold was chosen on that
epoch's validation outputs by the rule of the config's ``test`` section, on the probabilities as calibrated by
``calibration`` (test.calibration; medattn.evidence.calibration), and ``conformal`` holds the prediction-set
thresholds of test.conformal (medattn.evidence.conformal); the test job refits both when the ``test`` section
changed after training. A file written before medattn calibrated has neither key: it predicts uncalibrated. ``last.pt`` also holds what an exact
resume needs: optimizer, scheduler, scaler, rng (tensors and lists), history, best, stale, es_best, stopped.

Files are written atomically (a temporary file, then a rename), so a kill leaves the previous file or the new
one, never a torn one.
"""
from __future__ import annotations

import copy
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..registry import is_file_spec

FORMAT = 3
_PLAIN = (str, int, float, bool, type(None))


def save(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` (numpy numbers and arrays become Python numbers and lists) through a temporary file in
    the same folder and a rename. (No fsync: it guards against a power cut, not a kill, and cost ~5% of a small
    CPU run's training time.)"""
    state = plain(state)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def plain(obj: Any) -> Any:
    """``obj`` with numpy values, paths and subclasses of str/int/float made plain data (the object itself when
    it already is); anything else is a TypeError, since ``torch.load(weights_only=True)`` would refuse the file."""
    if type(obj) in _PLAIN or isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, dict):
        items = {k: plain(v) for k, v in obj.items()}
        return obj if all(items[k] is v for k, v in obj.items()) else type(obj)(items)
    if isinstance(obj, (list, tuple)):
        items = [plain(v) for v in obj]
        return obj if all(a is b for a, b in zip(items, obj)) else (list if isinstance(obj, list) else tuple)(items)
    if isinstance(obj, (torch.Size, torch.dtype, torch.device)):
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist") and type(obj).__module__ == "numpy":  # numpy scalar or array
        return obj.tolist()
    for kind in (bool, int, float, str):  # e.g. torch.__version__ is a str subclass
        if isinstance(obj, kind):
            return kind(obj)
    raise TypeError(f"checkpoint: {type(obj).__name__} is not plain data")


def load(path: Path) -> dict[str, Any]:
    """A checkpoint's dict, on the CPU, read with ``weights_only=True``; a UserError naming the file when it is
    missing, truncated, damaged, or holds anything but tensors and plain data."""
    try:
        with warnings.catch_warnings():  # a foreign pickle protocol: the error below says enough
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: checkpoint not found") from None
    except Exception as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc)) if isinstance(exc, pickle.UnpicklingError) else None
        if found:
            raise UserError(f"{path}: refused: it holds objects other than tensors and plain data ({found[1]}), "
                            "which could run code when loaded. It was tampered with, or written by another program "
                            "or an older medattn; nothing was unpickled") from None
        detail = "not a torch checkpoint" if isinstance(exc, pickle.UnpicklingError) else _first_line(exc)
        raise UserError(f"{path}: not a readable checkpoint (truncated or damaged?): {detail}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a medattn checkpoint (holds a {type(data).__name__}, not a dict)")
    return data


def _first_line(exc: BaseException) -> str:
    """The first sentence of an exception's message (torch appends paragraphs of advice)."""
    lines = str(exc).strip().splitlines()
    return lines[0].split(". ")[0] if lines else type(exc).__name__


def model_file(path: Path) -> dict[str, Any]:
    """A kept checkpoint (``best_*.pt`` or ``last.pt``) checked to be a model file of this format."""
    data = load(path)
    if data.get("format") != FORMAT or not isinstance(data.get("meta"), dict) or not isinstance(data.get("model"), dict):
        raise UserError(f"{path}: not a medattn model file of format {FORMAT} (found format "
                        f"{data.get('format')!r}); train the run again with this medattn")
    return data


def read_meta(path: Path) -> dict[str, Any]:
    """The ``meta`` of a model file: config, class names, image size, channels, mean/std, threshold, versions,
    data fingerprint."""
    return model_file(Path(path))["meta"]


def load_model(path: Path | str, device: Any = "cpu", registry: Any = None, allow_changed_plugins: bool = False) -> Any:
    """The model of a model file, in eval mode on ``device``, built from its meta: no data set needed.

    The model has ``class_names`` and ``meta`` (the file's meta); a missing file names the checkpoints beside
    it. ``registry``: where the components come from (default: the installed plugins plus the file's plugins,
    plugin files from the run's copies, :func:`medattn.store.plugin_copies.registry_for`; their code runs: load only
    files you trust). A plugin file whose sha256 differs from the file's record is a UserError, unless
    ``allow_changed_plugins`` (then a warning).
    The global RNG states are left as they were.
    """
    path = Path(path)
    if not path.is_file():
        have = sorted(p.stem for p in path.parent.glob("*.pt") if p.is_file()) if path.parent.is_dir() else []
        raise UserError(f"{path}: checkpoint not found (run the train job first"
                        f"{'; this run has: ' + ', '.join(have) if have else ''})")
    data = model_file(path)
    meta = data["meta"]
    config = buildable(meta["config"])
    if registry is None:
        from .plugin_copies import registry_for

        registry = registry_for(path, meta, allow_changed_plugins)
    from ..components.model import build_model

    with torch.random.fork_rng(devices=[]):  # building initialises weights: keep the caller's random stream
        model = build_model(registry, config, list(meta["class_names"]))
    try:
        model.load_state_dict(data["model"])
    except RuntimeError as exc:  # "Error(s) in loading state_dict ...:" then the keys that do not fit
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise UserError(f"{path}: the weights do not fit the model its config builds (have the plugins "
                        f"changed since training?): {lines[-1][:300] if lines else exc}") from None
    model.meta = meta
    return model.to(device).eval()


def buildable(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of a model file's config whose backbone loads no pretrained or local weights: the file's own
    weights replace them, and the machine that loads it may have neither."""
    config = copy.deepcopy(config)
    params = config["model"]["backbone"].get("params") or {}
    if params.get("pretrained"):
        params["pretrained"] = False
    if params.get("weights"):
        params["weights"] = None
    return config


def model_meta(config: dict[str, Any], class_names: list[str], backbone: Any, registry: Any,
               fingerprint: str | None) -> dict[str, Any]:
    """The meta of the run's model files, all but ``threshold`` (chosen per epoch on validation)."""
    from ..components.data import normalisation
    from ..components.model import image_size
    from .plugin_copies import component_records, plugin_records

    mean, std = normalisation(config, backbone)
    portable = portable_config(config, registry)
    return plain({"config": portable, "plugins": plugin_records(portable),
                  "components": component_records(config, registry), "class_names": list(class_names),
                  "image_size": list(image_size(config)), "channels": int(getattr(backbone, "in_chans", 3)),
                  "mean": None if mean is None else mean.flatten().tolist(),
                  "std": None if std is None else std.flatten().tolist(),
                  "threshold": None, "versions": versions(config, registry), "data_fingerprint": fingerprint})


def portable_config(config: dict[str, Any], registry: Any) -> dict[str, Any]:
    """A copy of the config whose ``plugins:`` files are absolute paths (they were relative to the experiment
    file, which a model file does not know)."""
    config = copy.deepcopy(config)
    loaded = [name for name, _ in registry.pm.list_name_plugin()]
    specs = []
    for spec in config.get("plugins") or []:
        if is_file_spec(spec) and not Path(spec).is_absolute():
            tail = Path(spec).parts
            found = [name for name in loaded if Path(name).parts[-len(tail):] == tail]
            spec = str(Path(found[0]).resolve()) if found else spec
        specs.append(spec)
    if "plugins" in config:
        config["plugins"] = specs
    return config


def versions(config: dict[str, Any], registry: Any) -> dict[str, str | None]:
    """medattn, torch, and the plugin of every component the model and its data came from."""
    import importlib.metadata as md

    try:
        medattn = md.version("medattn")
    except md.PackageNotFoundError:
        medattn = None
    out: dict[str, str | None] = {"medattn": medattn, "torch": str(torch.__version__)}
    model = config["model"]
    picked = [("dataset", config["dataset"]), ("backbone", model["backbone"]), ("attention", model.get("attention")),
              ("head", model.get("head")), ("transform", (config.get("train") or {}).get("augment"))]
    for kind, spec in picked:
        if isinstance(spec, dict) and (kind, spec.get("name")) in registry.components:
            comp = registry.get(kind, spec["name"])
            out[comp.plugin] = comp.version or None
    return out
