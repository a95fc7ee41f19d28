"""Training-step cost of MLDAM from one backbone pass, against the plain baseline and the original code's re-running design.

densenet121 at 224 px, batch 8, CPU. One training step = forward, BCE-with-logits loss, backward (as the issue
defines it; the optimiser update is left out: it costs the same with or without re-running the backbone).
(a) plain: backbone + the original code's baseline head (flatten_linear, Linear(50176, 1));
(b) mldam goncalves2021 with every tap from one pass, its default head (50176 -> 1024 -> 512 -> 1);
(c) the original code's design restated below: the same modules and the same attention math, but the backbone is re-run
    for each tap (q through denseblock2 on a MaxPool(2) stem, k through denseblock3, v and the CAM input each
    through the full features), as the original code's MLDAM forward does.
The three are stepped round-robin (so load on the machine hits all of them alike); medians of BENCH_STEPS (5)
steps after one warm-up step each, in wall time (the last line) and in process CPU time (the line above it,
less sensitive to other load on a shared machine). Threads: BENCH_THREADS, else OMP_NUM_THREADS, else all cores.
Last line: ``mldam_vs_plain=...x original_style_vs_mldam=...x``.
"""
from __future__ import annotations

import os
import statistics
import time

import torch
import torch.nn.functional as F
from medattn_plugins.attention.mldam import build_mldam, cam_gram, pam_goncalves
from medattn_plugins.attention.taps import tile_channels
from medattn_plugins.backbones.torchvision_backbones import build_densenet121
from medattn_plugins.heads.linear import build_flatten_linear
from medattn_plugins.heads.mlp import build_mlp
from torch import nn

from medattn.hookspecs import AttentionContext, HeadContext, ModelContext
from medattn.params import component_params
from medattn.registry import default_registry

SIZE, BATCH = 224, 8
STEPS = int(os.environ.get("BENCH_STEPS", "5"))


def params(kind: str, name: str, **given) -> dict:
    """A component's params as the core hands them over: validated, schema defaults filled in."""
    return component_params(REGISTRY, kind, {"name": name, "params": given})


REGISTRY = default_registry()


def Chain(backbone: nn.Module, attention: nn.Module, head: nn.Module) -> nn.Module:  # noqa: N802
    """backbone -> attention -> head: the core's model (only its forward is used here)."""
    from medattn.components.model import MedAttnModel

    return MedAttnModel(backbone, attention, head, output="sigmoid", num_outputs=1, class_names=[])


class OriginalStyleMLDAM(nn.Module):
    """The original code's MLDAM on DenseNet-121, restated: tied modules, but one backbone run per tap (4 per forward)."""

    def __init__(self, features: nn.Module, attention: nn.Module, head: nn.Module):
        super().__init__()
        f = features
        self.features = f
        stem = [f.conv0, f.norm0, f.relu0, nn.MaxPool2d(2), f.denseblock1, f.transition1, f.denseblock2]
        self.q_path = nn.Sequential(*stem)
        self.k_path = nn.Sequential(*stem, f.transition2, f.denseblock3)
        self.pam_norm, self.cam_norm = attention.pam_norm, attention.cam_norm
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = tile_channels(F.avg_pool2d(self.q_path(x), 4), 1024)
        k = F.avg_pool2d(self.k_path(x), 2)
        v = self.features(x)
        p, _ = pam_goncalves(v, q, k)
        c, _ = cam_gram(self.features(x))  # the CAM input: the same tensor as v, computed again
        return self.head((self.pam_norm(F.relu(p)) + self.cam_norm(F.relu(c))) / 2)


def build_models() -> dict[str, nn.Module]:
    """The three models of the comparison."""
    ctx = ModelContext((SIZE, SIZE))
    plain_bb = build_densenet121(params("backbone", "densenet121", pretrained=False), ctx)
    plain = Chain(plain_bb, _Last(), build_flatten_linear(params("head", "flatten_linear"), HeadContext((1024, 7, 7), 1)))
    bb = build_densenet121(params("backbone", "densenet121", pretrained=False), ctx)
    att = build_mldam(params("attention", "mldam", variant="goncalves2021"), AttentionContext(bb, (SIZE, SIZE), 1))
    mldam = Chain(bb, att, build_mlp(params("head", "mlp", hidden=["C", "C/2"], dropout=0.25), HeadContext((1024, 7, 7), 1)))
    original_bb = build_densenet121(params("backbone", "densenet121", pretrained=False), ctx)
    original_att = build_mldam(params("attention", "mldam", variant="goncalves2021"), AttentionContext(original_bb, (SIZE, SIZE), 1))
    features = original_bb._source.features  # the torchvision modules the one-pass graph also uses
    original = OriginalStyleMLDAM(features, original_att,
                          build_mlp(params("head", "mlp", hidden=["C", "C/2"], dropout=0.25), HeadContext((1024, 7, 7), 1)))
    return {"plain": plain, "mldam": mldam, "original_style": original}


class _Last(nn.Module):
    """Attention ``none``: the final level."""

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return next(reversed(features.values()))


def main() -> None:
    threads = int(os.environ.get("BENCH_THREADS") or os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    models = build_models()
    x, y = torch.randn(BATCH, 3, SIZE, SIZE), torch.randint(0, 2, (BATCH,)).float()
    wall: dict[str, list[float]] = {k: [] for k in models}
    cpu: dict[str, list[float]] = {k: [] for k in models}
    for step in range(STEPS + 1):
        for name, model in models.items():
            model.train()
            t0, c0 = time.perf_counter(), time.process_time()
            model.zero_grad(set_to_none=True)
            loss = F.binary_cross_entropy_with_logits(model(x).reshape(-1), y)
            loss.backward()
            if step:  # the first step of each is a warm-up
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    med = {k: statistics.median(v) for k, v in wall.items()}
    cmed = {k: statistics.median(v) for k, v in cpu.items()}
    print(f"densenet121 {SIZE}px batch {BATCH}, {threads} threads, medians of {STEPS} training steps "
          f"(wall s/step, process CPU s/step):")
    for name in models:
        print(f"  {name:<11} wall {med[name]:7.3f}  cpu {cmed[name]:7.3f}   (wall all: "
              f"{', '.join(f'{v:.2f}' for v in wall[name])})")
    print(f"cpu-time ratios: mldam_vs_plain={cmed['mldam'] / cmed['plain']:.2f}x "
          f"original_style_vs_mldam={cmed['original_style'] / cmed['mldam']:.2f}x")
    print(f"mldam_vs_plain={med['mldam'] / med['plain']:.2f}x original_style_vs_mldam={med['original_style'] / med['mldam']:.2f}x")


if __name__ == "__main__":
    main()
