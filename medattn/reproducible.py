"""The reproducible mode (``MEDATTN_REPRODUCIBLE=1`` or ``medattn --reproducible``): the same digits on any
x86-64 CPU with AVX2, whatever its vendor and core count. The README's and the manual's numbers are measured
in it.

The libraries read their settings once, as they load, so this module imports neither torch nor numpy:
:func:`apply` sets the environment before they load (``import medattn`` does it when the variable is set), and
:func:`configure_torch` sets what torch only takes through its API, when a device is chosen. Each setting
below names what it pins; no library offers the whole set in one switch.
"""
from __future__ import annotations

import os
import sys
import warnings
from typing import Any

from .errors import MedattnWarning, UserError

VARIABLE = "MEDATTN_REPRODUCIBLE"
ON = ("1", "true", "yes", "on")
OFF = ("", "0", "false", "no", "off")

# Every reduction runs on this many threads, whatever the machine has: a sum split over 2 threads adds in
# another order than one over 16. Two keeps the demo's time on the 2-core development machine; a machine with
# one core still gives the same digits (two threads take turns on it).
THREADS = 2

# numpy dispatches float64 exp and log1p to AVX-512 code that rounds differently from its AVX2 code (measured:
# np.exp gives other last bits), so AVX-512 is switched off; names numpy does not know are ignored.
NUMPY_AVX512 = ("X86_V4 AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL "
                "AVX512_SPR")

ENVIRONMENT = {
    "ATEN_CPU_CAPABILITY": "avx2",        # torch's own vectorised kernels: 8 float lanes everywhere
    "ONEDNN_MAX_CPU_ISA": "AVX2",         # oneDNN, for the ops that still reach it (it is switched off below)
    # MKL's conditional numerical reproducibility. The AVX2 branch is honoured on Intel CPUs only: on AMD, MKL
    # ignores MKL_CBWR=AVX2 and keeps its own choice (measured), so only COMPATIBLE is the same on both.
    "MKL_CBWR": "COMPATIBLE",
    "MKL_DYNAMIC": "FALSE",               # MKL and OpenMP must not pick fewer threads on their own
    "OMP_DYNAMIC": "FALSE",
    "OMP_NUM_THREADS": str(THREADS),
    "MKL_NUM_THREADS": str(THREADS),
    "OPENBLAS_NUM_THREADS": str(THREADS),  # numpy's and scipy's OpenBLAS
    "OPENBLAS_CORETYPE": "Haswell",       # OpenBLAS's AVX2 kernels, also on AVX-512 CPUs
    "NPY_DISABLE_CPU_FEATURES": NUMPY_AVX512,
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",  # what torch's deterministic algorithms ask for on CUDA
}

# libraries that read ENVIRONMENT when they load: loaded before apply(), they keep their own settings
READ_AT_LOAD = ("torch", "numpy", "scipy", "sklearn")

_state: dict[str, Any] = {"applied": False, "late": (), "torch": False}


def requested(environ: Any = None) -> bool:
    """Whether ``MEDATTN_REPRODUCIBLE`` asks for the mode; a value that is neither on nor off is an error."""
    value = (os.environ if environ is None else environ).get(VARIABLE, "").strip().lower()
    if value in ON:
        return True
    if value in OFF:
        return False
    raise UserError(f"{VARIABLE}={value!r}: expected 1 (the reproducible mode) or 0; "
                    f"see docs/reproducibility.md")


def active() -> bool:
    """Whether this process runs in the reproducible mode."""
    return bool(_state["applied"])


def apply() -> None:
    """Switch the mode on: set ``MEDATTN_REPRODUCIBLE=1`` (child processes inherit it) and every variable of
    :data:`ENVIRONMENT`, overriding what was set before. Warns when torch or numpy is already loaded: they keep
    the settings they loaded with, and :func:`configure_torch` refuses to go on."""
    if _state["applied"]:
        return
    late = tuple(name for name in READ_AT_LOAD if name in sys.modules)
    os.environ[VARIABLE] = "1"
    os.environ.update(ENVIRONMENT)
    _state.update(applied=True, late=late)
    if late:
        warnings.warn(too_late(late), MedattnWarning, stacklevel=2)


def too_late(modules: tuple[str, ...]) -> str:
    return (f"{VARIABLE}=1 came after {', '.join(modules)} had loaded, so their kernels are not pinned and the "
            f"digits are this machine's. Set {VARIABLE}=1 in the environment before Python starts "
            f"({VARIABLE}=1 python ..., or %env {VARIABLE}=1 in a fresh notebook kernel), or import medattn "
            f"before torch and numpy")


def configure_torch() -> None:
    """What torch takes only through its API (once per process, when a device is chosen): the thread counts,
    oneDNN and NNPACK off (they size their blocks by the CPU's caches and promise no digits across CPUs; without
    them a convolution is torch's im2col and MKL's reproducible gemm, about 6x slower to train), deterministic
    algorithms, no cuDNN autotuning. Refuses when the mode came too late or the CPU has no AVX2: the digits would
    then not be the documented ones."""
    if not _state["applied"] or _state["torch"]:
        return
    import torch

    if _state["late"]:
        raise UserError(too_late(_state["late"]))
    capability = torch.backends.cpu.get_cpu_capability()
    if capability != "AVX2":
        raise UserError(f"{VARIABLE}=1: torch runs its {capability} kernels, not AVX2 (this CPU has no AVX2, or "
                        f"ATEN_CPU_CAPABILITY was read before medattn set it); the mode needs an x86-64 CPU "
                        f"with AVX2")
    torch.set_num_threads(THREADS)
    try:
        torch.set_num_interop_threads(THREADS)
    except RuntimeError:  # only possible before the first inter-op task; inter-op threads sum nothing
        pass
    torch.backends.mkldnn.enabled = False
    torch.backends.nnpack.set_flags(False)  # NNPACK, too, blocks by cache size; without it: im2col + MKL's gemm
    deterministic_algorithms()
    _state["torch"] = True


def deterministic_algorithms() -> None:
    """torch's deterministic algorithms, no cuDNN autotuning, and the fixed cuBLAS workspace that they ask for on
    CUDA (unless set already): the mode's, and ``train.deterministic: true``'s."""
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def describe() -> dict[str, Any]:
    """What a run's manifest records about the kernels: the mode, torch's CPU capability and thread count."""
    torch = sys.modules.get("torch")
    out: dict[str, Any] = {"reproducible": active()}
    if torch is not None:
        out.update(cpu_capability=torch.backends.cpu.get_cpu_capability(), threads=torch.get_num_threads())
    return out
