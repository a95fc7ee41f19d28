"""Weights for the backbones: local files only (the torch hub cache, the Hugging Face cache, or a path)."""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medattn.api import UserError


def torch_hub_file(url: str) -> Path:
    """Where torch.hub caches the checkpoint of ``url``: ``<torch.hub.get_dir()>/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])


def missing_pretrained(what: str, candidates: list[Path], url: str = "") -> UserError:
    """The error for ``pretrained: true`` when no cached weights are on disk (nothing is downloaded)."""
    where = " or ".join(str(c) for c in candidates)
    fetch = f" (fetch it from {url} on a machine with network and copy it there)" if url else ""
    return UserError(f"backbone.params.pretrained: the weights of {what} are not in the local cache: missing {where}"
                     f"{fetch}; or point `weights: /path/to/file.pth` at a local state_dict file; "
                     f"or set pretrained: false")


def read_state_dict(path: str | os.PathLike, field: str = "backbone.params.weights") -> dict[str, torch.Tensor]:
    """Load a state_dict file (``.pth``/``.pt``/``.bin``/``.safetensors``); checkpoint wrappers are unwrapped."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"{field}: weights file {str(p)!r} does not exist")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(p))
        else:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's input
        raise UserError(f"{field}: cannot read {str(p)!r} as a state_dict: {type(e).__name__}: {e}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise UserError(f"{field}: {str(p)!r} holds no state_dict (a mapping of parameter names to tensors)")
    prefix = "module."
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in obj.items()}


_DENSE_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


def remap_densenet_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old torchvision DenseNet checkpoints spell ``norm.1``; current modules are ``norm1``."""
    out = {}
    for k, v in state.items():
        m = _DENSE_OLD_KEY.match(k)
        out[m.group(1) + m.group(2) if m else k] = v
    return out


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], source: str, field: str,
              ignore_prefixes: Iterable[str] = ()) -> None:
    """Load ``state`` into ``model``; keys under ``ignore_prefixes`` (the unused classifier) may be absent or extra."""
    ignore = tuple(f"{p}." for p in ignore_prefixes)
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(ignore)}
    missing = [k for k in own if k not in state and not k.startswith(ignore)
               and not k.endswith("num_batches_tracked")]  # absent from pre-0.4 checkpoints; BatchNorm copes
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
             if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        raise UserError(f"{field}: {source} does not fit {type(model).__name__}: {'; '.join(parts)}")
    model.load_state_dict(state, strict=False)


def first_conv_to_one_channel(model: nn.Module, path: str) -> None:
    """Replace the first conv (dotted ``path``) by a 1-channel conv whose filters are the sum over RGB."""
    conv = model.get_submodule(path)
    if conv.in_channels == 1:
        return
    new = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups,
                    conv.bias is not None, conv.padding_mode)
    with torch.no_grad():
        new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, new)
