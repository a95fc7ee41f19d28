"""Preparing a model for attribution: the hook-safe copy captum's hook-based methods need
(:func:`prepare_for_attribution`, with :class:`CallSites` for modules called more than once) and the
randomised copy of the model-parameter randomisation check (:func:`randomized_copy`).

The explain job (medattn.jobs.explain) selects the images, runs the explainers and scores them.
"""
from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import torch
from torch import fx, nn

# activation modules whose gradient captum's hook-based methods (GuidedBackprop, Deconvolution, DeepLift) rewrite
HOOKED = (nn.ReLU, nn.ELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softmax, nn.MaxPool1d, nn.MaxPool2d,
          nn.MaxPool3d)
_FUNCTIONAL_RELU = (torch.relu, torch.nn.functional.relu, torch.relu_)


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


def frozen(model: nn.Module) -> nn.Module:
    """The model itself, in eval mode with parameters that no longer require gradients: what methods that hook
    nothing (gradients of the input, perturbation, attention maps) attribute, without the hook-safe copy."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()
