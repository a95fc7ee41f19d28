"""Position attention through scaled_dot_product_attention: the same numbers and gradients as the published N x N
matrix code (``naive``), no N x N tensor kept for the backward, and maps for explanations built only when asked."""
from __future__ import annotations

import pytest
import torch
from medattn_plugins.attention import position as P
from medattn_plugins.attention.dual_attention import PositionAttention
from medattn_plugins.attention.mldam import MLDAM, pam

from medattn.errors import UserError

TOL = 1e-5  # fp32, outputs and gradients


def inputs(n: int, d: int, c: int, seed: int = 0, scale: float = 0.5) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(2, w, n, generator=gen) * s).requires_grad_()
            for w, s in ((d, scale), (d, scale), (c, 1.0))]


def out_and_grads(q, k, v, softmax, impl):
    out = P.attend(q, k, v, softmax, impl)
    weight = torch.linspace(-1, 1, out.numel()).view_as(out)  # a loss that weighs every output differently
    grads = torch.autograd.grad((out * weight).sum(), (q, k, v))
    return out, grads


@pytest.mark.parametrize("softmax", ["row", "global"])
@pytest.mark.parametrize(("n", "d", "c"), [(49, 16, 16), (63, 8, 64), (196, 3, 10), (1100, 16, 32)])
def test_sdpa_matches_naive_outputs_and_gradients(softmax, n, d, c):
    q, k, v = inputs(n, d, c)
    want, want_g = out_and_grads(q, k, v, softmax, "naive")
    got, got_g = out_and_grads(q, k, v, softmax, "sdpa")
    assert got.shape == want.shape == (2, c, n)
    scale = want.abs().max()
    assert (got - want).abs().max() <= TOL * max(1.0, scale)
    for g, w in zip(got_g, want_g):
        assert (g - w).abs().max() <= TOL * max(1.0, w.abs().max())


def test_global_softmax_with_large_scores_stays_exact():
    """goncalves2021's unnormalised taps give energies in the hundreds: the sink's scores track log Z_j."""
    q, k, v = inputs(64, 32, 32, scale=4.0)
    want = P.attend(q, k, v, "global", "naive")
    got = P.attend(q, k, v, "global", "sdpa")
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.detach().abs().max()))


@pytest.mark.parametrize("softmax", ["row", "global"])
def test_sdpa_keeps_no_n_by_n_tensor_for_the_backward(softmax):
    n = 1600
    q, k, v = inputs(n, 8, 32)
    saved: list[int] = []

    def keep(t):
        saved.append(t.numel())
        return t

    for impl, expect_matrix in (("naive", True), ("sdpa", False)):
        saved.clear()
        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            P.attend(q, k, v, softmax, impl)
        assert (max(saved) >= 2 * n * n) == expect_matrix, impl  # a (2, N, N) matrix for the batch of 2


def test_auto_is_naive_for_small_maps_and_export_and_sdpa_above():
    assert P.resolve("auto", 49) == "naive" and P.resolve("auto", P.AUTO_MIN_POSITIONS) == "naive"
    assert P.resolve("auto", P.AUTO_MIN_POSITIONS + 1) == "sdpa"
    assert P.resolve("naive", 10**6) == "naive" and P.resolve("sdpa", 4) == "sdpa"
    with pytest.raises(UserError, match="attention_impl: 'fast'"):
        P.resolve("fast", 4)


def test_auto_at_224_px_is_the_published_code_bit_for_bit():
    q, k, v = inputs(49, 16, 16)
    for softmax in ("row", "global"):
        assert torch.equal(P.attend(q, k, v, softmax, "auto"), P.naive(q, k, v, softmax)[0])


def test_danet_pam_module_sdpa_equals_naive_with_gamma():
    torch.manual_seed(0)
    x = torch.randn(2, 32, 6, 5)
    mods = {impl: PositionAttention(32, 8, impl=impl) for impl in ("naive", "sdpa")}
    mods["sdpa"].load_state_dict(mods["naive"].state_dict())
    outs, grads = {}, {}
    for impl, m in mods.items():
        with torch.no_grad():
            m.gamma.fill_(0.7)
        xi = x.clone().requires_grad_()
        outs[impl] = m(xi)
        outs[impl].square().sum().backward()
        grads[impl] = [xi.grad, m.query.weight.grad, m.value.weight.grad, m.gamma.grad]
    torch.testing.assert_close(outs["sdpa"], outs["naive"], rtol=0, atol=1e-5)
    for g, w in zip(grads["sdpa"], grads["naive"]):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["mishra", "goncalves"])
def test_mldam_pam_sdpa_equals_naive(kind):
    gen = torch.Generator().manual_seed(1)
    v, q, k = (torch.rand(1, 16, 6, 6, generator=gen).requires_grad_() for _ in range(3))  # post-ReLU-like taps
    want = pam(v, q, k, kind, "naive")
    got = pam(v, q, k, kind, "sdpa")
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    gw = torch.autograd.grad(want.sum(), (v, q, k))
    gg = torch.autograd.grad(got.sum(), (v, q, k))
    for g, w in zip(gg, gw):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_maps_are_built_on_demand_from_the_last_forward():
    torch.manual_seed(0)
    m = PositionAttention(16, 8, impl="sdpa")
    x = torch.randn(2, 16, 4, 5)
    m(x)
    q, k = m.query(x).flatten(2), m.key(x).flatten(2)
    torch.testing.assert_close(m.last_map, torch.softmax(q.transpose(1, 2) @ k, -1))
    assert m.last_map.shape == (2, 20, 20)


@pytest.mark.parametrize("softmax", ["row", "global"])
def test_large_maps_are_summarised_as_the_column_mean(monkeypatch, softmax):
    q, k, _ = inputs(30, 8, 8)
    full = P.attention_map(q, k, softmax, (5, 6))
    assert full.shape == (2, 30, 30)
    monkeypatch.setattr(P, "MAP_FULL_LIMIT", 20)
    monkeypatch.setattr(P, "_MAP_CHUNK", 7)  # rows in several chunks, the last one short
    summary = P.attention_map(q, k, softmax, (5, 6))
    assert summary.shape == (2, 1, 5, 6)
    torch.testing.assert_close(summary, full.mean(dim=1).view(2, 1, 5, 6))


def test_mldam_maps_from_the_last_forward_and_static_pooling():
    att = MLDAM("goncalves2021", {"q": "a", "k": "b", "v": "c", "x": "c"}, {"q": 8, "k": 16, "v": 16, "x": 16},
                "goncalves", "batchnorm", impl="sdpa", pool={"q": 4, "k": 2}).eval()
    feats = {"a": torch.rand(2, 8, 12, 12), "b": torch.rand(2, 16, 6, 6), "c": torch.rand(2, 16, 3, 3)}
    assert att.attention_maps() == {}
    att(feats)
    maps = att.attention_maps()
    assert maps["pam"].shape == (2, 9, 9) and maps["cam"].shape == (2, 16, 16)
    torch.testing.assert_close(maps["pam"].sum(dim=(1, 2)), torch.ones(2))  # one softmax over all N*N entries



def reference_float64(q, k, v, softmax):
    """The position attention written out directly in float64 (independent of position.py): row softmax, or
    goncalves2021's softmax over all N*N entries with the transposed aggregation."""
    e = torch.einsum("bci,bcj->bij", q, k)
    if softmax == "row":
        return torch.einsum("bij,bcj->bci", torch.softmax(e, dim=-1), v), torch.softmax(e, dim=-1)
    w = torch.exp(e - torch.logsumexp(e.flatten(1), dim=1)[:, None, None])
    return torch.einsum("bci,bij->bcj", v, w), w


@pytest.mark.parametrize("softmax", ["row", "global"])
@pytest.mark.parametrize("impl", ["naive", "sdpa"])
def test_a_float64_model_stays_float64_through_position_attention(softmax, impl):
    gen = torch.Generator().manual_seed(5)
    q, k = (torch.randn(2, 16, 300, generator=gen, dtype=torch.float64) * 2 for _ in range(2))
    v = torch.randn(2, 32, 300, generator=gen, dtype=torch.float64)
    want, weights = reference_float64(q, k, v, softmax)
    got = P.attend(q, k, v, softmax, impl)
    assert got.dtype == torch.float64
    assert float((got - want).abs().max() / want.abs().max()) < 1e-9
    maps = P.attention_map(q, k, softmax, (15, 20))  # the map for explanations and loss terms, float64 too
    assert maps.dtype == torch.float64 and float((maps - weights).abs().max() / weights.abs().max()) < 1e-9
