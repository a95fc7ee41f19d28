"""Device choice: ``auto | cpu | cuda | cuda:N | mps``, checked before any work starts."""
from __future__ import annotations

import torch

from . import reproducible
from .errors import UserError


def resolve_device(spec: str) -> torch.device:
    """The torch device for a spec, or a UserError saying what this machine has. In the reproducible mode, torch
    is configured here (before any work) and ``auto`` is the CPU: the documented digits are the CPU's."""
    reproducible.configure_torch()
    spec = (spec or "auto").strip()
    if spec == "auto" and reproducible.active():
        return torch.device("cpu")
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda:0")
        return torch.device("mps") if has_mps else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not has_mps:
            raise UserError(f"device 'mps' is not available on this machine; {describe()}")
        return torch.device("mps")
    if spec == "cuda" or spec.startswith("cuda:"):
        index = 0 if spec == "cuda" else spec.split(":", 1)[1]
        if not str(index).isdigit():
            raise UserError(f"device {spec!r}: expected cuda:N with N a GPU index")
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if int(index) >= count:
            raise UserError(f"device {spec!r} is not available: {describe()}")
        return torch.device(f"cuda:{index}")
    raise UserError(f"device {spec!r}: expected auto, cpu, cuda, cuda:N or mps")


def describe() -> str:
    """What accelerators this machine has, in words."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count:
        names = ", ".join(f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(count))
        return f"this machine has {count} GPU(s): {names}"
    return "this machine has no CUDA GPU (use device: cpu)"
