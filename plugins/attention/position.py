"""Position attention (PAM) without the N x N matrix: the published formulas through
``torch.nn.functional.scaled_dot_product_attention`` (SDPA), with the plain matrix code kept as the reference.

All tensors are channel-first over N positions: queries and keys (B, d, N), values (B, c, N), output (B, c, N).

- ``row``: out[:, :, i] = sum_j softmax_j(q_i . k_j) v_j (DANet, AG-PAD, Mishra's MLDAM).
- ``global``: out[:, :, j] = sum_i v_i exp(q_i . k_j) / Z, Z summing over all N*N pairs (goncalves2021's port:
  one softmax over the whole energy, aggregated with the transposed matrix).

No 1/sqrt(d) scaling anywhere (``scale=1.0``): none of the originals has one. Written by hand: SDPA normalises per
query row only and has no value width other than the query's on its memory-efficient kernels, so two exact
rewrites are needed (below); no library provides them.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from medattn.api import UserError

IMPLS = ("auto", "sdpa", "naive")
AUTO_MIN_POSITIONS = 1024  # auto: the plain matrix up to this many positions (32 x 32: 224-1024 px at stride 32)
MAP_FULL_LIMIT = 4096  # attention_maps(): the full (B, N, N) matrix up to this many positions, a summary above
_MAP_CHUNK = 1024  # rows of the N x N matrix built at a time for a summary


def resolve(impl: str, positions: int) -> str:
    """``naive`` or ``sdpa`` for ``impl`` at ``positions`` positions. ``auto`` keeps the plain matrix (bit for
    bit the published code) where it is small, and while a model is traced for export (ONNX has no fused kernel:
    the graph is the same matmul-softmax either way)."""
    if impl not in IMPLS:
        raise UserError(f"attention_impl: {impl!r} is not one of {', '.join(IMPLS)}")
    if impl != "auto":
        return impl
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or positions <= AUTO_MIN_POSITIONS:
        return "naive"
    return "sdpa"


# -- the reference: the published matrices -------------------------------------------------------------------
def energy(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """E[b, i, j] = sum_c q[b, c, i] k[b, c, j], (B, N, N)."""
    return torch.bmm(q.transpose(1, 2), k)


def weights(q: torch.Tensor, k: torch.Tensor, softmax: str) -> torch.Tensor:
    """The (B, N, N) attention matrix: softmax per row i, or over all N*N entries."""
    e = energy(q, k)
    if softmax == "row":
        return torch.softmax(e, dim=-1)
    return torch.softmax(e.flatten(1), dim=1).view_as(e)


def naive(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, softmax: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, the N x N matrix) as the original code computes them."""
    attn = weights(q, k, softmax)
    if softmax == "row":
        return torch.bmm(v, attn.transpose(1, 2)), attn  # out[c, i] = sum_j A[i, j] v[c, j]
    return torch.bmm(v, attn), attn  # out[c, j] = sum_i v[c, i] E[i, j]


# -- through SDPA ---------------------------------------------------------------------------------------------
def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, softmax: str, impl: str = "auto") -> torch.Tensor:
    """The PAM output (B, c, N) by ``impl`` (auto | sdpa | naive); ``softmax`` is ``row`` or ``global``."""
    if resolve(impl, q.shape[-1]) == "naive":
        return naive(q, k, v, softmax)[0]
    # (B, N, d) as SDPA takes them; the fused kernels want the last dimension contiguous (else: the math kernel)
    qt, kt, vt = (t.transpose(1, 2).contiguous() for t in (q, k, v))
    out = _row_sdpa(qt, kt, vt) if softmax == "row" else _global_sdpa(qt, kt, vt)
    return out.transpose(1, 2)


def _row_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T) v for q (B, L, d), k (B, S, d), v (B, S, c) -> (B, L, c), scale 1.

    The fused kernels need the value width to equal the query width (with another width SDPA takes the math
    kernel, which builds the matrix). So v is cut into ceil(c / d) chunks of width d (zero-padded), stacked as
    heads that share q and k: every chunk gets the same weights, so this is exact."""
    b, length, d = q.shape
    c = v.shape[-1]
    heads = -(-c // d)
    if heads * d != c:
        v = F.pad(v, (0, heads * d - c))
    qh = q.unsqueeze(1).expand(b, heads, length, d)
    kh = k.unsqueeze(1).expand(b, heads, k.shape[1], d)
    vh = v.reshape(b, v.shape[1], heads, d).transpose(1, 2)
    with _no_math_where_it_cannot_fit(qh, kh):
        try:
            out = F.scaled_dot_product_attention(qh, kh, vh, scale=1.0)
        except RuntimeError as exc:
            if "No available kernel" not in str(exc):
                raise
            raise UserError(_no_kernel_message(qh, kh)) from None
    return out.transpose(1, 2).reshape(b, length, heads * d)[..., :c]


def _global_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """goncalves2021's global softmax through row-softmax SDPA, exactly.

    Output position j is a row over the N query-side positions i: out_j = sum_i exp(s_ij) v_i / Z with
    s_ij = q_i . k_j, Z_j = sum_i exp(s_ij) and Z = sum_j Z_j. A row softmax gives A_j = sum_i exp(s_ij) v_i / Z_j
    but not Z_j. So each row gets one extra key (a "sink") scoring a constant b_j, with values marking real keys
    and the sink apart: the two extra output channels are Z_j / D_j and e^b_j / D_j with D_j = Z_j + e^b_j, which
    give D_j and Z_j without the matrix, and out_j = A'_j D_j / Z with A' the first c channels. b_j is E_P[s_ij]
    under the row softmax (one more SDPA pass without gradient), within log N of log Z_j, so both channels stay
    far from underflow. The result does not depend on b_j: it is detached."""
    bsz, n, d = k.shape
    c = v.shape[-1]
    with torch.no_grad():
        b = (k * _row_sdpa(k, q, q)).sum(-1, keepdim=True)  # (B, N, 1): E_P[s] <= log Z_j <= E_P[s] + log N
        b = b.to(_compute_dtype(k)).to(k.dtype)  # the value SDPA will score with (autocast rounds its inputs)
    width = max(d + 2, c + 2)
    width += -width % 8  # the fused CUDA kernels want widths that are multiples of 8; zeros change no dot product
    queries = _pad_to(torch.cat([k, b], dim=-1), width)  # column d holds b_j
    keys = _pad_to(torch.cat([q, q.new_zeros(bsz, q.shape[1], 1)], dim=-1), width)
    sink = q.new_zeros(bsz, 1, width)
    sink[..., d] = 1  # scores b_j with every query
    ones = v.new_ones(bsz, v.shape[1], 1)
    values = _pad_to(torch.cat([v, ones, torch.zeros_like(ones)], dim=-1), width)  # channel c marks real keys
    sink_value = v.new_zeros(bsz, 1, width)
    sink_value[..., c + 1] = 1  # channel c + 1 marks the sink
    out = _row_sdpa(queries, torch.cat([keys, sink], dim=1), torch.cat([values, sink_value], dim=1))
    acc = _at_least_float32(out.dtype)  # the normalisers in fp32 under bf16/fp16, and in fp64 for a fp64 model
    real, mark = out[..., c:c + 1].to(acc), out[..., c + 1:c + 2].to(acc)  # Z_j / D_j, e^b_j / D_j
    log_d = b.to(acc) - torch.log(mark)  # log D_j
    log_z = torch.logsumexp((torch.log(real) + log_d).flatten(1), dim=1).view(bsz, 1, 1)  # log sum_j Z_j
    return out[..., :c] * torch.exp(log_d - log_z).to(out.dtype)


def _at_least_float32(dtype: torch.dtype) -> torch.dtype:
    """float32 for the half types, the dtype itself otherwise (``.float()`` would round a float64 model's values)."""
    return torch.promote_types(dtype, torch.float32)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype SDPA computes ``x`` in: autocast's where it is on, else x's."""
    kind = x.device.type
    if torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return x.dtype


def _pad_to(x: torch.Tensor, width: int) -> torch.Tensor:
    return F.pad(x, (0, width - x.shape[-1])) if x.shape[-1] < width else x


# -- CUDA: the math kernel only where its matrix fits -------------------------------------------------------------
def math_kernel_bytes(q: torch.Tensor, k: torch.Tensor) -> int:
    """What the math kernel's weights need for a training step: the (B, H, L, S) matrix about three times over
    (scores, softmax, and the gradient of either in the backward)."""
    b, h, length, _ = q.shape
    return 3 * b * h * length * k.shape[-2] * q.element_size()


@contextlib.contextmanager
def _no_math_where_it_cannot_fit(q: torch.Tensor, k: torch.Tensor) -> Iterator[None]:
    """On CUDA, forbid SDPA's math kernel when its N x N weights would not fit in the free memory: if no fused
    kernel takes the inputs, SDPA then raises, and the caller says why, in place of an out-of-memory crash."""
    if not q.is_cuda or math_kernel_bytes(q, k) < torch.cuda.mem_get_info(q.device)[0]:
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]):
        yield


def _no_kernel_message(q: torch.Tensor, k: torch.Tensor) -> str:
    gib = math_kernel_bytes(q, k) / 2**30
    free = torch.cuda.mem_get_info(q.device)[0] / 2**30
    return (f"position attention over {q.shape[-2]} x {k.shape[-2]} positions: no memory-efficient SDPA kernel "
            f"accepts these inputs (dtype {str(q.dtype).replace('torch.', '')}, width {q.shape[-1]}, device "
            f"{torch.cuda.get_device_name(q.device)}), and the math kernel's N x N weights would need about "
            f"{gib:.1f} GiB with {free:.1f} GiB free; train in bf16/fp16 (train.amp), on a GPU with fused "
            f"attention, or at a smaller image size")


# -- maps for explanations, built only when asked for ---------------------------------------------------------------
def keep_for_maps(module: torch.nn.Module, t: torch.Tensor) -> torch.Tensor:
    """What a module keeps of a forward's queries or keys for its maps: with their graph while it trains with
    gradients on (so that a loss term can supervise the maps, as the forward's own graph holds them anyway),
    detached otherwise."""
    return t if module.training and torch.is_grad_enabled() else t.detach()


def state_without_graph(state: dict) -> dict:
    """A module's ``__getstate__`` with its kept ``_last`` tensors detached: a copy (deepcopy, pickle) taken after
    a training forward would otherwise fail on tensors that carry a graph."""
    last = state.get("_last")
    if isinstance(last, dict):
        state["_last"] = {k: v.detach() for k, v in last.items()}
    elif isinstance(last, tuple):
        state["_last"] = tuple(t.detach() if isinstance(t, torch.Tensor) else t for t in last)
    return state


def attention_map(q: torch.Tensor, k: torch.Tensor, softmax: str, hw: tuple[int, int]) -> torch.Tensor:
    """The position map of the images in q and k (B, d, N): the full (B, N, N) matrix up to MAP_FULL_LIMIT
    positions, above that its column mean as a (B, 1, h, w) image (how much each position is attended to: what
    the attention_maps explainer draws from the full matrix), built _MAP_CHUNK rows at a time.

    Without gradient when q and k carry none (explanations); with it when they do (a training forward, for a
    loss term): the full matrix then costs what the naive forward's does, and the summary recomputes each chunk
    in the backward (checkpointed) so that no N x N tensor is kept."""
    acc = _at_least_float32(q.dtype)
    if q.requires_grad or k.requires_grad:
        q, k = q.to(acc), k.to(acc)
        if q.shape[-1] <= MAP_FULL_LIMIT:
            return weights(q, k, softmax)
        return _summary_with_graph(q, k, softmax).view(q.shape[0], 1, *hw)
    with torch.no_grad():
        q, k = q.to(acc), k.to(acc)
        if q.shape[-1] <= MAP_FULL_LIMIT:
            return weights(q, k, softmax)
        starts = range(0, q.shape[-1], _MAP_CHUNK)
        log_z = None
        if softmax == "global":  # a first pass for the normaliser of all N*N entries
            log_z = torch.logsumexp(torch.stack(
                [torch.logsumexp(energy(q[..., i:i + _MAP_CHUNK], k).flatten(1), 1) for i in starts], 1), 1)
        total = torch.zeros(q.shape[0], k.shape[-1], device=q.device, dtype=acc)
        for i in starts:
            e = energy(q[..., i:i + _MAP_CHUNK], k)
            total += (torch.softmax(e, dim=-1) if log_z is None else torch.exp(e - log_z[:, None, None])).sum(1)
        return (total / q.shape[-1]).view(q.shape[0], 1, *hw)


def _chunk_log_z(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(energy(q, k).flatten(1), 1)


def _chunk_row_sum(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return torch.softmax(energy(q, k), dim=-1).sum(1)


def _chunk_global_sum(q: torch.Tensor, k: torch.Tensor, log_z: torch.Tensor) -> torch.Tensor:
    return torch.exp(energy(q, k) - log_z[:, None, None]).sum(1)


def _summary_with_graph(q: torch.Tensor, k: torch.Tensor, softmax: str) -> torch.Tensor:
    """(B, N) column mean of the position weights, differentiable, one checkpointed chunk of rows at a time."""
    from torch.utils.checkpoint import checkpoint

    chunks = [q[..., i:i + _MAP_CHUNK] for i in range(0, q.shape[-1], _MAP_CHUNK)]
    if softmax == "row":
        total = sum(checkpoint(_chunk_row_sum, c, k, use_reentrant=False) for c in chunks)
    else:
        log_z = torch.logsumexp(torch.stack([checkpoint(_chunk_log_z, c, k, use_reentrant=False)
                                             for c in chunks], 1), 1)
        total = sum(checkpoint(_chunk_global_sum, c, k, log_z, use_reentrant=False) for c in chunks)
    return total / q.shape[-1]
