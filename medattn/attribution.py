"""Attribution over a run (the explain job's implementation): attributions of selected images for each configured
explainer, saved under explanations/, and their quality scores (medattn.explanation_quality).

Files: ``samples.npz`` (index, ids, labels, scores, preds, targets, un-normalised images, masks when the data set
has them) and one ``<method>.npz`` per explainer with ``attributions`` (N, C|1, H, W) aligned with the samples;
``quality.json`` and ``quality_curves.npz`` (deletion / insertion curves); ``attention_raw.npz`` (the maps the
attention module exposes, when it does). ``naming: seed`` also writes the seed's ``.npy`` files (see seed_files).
"""
from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from .config.schema import component_params
from .errors import UserError
from .hookspecs import ExplainContext
from .metrics import predictions
from .runner import atomic_write_text

# activation modules whose gradient captum's hook-based methods (GuidedBackprop, Deconvolution, DeepLift) rewrite
HOOKED = (nn.ReLU, nn.ELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softmax, nn.MaxPool1d, nn.MaxPool2d,
          nn.MaxPool3d)
_FUNCTIONAL_RELU = (torch.relu, torch.nn.functional.relu, torch.relu_)


class NotApplicable(Exception):
    """Raised by an explainer that has nothing to say for this model (e.g. attention maps without attention)."""


# ---------------------------------------------------------------------------------------------------------------
# the prepared model
# ---------------------------------------------------------------------------------------------------------------
def prepare_for_attribution(model: nn.Module, example: torch.Tensor | None = None,
                            log: Any = None) -> nn.Module:
    """A copy of the model safe for hook-based attribution: no in-place activations, no module called twice.

    captum's GuidedBackprop / Deconvolution / DeepLift hook activation *modules*; torchvision's ResNet blocks
    call one in-place ReLU twice, DenseNet's ReLUs run in place, timm's CBAM calls one MLP (and its ReLU) twice.
    The copy (1) retraces with torch.fx every backbone module whose forward calls a hooked submodule more than
    once (found by counting calls on ``example``) and gives each call site its own copy; (2) routes the calls of
    any module still called more than once (attention modules keep state, so they are not retraced) to one copy
    per call (:class:`CallSites`); (3) turns functional ``relu`` calls inside fx graphs (backbones cut with
    ``create_feature_extractor``) into ``nn.ReLU`` modules; (4) replaces every ``nn.ReLU`` by a fresh non-in-place
    one and switches ``inplace`` off everywhere else. Parameters stop requiring gradients.
    """
    prepared = copy.deepcopy(model).eval()  # (deepcopy of an fx GraphModule comes back in train mode)
    if example is not None:
        scope = "backbone." if isinstance(getattr(prepared, "backbone", None), nn.Module) else ""
        for name in _reused(prepared, example[:1]):
            if name.startswith(scope):
                _unshare(prepared, name)
    for gm in [m for m in prepared.modules() if isinstance(m, fx.GraphModule)]:
        _functional_relu_to_modules(gm)
    for parent in list(prepared.modules()):
        for child_name, child in list(parent.named_children()):
            if type(child) is nn.ReLU:
                setattr(parent, child_name, nn.ReLU(inplace=False))
            elif isinstance(getattr(child, "inplace", None), bool):
                child.inplace = False
    if example is not None:
        left = _reused(prepared.eval(), example[:1])
        for name, count in left.items():
            parent_name, _, attr = name.rpartition(".")
            setattr(prepared.get_submodule(parent_name) if parent_name else prepared, attr,
                    CallSites(prepared.get_submodule(name), count))
        if left:
            prepared.register_forward_pre_hook(_reset_call_sites)
        still = _reused(prepared.eval(), example[:1])
        if still and log is not None:
            log(f"   explain: activations still called more than once (hook-based methods may be off): {still}")
    for p in prepared.parameters():
        p.requires_grad_(False)
    return prepared.eval()


class CallSites(nn.Module):
    """Stands for a module called several times per forward: the i-th call goes to its own copy."""

    def __init__(self, module: nn.Module, count: int):
        super().__init__()
        self.sites = nn.ModuleList(copy.deepcopy(module) for _ in range(count))
        self.calls = 0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        site = self.sites[min(self.calls, len(self.sites) - 1)]
        self.calls += 1
        return site(*args, **kwargs)


def _reset_call_sites(root: nn.Module, args: Any) -> None:
    """Forward pre-hook of the prepared model: every forward starts counting calls afresh."""
    for m in root.modules():
        if isinstance(m, CallSites):
            m.calls = 0


def _reused(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """{name: calls} of hooked activation modules called more than once in one forward."""
    calls: Counter[str] = Counter()
    names = {id(m): n for n, m in model.named_modules()}
    handles = [m.register_forward_hook(lambda mod, i, o: calls.update([names[id(mod)]]))
               for m in model.modules() if isinstance(m, HOOKED)]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return {n: c for n, c in sorted(calls.items()) if c > 1}


def _unshare(model: nn.Module, name: str) -> None:
    """Give each call site of submodule ``name`` its own copy by fx-tracing the module that calls it."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if not isinstance(parent, fx.GraphModule):
        try:
            traced = fx.symbolic_trace(parent)
        except Exception:  # noqa: BLE001 - control flow fx cannot trace: leave it, the caller logs what is left
            return
        if parent_name:
            grand, _, attr = parent_name.rpartition(".")
            setattr(model.get_submodule(grand) if grand else model, attr, traced)
        else:
            return  # the root itself: cannot be swapped in place
        parent = traced
    _split_call_sites(parent)


def _split_call_sites(gm: fx.GraphModule) -> None:
    """In an fx graph, retarget the 2nd, 3rd... call of any hooked module to a fresh copy of it."""
    seen: Counter[str] = Counter()
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), HOOKED):
            continue
        seen[node.target] += 1
        if seen[node.target] > 1:
            new = f"{node.target.replace('.', '_')}_call{seen[node.target]}"
            gm.add_submodule(new, copy.deepcopy(gm.get_submodule(node.target)))
            node.target = new
    gm.recompile()


def _functional_relu_to_modules(gm: fx.GraphModule) -> None:
    """``F.relu(x)`` / ``torch.relu(x)`` nodes of an fx graph become calls of their own ``nn.ReLU`` module."""
    changed = 0
    for node in list(gm.graph.nodes):
        if (node.op == "call_function" and node.target in _FUNCTIONAL_RELU) or (
                node.op == "call_method" and node.target in ("relu", "relu_")):
            changed += 1
            name = f"medattn_relu_{changed}"
            gm.add_submodule(name, nn.ReLU())
            with gm.graph.inserting_after(node):
                new = gm.graph.call_module(name, (node.args[0],))
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
    if changed:
        gm.recompile()


def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """The model with every parameter re-initialised (Adebayo et al. 2018's model randomisation test)."""
    rand = copy.deepcopy(model)
    torch.manual_seed(seed)
    for m in rand.modules():
        if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
            m.reset_parameters()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.uniform_(m.weight, 0.5, 1.5)  # reset gives weight 1, bias 0: keep BN from being the identity
            nn.init.normal_(m.bias, 0.0, 0.1)
    for p in rand.parameters():
        p.requires_grad_(False)
    return rand.eval()


# ---------------------------------------------------------------------------------------------------------------
# which images
# ---------------------------------------------------------------------------------------------------------------
def method_labels(methods: list[dict]) -> list[str]:
    """File labels for the methods: their names, numbered where a name repeats."""
    names = [m["name"] for m in methods]
    return [n if names.count(n) == 1 else f"{n}-{names[:i].count(n) + 1}" for i, n in enumerate(names)]


def agreed_ids(run, checkpoint: str, variants: list[str]) -> tuple[set[str], list[str]]:
    """Test image ids every compared variant classifies correctly (the seed's selection), from their predictions."""
    import csv

    root = run.dir.parent
    names = variants or sorted(p.name for p in root.iterdir() if (p / "config.yaml").is_file())
    if run.variant not in names:
        names.append(run.variant)
    ok: set[str] | None = None
    missing = []
    for name in names:
        file = root / name / "metrics" / f"predictions_{checkpoint}.csv"
        if name == run.variant:
            continue  # this run's own predictions are recomputed by select()
        if not file.is_file():
            missing.append(name)
            continue
        with open(file) as fh:
            right = {r["id"] for r in csv.DictReader(fh) if r["label"] == r["prediction"]}
        ok = right if ok is None else ok & right
    if missing:
        raise UserError(f"explain.select: agreed needs the test predictions of every compared variant; missing "
                        f"metrics/predictions_{checkpoint}.csv for {', '.join(missing)} under {root}. Run the "
                        f"train and test jobs of every variant first (medattn run FILE --jobs train,test), then "
                        f"explain (--jobs explain,figure), or list the variants to compare in explain.variants")
    return (ok if ok is not None else set()), names


def select(run, cfg: dict, model: nn.Module, ds) -> dict | None:
    """The images to explain and what the model says of them (predictions batched)."""
    mode = cfg["select"]
    n = min(int(cfg["samples"]), len(ds))
    order = list(range(len(ds)))
    allowed: set[str] | None = None
    if mode == "random":
        seed = cfg.get("select_seed")
        order = np.random.default_rng(int(run.config.get("seed", 42) if seed is None else seed)).permutation(
            len(ds)).tolist()
    elif mode == "indices":
        order = [int(i) for i in cfg.get("indices") or []]
        bad = [i for i in order if not 0 <= i < len(ds)]
        if not order or bad:
            raise UserError(f"explain.indices: {bad or 'empty'}: give indices in 0..{len(ds) - 1} of the "
                            f"{cfg['split']} split")
        n = len(order)
    elif mode == "agreed":
        allowed, names = agreed_ids(run, cfg["checkpoint"], list(cfg.get("variants") or []))
        run.log(f"   explain: images every variant classifies correctly ({', '.join(names)})")
    picked: list[int] = []
    items: list[dict] = []
    scores: list[np.ndarray] = []
    maps: dict[str, list[np.ndarray]] = {}  # the attention module's maps of the picked images
    bs = int(cfg["batch_size"])
    for start in range(0, len(order), bs):
        chunk = [ds[i] for i in order[start:start + bs]]
        if allowed is not None:
            keep = [k for k, it in enumerate(chunk) if str(it["id"]) in allowed]
            idx = [order[start + k] for k in keep]
            chunk = [chunk[k] for k in keep]
        else:
            idx = order[start:start + bs]
        if not chunk:
            continue
        with torch.no_grad():
            score = model.probabilities(model(torch.stack([it["image"] for it in chunk]).to(run.device)))
            att = {k: v.detach().float().cpu().numpy() for k, v in model.attention_maps().items()}
        score = score.cpu().numpy()
        pred = predictions(score)
        for j, (i, it, s, p) in enumerate(zip(idx, chunk, score, pred)):
            right = int(p) == int(it["label"])
            if (mode in ("correct", "agreed") and not right) or (mode == "misclassified" and right):
                continue
            picked.append(i)
            items.append(it)
            scores.append(s)
            for k, v in att.items():
                maps.setdefault(k, []).append(v[j])
            if len(picked) == n:
                break
        if len(picked) == n:
            break
    if not picked:
        return None
    scores_arr = np.stack(scores)
    out = {
        "index": np.array(picked), "ids": np.array([str(it["id"]) for it in items]),
        "labels": np.array([int(it["label"]) for it in items]),
        "scores": scores_arr, "preds": predictions(scores_arr).astype(int),
        "images": torch.stack([it["raw"] for it in items]).numpy().astype(np.float32),
        "inputs": torch.stack([it["image"] for it in items]),
    }
    if maps:
        out["attention"] = {k: np.stack(v) for k, v in maps.items()}
    if all("mask" in it for it in items):
        out["masks"] = torch.stack([it["mask"] for it in items]).numpy().astype(np.float32)
    return out


def targets_for(cfg: dict, model: nn.Module, chosen: dict) -> np.ndarray | None:
    """Class indices to explain: predicted (default), true, or a given class; None for a single-output model."""
    if model.output == "sigmoid":
        return None
    how = cfg.get("target", "predicted")
    if how == "predicted":
        return chosen["preds"].astype(int)
    if how == "true":
        return chosen["labels"].astype(int)
    if not 0 <= int(how) < model.num_outputs:
        raise UserError(f"explain.target: class {how} does not exist (the model has {model.num_outputs} outputs)")
    return np.full(len(chosen["labels"]), int(how))


# ---------------------------------------------------------------------------------------------------------------
# the job
# ---------------------------------------------------------------------------------------------------------------
def build_explainers(run, cfg: dict, ctx: ExplainContext) -> list[tuple[str, dict, Any]]:
    """(label, spec, callable) per configured method; built once per run."""
    out = []
    for spec, label in zip(cfg["methods"], method_labels(cfg["methods"])):
        fn = run.registry.factory("explainer", spec["name"])(component_params(run.registry, "explainer", spec), ctx)
        out.append((label, spec, fn))
    return out


def attribute(explainer, model: nn.Module, inputs: torch.Tensor, target: np.ndarray | None, batch_size: int,
              device: Any) -> np.ndarray:
    """Attributions of ``inputs`` in batches of ``batch_size`` (N, C|1, H, W), float32 on the CPU."""
    parts = []
    for start in range(0, len(inputs), batch_size):
        x = inputs[start:start + batch_size].to(device)
        t = None if target is None else torch.as_tensor(target[start:start + batch_size], device=device)
        attr = explainer(model, x, t)
        if tuple(attr.shape[-2:]) != tuple(x.shape[-2:]):
            raise UserError(f"explainer returned maps of shape {tuple(attr.shape)} for inputs {tuple(x.shape)}")
        parts.append(attr.detach().float().cpu())
    return torch.cat(parts).numpy()


def explain_run(run) -> None:
    """The explain job: select images, attribute them with every method, save, score."""
    from . import explanation_quality as quality

    cfg = run.config["explain"]  # at least one method: the schema and the runner's plan check it
    _, splits = run.data()
    model = run.load_model(cfg["checkpoint"])
    for stale in [*(run.dir / "explanations").glob("*.npz"), *(run.dir / "explanations").glob("*.json")]:
        stale.unlink()  # never leave an earlier explain's maps or scores behind (the figures would draw them)
    chosen = select(run, cfg, model, splits[cfg["split"]])
    if chosen is None:  # e.g. no image every variant gets right: say so, and let the figure job go on
        run.log(f"   explain: no {cfg['split']} image qualifies for select: {cfg['select']}; nothing explained")
        return
    inputs = chosen.pop("inputs")
    attention = chosen.pop("attention", None)
    if attention:
        np.savez_compressed(run.path("explanations", "attention_raw.npz"), **attention)
    target = targets_for(cfg, model, chosen)
    chosen["targets"] = np.full(len(inputs), -1) if target is None else target
    np.savez_compressed(run.path("explanations", "samples.npz"), **chosen)
    prepared = prepare_for_attribution(model, inputs[:1].to(run.device), run.log)
    bs = int(cfg["batch_size"])
    ctx = ExplainContext(model=prepared, num_outputs=model.num_outputs, batch_size=bs)
    qcfg = cfg["quality"]
    scores: dict[str, dict[str, float]] = {}
    curves: dict[str, np.ndarray] = {}
    randomised = None
    for label, spec, explainer in build_explainers(run, cfg, ctx):
        try:
            attributions = attribute(explainer, prepared, inputs, target, bs, run.device)
        except NotApplicable as exc:
            run.log(f"   explain {label}: skipped ({exc})")
            continue
        np.savez_compressed(run.path("explanations", f"{label}.npz"), attributions=attributions,
                            method=spec["name"], params=json.dumps(spec.get("params", {}), default=str))
        run.log(f"   explain {label}: {attributions.shape[0]} image(s) -> explanations/{label}.npz")
        if cfg["naming"] == "seed":
            seed_files(run, cfg, label, chosen, attributions)
        if qcfg["scores"]:
            if "randomisation" in qcfg["scores"] and randomised is None:
                randomised = randomized_copy(prepared, int(run.config.get("seed", 42)))
            s, c = quality.score_method(prepared, explainer, inputs, target, attributions, chosen.get("masks"),
                                        qcfg, run.device, bs, randomised)
            scores[label] = s
            curves.update({f"{label}/{k}": v for k, v in c.items()})
            run.log(f"   quality {label}: " + " ".join(f"{k}={v:.4g}" for k, v in s.items()))
    if scores:
        atomic_write_text(run.path("explanations", "quality.json"), json.dumps(scores, indent=2))
    if curves:
        np.savez_compressed(run.path("explanations", "quality_curves.npz"), **curves)


def seed_dir(run, cfg: dict) -> Path:
    """Where ``naming: seed`` writes: explain.seed_dir (relative to the run) or runs/<exp>/attributes/<backbone>/."""
    if cfg.get("seed_dir"):
        return (run.dir / cfg["seed_dir"]).resolve()
    return run.dir.parent / "attributes" / run.config["model"]["backbone"]["name"]


def _hwc3(a: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W, 3) float32: one channel repeated, as the seed's RGB-replicated images."""
    a = np.transpose(a, (1, 2, 0)).astype(np.float32)
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a


def seed_files(run, cfg: dict, label: str, chosen: dict, attributions: np.ndarray) -> list[Path]:
    """The seed's files: img_{idx}_original_{label}.npy and img_{idx}_{method}_{variant}_label_{label}.npy."""
    out_dir = seed_dir(run, cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    method = (cfg.get("seed_names") or {}).get(label, label)
    variant = cfg.get("seed_variant") or run.variant
    written = []
    for idx, y, image, attr in zip(chosen["index"], chosen["labels"], chosen["images"], attributions):
        original = out_dir / f"img_{int(idx)}_original_{int(y)}.npy"
        np.save(original, _hwc3(image))
        path = out_dir / f"img_{int(idx)}_{method}_{variant}_label_{int(y)}.npy"
        np.save(path, _hwc3(attr))
        written += [original, path]
    return written
