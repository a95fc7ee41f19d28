"""Heads: the original code's exact parameter counts, the MLDAM MLPs, widths as 'C' / 'C/k', shapes."""
from __future__ import annotations

import pytest
import torch

from medattn.errors import UserError
from medattn.hookspecs import HeadContext
from tests.conftest_models import build, defaults, factory, n_params


def head(name, in_shape, num_outputs=1, **params):
    return factory("head", name)(defaults("head", name, params), HeadContext(tuple(in_shape), num_outputs))


@pytest.mark.parametrize("in_shape,count", [((1024, 7, 7), 50176 + 1), ((2048, 1, 1), 2048 + 1),
                                            ((512, 7, 7), 25088 + 1)])
def test_flatten_linear_seed_counts(in_shape, count):
    h = head("flatten_linear", in_shape)
    assert n_params(h) == count
    assert h(torch.randn(2, *in_shape)).shape == (2, 1)


def test_flatten_linear_is_flatten_then_one_linear():
    h = head("flatten_linear", (3, 2, 2), num_outputs=2)
    x = torch.randn(4, 3, 2, 2)
    lin = h[1]
    torch.testing.assert_close(h(x), x.reshape(4, 12) @ lin.weight.T + lin.bias)


def test_linear_pools_feature_maps_and_accepts_vectors():
    h = head("linear", (8, 3, 3), num_outputs=3)
    assert n_params(h) == 8 * 3 + 3
    x = torch.randn(2, 8, 3, 3)
    torch.testing.assert_close(h(x), x.mean((2, 3)) @ h.fc.weight.T + h.fc.bias)
    assert head("linear", (8,), num_outputs=2)(torch.randn(5, 8)).shape == (5, 2)
    d = head("linear", (8, 3, 3), dropout=0.5)
    assert isinstance(d.dropout, torch.nn.Dropout) and d.dropout.p == 0.5
    with pytest.raises(UserError, match="expects a"):
        head("linear", (2, 3), num_outputs=1)


def test_mlp_goncalves_vgg16_count_and_structure():
    h = head("mlp", (512, 7, 7), hidden=["C", "C/2"], dropout=0.25)
    assert n_params(h) == (25088 * 512 + 512) + (512 * 256 + 256) + (256 + 1)
    kinds = [type(m).__name__ for m in h]
    assert kinds == ["Flatten", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert h[3].p == 0.25 and h[6].p == 0.25


@pytest.mark.parametrize("in_shape,widths", [((1024, 7, 7), (1024, 512)), ((2048, 7, 7), (2048, 1024))])
def test_mlp_goncalves_densenet_resnet_widths(in_shape, widths):
    h = head("mlp", in_shape, hidden=["C", "C/2"])
    linears = [m for m in h if isinstance(m, torch.nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [
        (in_shape[0] * 49, widths[0]), (widths[0], widths[1]), (widths[1], 1)]


def test_mlp_mishra_head_count():
    h = head("mlp", (512, 7, 7), num_outputs=3, hidden=[512, 512], dropout=0.25)
    assert n_params(h) == (25088 * 512 + 512) + (512 * 512 + 512) + (512 * 3 + 3)
    assert h(torch.randn(2, 512, 7, 7)).shape == (2, 3)


def test_mlp_pool_avg_and_bad_widths():
    h = head("mlp", (16, 4, 4), hidden=[8], pool="avg")
    assert [m.in_features for m in h if isinstance(m, torch.nn.Linear)] == [16, 8]
    with pytest.raises(UserError, match=r"hidden\.1: 'C/3'"):
        head("mlp", (16, 4, 4), hidden=[4, "C/3"])


@pytest.mark.slow
@pytest.mark.parametrize("bb,count", [("densenet121", 50177), ("resnet50", 2049), ("vgg16", 25089)])
def test_seed_baseline_heads_at_224(bb, count):
    model = build(bb, "none", head="flatten_linear", size=224)
    assert n_params(model.head) == count
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1)
