"""Activation checkpointing of a traced backbone (``checkpointing: true``): the graph cut into segments at every
level and pooling layer, each run under ``torch.utils.checkpoint`` so only the segment boundaries are kept for the
backward; a segment's inner activations are recomputed then. Trades compute (about one more forward) for memory.

The segmenting is written here: torch.fx ``split_module`` cuts the graph, torch.utils.checkpoint does the rest; the
only addition is that BatchNorm running statistics are not updated a second time by the recomputation.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import fx, nn
from torch.fx.passes.split_module import split_module
from torch.utils.checkpoint import checkpoint

_POOLS = (nn.MaxPool2d, nn.AvgPool2d)


def checkpointed(body: fx.GraphModule) -> fx.GraphModule:
    """``body`` cut after each level it returns and each pooling layer, every segment checkpointed. It shares ``body``'s modules (same parameters and buffers), so it must not be registered
    as a child: the state_dict keys stay those of ``body``."""
    output = next(node for node in body.graph.nodes if node.op == "output")
    levels = set(output.args[0].values()) if isinstance(output.args[0], dict) else set(output.args[0])
    segment, part = 0, {}
    for node in body.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        part[node.name] = segment
        if node in levels or (node.op == "call_module" and isinstance(body.get_submodule(node.target), _POOLS)):
            segment += 1
    split = split_module(body, None, lambda node: part[node.name])
    for name, module in list(split.named_children()):
        setattr(split, name, _Checkpointed(module))
    return split


class _Checkpointed(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, *args: torch.Tensor):
        calls = [0]

        def run(*a: torch.Tensor):
            calls[0] += 1
            with _statistics_kept(self.inner) if calls[0] > 1 else contextlib.nullcontext():
                return self.inner(*a)

        return checkpoint(run, *args, use_reentrant=False)


@contextlib.contextmanager
def _statistics_kept(module: nn.Module) -> Iterator[None]:
    """The recomputation in the backward normalises with the batch statistics as the forward did; the running
    statistics it updates a second time are put back as the forward left them."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.training and m.track_running_stats]
    kept = [{n: b.clone() for n, b in m.named_buffers(recurse=False) if b is not None} for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, buffers in zip(norms, kept):
                for n, b in buffers.items():
                    getattr(m, n).copy_(b)
