"""Position attention on CUDA: parity with the matrix code, the fused kernels taking the widths the models use
(with the math kernel switched off), and an error in place of a math-kernel fallback that cannot fit.
Skipped without CUDA; standalone (bench/gpu_check.sh runs it on a machine without medattn installed)."""
from __future__ import annotations

import pytest
import torch
from medattn_plugins.attention import position as P

from medattn.errors import UserError

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def run(q, k, v, softmax, impl):
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out = P.attend(*leaves, softmax, impl)
    grads = torch.autograd.grad((out.float() * torch.cos(out.detach().float())).sum(), leaves)
    return [out.detach(), *grads]


@pytest.mark.parametrize(("softmax", "d", "c"), [("row", 64, 512), ("global", 512, 512)])
@pytest.mark.parametrize("n", [1024, 4096])
def test_cuda_sdpa_matches_naive_in_fp32(softmax, d, c, n):
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k = (torch.randn(2, d, n, device="cuda", generator=gen) * d ** -0.5 * 2 for _ in range(2))
    v = torch.randn(2, c, n, device="cuda", generator=gen)
    for got, want in zip(run(q, k, v, softmax, "sdpa"), run(q, k, v, softmax, "naive")):
        err = float((got - want).abs().max() / want.abs().max().clamp_min(1.0))
        assert err <= 1e-5, err


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("name", "softmax", "d", "c"), [
    ("dual/agpad on vgg16 (C/8 = 64)", "row", 64, 512),
    ("dual/agpad on densenet121 (C/8 = 128)", "row", 128, 1024),
    ("mldam mishra2019 vgg16", "row", 512, 512),
    ("mldam goncalves2021 vgg16", "global", 512, 512),
    ("mldam goncalves2021 densenet121", "global", 1024, 1024)])
def test_fused_kernels_take_the_models_widths(monkeypatch, dtype, name, softmax, d, c):
    if dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("no bf16")
    monkeypatch.setattr(P, "math_kernel_bytes", lambda q, k: 1 << 62)  # the math kernel is never allowed
    q, k = (torch.rand(1, d, 4096, device="cuda", dtype=dtype) * 0.1 for _ in range(2))
    v = torch.randn(1, c, 4096, device="cuda", dtype=dtype)
    out = run(q, k, v, softmax, "sdpa")  # a UserError here names the inputs no fused kernel accepts
    assert all(torch.isfinite(t).all() for t in out), name


def test_a_math_fallback_that_cannot_fit_is_an_error():
    n = 120_000  # fp64 has no fused kernel; 3 x n^2 x 8 bytes is far more than any GPU holds
    q, k, v = (torch.randn(1, 8, n, device="cuda", dtype=torch.float64) for _ in range(3))
    with pytest.raises(UserError, match="no memory-efficient SDPA kernel accepts these inputs"):
        P.attend(q, k, v, "row", "sdpa")


def test_global_softmax_under_bf16_autocast_scores_the_sink_as_the_kernel_does():
    """CUDA autocast runs SDPA in bf16: the sink's score must be rounded as the kernel sees it, else with energies
    in the hundreds (bf16 spacing 2) the output is off by up to a factor e."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k = (torch.randn(2, 64, 256, device="cuda", generator=gen) * 2 for _ in range(2))
    v = torch.randn(2, 64, 256, device="cuda", generator=gen)
    q, k, v = (t.bfloat16().float() for t in (q, k, v))  # the reference sees the inputs the bf16 kernel sees
    want = P.attend(q, k, v, "global", "naive")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got = P.attend(q, k, v, "global", "sdpa").float()
    assert float((got - want).abs().max() / want.abs().max()) < 0.05
