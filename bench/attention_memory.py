"""Peak memory of one step of the train job: the plain backbone against MLDAM, naive position attention against SDPA.

One step is what the train job runs: ``medattn.train.engine.train_epoch`` over one batch of 1 image, with the
loss terms of ``train.loss`` (``--loss``: the default ``classification``, or ``attention_mask``, which
supervises the attention maps and so builds them with their graph), BCE-with-logits, backward and an Adam
update, on the core's model class. Every configuration has the same pooled head, the ``mlp`` head with
``pool: avg`` (global average pooling, then C -> C/2 -> 1), so that a ratio compares attention with none:
- plain: the backbone without attention (vgg16, densenet121);
- MLDAM goncalves2021 on vgg16 (q from pool3, stride 8, pooled to pool5) and on densenet121, and MLDAM
  mishra2019 on densenet121, each with ``attention_impl`` naive and sdpa;
- dual (DANet PAM + CAM) on vgg16's stride-8 level conv4_3, naive and sdpa: where the N x N matrix itself
  dominates (N = (size/8)^2).

The papers' flatten heads are measured apart, as the infeasible case they are at full resolution: Goncalves &
Cardoso's baseline (vgg16, flatten_linear) and their MLDAM port's head (flatten, then C -> C/2 -> 1: C*h*w*C
weights, 268M for vgg16 at 1024 px, 4.3G for densenet121 at 2048 px), which no attention implementation changes.

On CPU each configuration runs in its own process whose address space is capped (``--cap-gb``, default 20) with
resource.setrlimit, and its peak RSS (ru_maxrss) is read; a configuration that cannot run within the cap is reported
as ``oom``, not allowed to take the machine down. On CUDA (``--device cuda``) they run in this process and
torch.cuda.max_memory_allocated is read; ``--bf16`` (autocast) and ``--channels-last`` apply there, as the train
job's ``train.amp: bf16`` and ``train.channels_last``.

Also measured: sdpa_parity, the largest |sdpa - naive| of outputs and input gradients (fp32, relative to the
largest value, row and global softmax, N = 49, 256, 1024, 4096), and sdpa_vs_naive_speed_224, naive step time over
sdpa step time for MLDAM goncalves2021 on vgg16 at 224 px (medians of --steps steps, stepped round robin; above 1
means sdpa is faster).

Last line: ``vgg16_1024_mem_ratio=... densenet121_2048_mem_ratio=... sdpa_vs_naive_mem_1024=...
flatten_vs_pooled_vgg16_1024=... densenet121_2048_flatten=... sdpa_parity=... sdpa_vs_naive_speed_224=...``; a
mem_ratio is MLDAM goncalves2021 (sdpa) over plain at that size, both with the pooled head; sdpa_vs_naive_mem_1024
is the sdpa peak over the naive peak for the stride-8 dual attention on vgg16 at 1024 px (where the MLDAM's
32x32-position map is too small to matter: the line above it gives those too); flatten_vs_pooled_vgg16_1024 is
the MLDAM with the port's flatten head over the same with the pooled head, and densenet121_2048_flatten the peak
(GB) of the port's MLDAM with its flatten head at 2048 px, ``oom`` where it cannot run. A value not measured (size
not in --sizes, or oom) is ``na``. ``--quick``: sizes 128 and 224, 2 speed steps.

Full run: ``python bench/attention_memory.py`` (CPU, hours: the 2048-px runs dominate), or on a GPU machine
``python bench/attention_memory.py --device cuda --bf16 --channels-last``.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = [224, 512, 1024, 2048]
MLDAM = [("vgg16", "goncalves2021"), ("densenet121", "goncalves2021"), ("densenet121", "mishra2019")]


def _imports() -> None:
    """medattn and its plugins from an installed copy, else from this checkout (a GPU machine with torch,
    torchvision and pluggy but without medattn installed)."""
    try:
        importlib.import_module("medattn_plugins")
    except ImportError:
        sys.path.insert(0, str(ROOT))
        sys.modules["medattn_plugins"] = importlib.import_module("plugins")


def configurations(sizes: list[int]) -> list[dict]:
    """The configurations per size: the pooled-head ones (compared), then the papers' flatten heads (apart)."""
    out = []
    for size in sizes:
        for arch in ("vgg16", "densenet121"):
            out.append({"size": size, "arch": arch, "attention": "plain", "impl": "-", "head": "pooled"})
        for arch, variant in MLDAM:
            for impl in ("naive", "sdpa"):
                out.append({"size": size, "arch": arch, "attention": f"mldam-{variant}", "impl": impl,
                            "head": "pooled"})
        for impl in ("naive", "sdpa"):
            out.append({"size": size, "arch": "vgg16", "attention": "dual-conv4_3", "impl": impl, "head": "pooled"})
    for size in sizes:
        out.append({"size": size, "arch": "vgg16", "attention": "plain", "impl": "-", "head": "flatten"})
        for arch in ("vgg16", "densenet121"):
            out.append({"size": size, "arch": arch, "attention": "mldam-goncalves2021", "impl": "sdpa",
                        "head": "flatten"})
    return out


def _component(kind: str, name: str):
    """The built-in component record (read from the plugin packages: no installed entry points needed)."""
    for package in ("backbones", "attention", "heads", "losses"):
        for comp in importlib.import_module(f"medattn_plugins.{package}").medattn_components():
            if comp.kind == kind and comp.name == name:
                return comp
    raise KeyError(f"{kind} {name}")


def _params(kind: str, name: str, **given) -> dict:
    """A component's params with its schema defaults filled in."""
    schema = _component(kind, name).params_schema
    return {**{k: v["default"] for k, v in schema["properties"].items()}, **given}


def _factory(kind: str, name: str):
    module, _, func = _component(kind, name).factory.partition(":")
    return getattr(importlib.import_module(module), func)


POOLED = ("mlp", {"hidden": ["C", "C/2"], "pool": "avg"})  # the same head for every compared configuration


def build(cfg: dict):
    """The core's model of one configuration (random weights)."""
    import torch

    from medattn.components.model import MedAttnModel
    from medattn.hookspecs import AttentionContext, HeadContext, ModelContext

    size = (cfg["size"], cfg["size"])
    bb = _factory("backbone", cfg["arch"])(
        _params("backbone", cfg["arch"], checkpointing=cfg.get("checkpointing", False)), ModelContext(size))
    kind = cfg["attention"]
    if kind == "plain":
        att = _factory("attention", "none")({}, AttentionContext(bb, size, 1))
    elif kind.startswith("mldam"):
        p = _params("attention", "mldam", variant=kind.split("-")[1], attention_impl=cfg["impl"])
        att = _factory("attention", "mldam")(p, AttentionContext(bb, size, 1))
    else:
        p = _params("attention", "dual", level="conv4_3", attention_impl=cfg["impl"])
        att = _factory("attention", "dual")(p, AttentionContext(bb, size, 1))
    if cfg["head"] == "pooled":
        head, hp = POOLED
    elif kind == "plain":
        head, hp = "flatten_linear", {}  # goncalves2021's baseline
    else:
        head, hp = "mlp", {"hidden": ["C", "C/2"]}  # the port's MLDAM head: flatten, then C -> C/2 -> 1
    with torch.no_grad():  # the head's input shape at the real size, scaled from a dry run at 64 px
        c, h, w = att.eval()(bb.eval()(torch.zeros(1, 3, 64, 64))).shape[1:]
        shape = (c, size[0] * h // 64, size[1] * w // 64)
    h = _factory("head", head)(_params("head", head, **hp), HeadContext(shape, 1))
    return MedAttnModel(bb, att, h, output="sigmoid", num_outputs=1, class_names=["0", "1"])


def loss_terms(name: str, size: int):
    """``train.loss`` as the train job builds it: ``[{name: classification}]`` (the default), or that plus
    ``attention_mask`` (weight 1), which makes the step build the attention maps with their graph."""
    from medattn.components.losses import LossTerms
    from medattn.hookspecs import LossContext

    ctx = LossContext(output="sigmoid", num_outputs=1, image_size=(size, size), has_masks=name != "classification")
    names = ["classification"] if name == "classification" else ["classification", name]
    return LossTerms([(n, 1.0, _factory("loss", n)(_params("loss", n), ctx)) for n in names])


def train_step(model, batch, opt, terms, bf16: bool, channels_last: bool):
    """One step of the train job: the engine's training pass over one batch, with the loss terms."""
    import torch

    from medattn.train import engine as E

    precision = E.Precision(torch.bfloat16 if bf16 else None, None, channels_last)
    E.train_epoch(model, [batch], opt, batch["image"].device, loss_fn=E.loss_function(model), precision=precision,
                  progress=False, terms=terms)


def one_batch(size: int, device: str, loss: str) -> dict:
    import torch

    batch = {"image": torch.randn(1, 3, size, size, device=device), "label": torch.ones(1, device=device),
             "id": ["0"]}
    if loss != "classification":
        batch["mask"] = torch.zeros(1, 1, size, size, device=device)
        batch["mask"][..., : size // 2, : size // 2] = 1
    return batch


def measure_one(cfg: dict, device: str, bf16: bool, channels_last: bool, loss: str) -> float:
    """Peak bytes of one train-job step (after one warm-up step on CUDA: the allocator's steady state)."""
    import torch

    model = build(cfg).to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # as the train job does with train.channels_last
    batch = one_batch(cfg["size"], device, loss)
    terms = loss_terms(loss, cfg["size"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    if device == "cuda":
        train_step(model, batch, opt, terms, bf16, channels_last)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    train_step(model, batch, opt, terms, bf16, channels_last)
    if device == "cuda":
        torch.cuda.synchronize()
        return float(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


def run_capped(cfg: dict, cap_gb: float, loss: str) -> float | None:
    """One CPU configuration in a child process with its address space capped; None when it cannot run."""
    cmd = [sys.executable, __file__, "--one", json.dumps(cfg), "--cap-gb", str(cap_gb), "--loss", loss]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stdout.splitlines():
        if line.startswith("PEAK "):
            return float(line.split()[1])
    return None


def child(cfg: dict, cap_gb: float, loss: str) -> None:
    cap = int(cap_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    _imports()
    import torch

    torch.manual_seed(0)
    try:
        peak = measure_one(cfg, "cpu", False, False, loss)
    except (MemoryError, RuntimeError) as exc:
        print("OOM", str(exc).splitlines()[0][:200])
        return
    print("PEAK", peak)


def parity() -> float:
    """max |sdpa - naive| over outputs and input gradients, relative to the largest value (fp32)."""
    import torch
    from medattn_plugins.attention.position import attend

    worst = 0.0
    gen = torch.Generator().manual_seed(0)
    for n in (49, 256, 1024, 4096):
        for softmax, d, c in (("row", 64, 512), ("global", 128, 128)):
            q, k = (torch.randn(1, d, n, generator=gen) * d ** -0.5 * 2 for _ in range(2))
            v = torch.randn(1, c, n, generator=gen)
            res = {}
            for impl in ("naive", "sdpa"):
                leaves = [t.clone().requires_grad_() for t in (q, k, v)]
                out = attend(*leaves, softmax, impl)
                grads = torch.autograd.grad((out * torch.cos(out.detach())).sum(), leaves)
                res[impl] = [out.detach(), *grads]
            for a, b in zip(res["sdpa"], res["naive"]):
                worst = max(worst, float((a - b).abs().max() / b.abs().max().clamp_min(1.0)))
    return worst


def speed_224(device: str, steps: int, bf16: bool) -> float:
    import torch

    torch.manual_seed(0)
    models = {impl: build({"size": 224, "arch": "vgg16", "attention": "mldam-goncalves2021", "impl": impl,
                           "head": "pooled"}).to(device).train() for impl in ("naive", "sdpa")}
    models["sdpa"].load_state_dict(models["naive"].state_dict())
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.0) for k, m in models.items()}
    batch = one_batch(224, device, "classification")
    terms = loss_terms("classification", 224).to(device)
    times: dict[str, list[float]] = {k: [] for k in models}
    for step in range(steps + 1):
        for impl, m in models.items():
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            train_step(m, batch, opts[impl], terms, bf16, False)
            if device == "cuda":
                torch.cuda.synchronize()
            if step:
                times[impl].append(time.perf_counter() - t)
    return statistics.median(times["naive"]) / statistics.median(times["sdpa"])


def fmt(v: float | None, digits: int = 2) -> str:
    return "na" if v is None else f"{v:.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=SIZES)
    ap.add_argument("--quick", action="store_true", help="sizes 128 224, 2 speed steps")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--bf16", action="store_true", help="autocast bf16 (CUDA)")
    ap.add_argument("--channels-last", action="store_true", help="channels_last model and input (CUDA)")
    ap.add_argument("--cap-gb", type=float, default=20.0, help="address-space cap of each CPU child process")
    ap.add_argument("--steps", type=int, default=5, help="timed steps of the 224-px speed comparison")
    ap.add_argument("--only", action="append", default=[],
                    help="run only configurations whose 'arch attention impl' contains this text (e.g. dual, "
                         "'vgg16 plain', 'mldam-goncalves2021 sdpa'; given twice: either); parity and speed are "
                         "measured all the same")
    ap.add_argument("--loss", default="classification", choices=["classification", "attention_mask"],
                    help="train.loss of the step: the default classification term, or that plus attention_mask "
                         "(which builds the attention maps with their graph)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        child(json.loads(args.one), args.cap_gb, args.loss)
        return
    _imports()
    import torch

    sizes, steps = ([128, 224], 2) if args.quick else (args.sizes, args.steps)
    peaks: dict[tuple, float | None] = {}
    print(f"{'size':>5} {'arch':<12} {'attention':<22} {'impl':<6} {'head':<8} peak_GB   (the train job's step, "
          f"loss {args.loss}, {args.device}{' bf16' if args.bf16 else ''}"
          f"{' channels_last' if args.channels_last else ''})")
    flatten_said = False
    chosen = [c for c in configurations(sizes)
              if not args.only or any(o in f"{c['arch']} {c['attention']} {c['impl']}" for o in args.only)]
    for cfg in chosen:
        if cfg["head"] == "flatten" and not flatten_said:
            print("the papers' flatten heads (C*h*w inputs: the head, not the attention, is what does not fit):")
            flatten_said = True
        if args.device == "cpu":
            peak = run_capped(cfg, args.cap_gb, args.loss)
        else:
            try:
                torch.manual_seed(0)
                peak = measure_one(cfg, "cuda", args.bf16, args.channels_last, args.loss)
            except torch.cuda.OutOfMemoryError:
                peak = None
            torch.cuda.empty_cache()
        peaks[(cfg["size"], cfg["arch"], cfg["attention"], cfg["impl"], cfg["head"])] = peak
        print(f"{cfg['size']:>5} {cfg['arch']:<12} {cfg['attention']:<22} {cfg['impl']:<6} {cfg['head']:<8} "
              f"{'oom' if peak is None else f'{peak / 2**30:.2f}'}", flush=True)
    summary(peaks, sizes, parity(), speed_224(args.device, steps, args.bf16))


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def summary(peaks: dict, sizes: list[int], par: float, speed: float) -> None:
    def peak(size, arch, attention, impl, head="pooled"):
        return peaks.get((size, arch, attention, impl, head))

    def r(size, arch, variant="goncalves2021"):
        return ratio(peak(size, arch, f"mldam-{variant}", "sdpa"), peak(size, arch, "plain", "-"))

    def flatten_vs_pooled(size, arch):
        return ratio(peak(size, arch, "mldam-goncalves2021", "sdpa", "flatten"),
                     peak(size, arch, "mldam-goncalves2021", "sdpa"))

    extra = []
    for size in sizes:
        extra += [f"vgg16_{size}_mem_ratio={fmt(r(size, 'vgg16'))}",
                  f"densenet121_{size}_mem_ratio={fmt(r(size, 'densenet121'))}",
                  f"densenet121_mishra_{size}_mem_ratio={fmt(r(size, 'densenet121', 'mishra2019'))}",
                  f"mldam_vgg16_{size}_sdpa_vs_naive_mem="
                  f"{fmt(ratio(peak(size, 'vgg16', 'mldam-goncalves2021', 'sdpa'), peak(size, 'vgg16', 'mldam-goncalves2021', 'naive')))}",
                  f"dual_stride8_{size}_sdpa_vs_naive_mem="
                  f"{fmt(ratio(peak(size, 'vgg16', 'dual-conv4_3', 'sdpa'), peak(size, 'vgg16', 'dual-conv4_3', 'naive')))}",
                  f"flatten_vs_pooled_vgg16_{size}={fmt(flatten_vs_pooled(size, 'vgg16'))}",
                  f"flatten_vs_pooled_densenet121_{size}={fmt(flatten_vs_pooled(size, 'densenet121'))}"]
    print(" ".join(extra))
    dual = ratio(peak(1024, "vgg16", "dual-conv4_3", "sdpa"), peak(1024, "vgg16", "dual-conv4_3", "naive"))
    key = (2048, "densenet121", "mldam-goncalves2021", "sdpa", "flatten")
    dense_flat = "na" if key not in peaks else "oom" if peaks[key] is None else f"{peaks[key] / 2**30:.1f}"
    print(f"vgg16_1024_mem_ratio={fmt(r(1024, 'vgg16'))} densenet121_2048_mem_ratio={fmt(r(2048, 'densenet121'))} "
          f"sdpa_vs_naive_mem_1024={fmt(dual)} flatten_vs_pooled_vgg16_1024={fmt(flatten_vs_pooled(1024, 'vgg16'))} "
          f"densenet121_2048_flatten={dense_flat} sdpa_parity={par:.1e} sdpa_vs_naive_speed_224={speed:.2f}")


if __name__ == "__main__":
    main()
