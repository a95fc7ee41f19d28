"""Augmentation presets: exact goncalves2021 parameters, Keras-like affine geometry, custom pipelines."""
from __future__ import annotations

import math

import pytest
import torch
from medattn_plugins.transforms import medattn_components
from medattn_plugins.transforms.presets import (
    KerasAffine,
    build_agpad2021,
    build_custom,
    build_goncalves2021,
    build_mishra2019,
    build_none,
)
from torchvision.transforms import v2

from medattn.api import TransformContext, UserError

CTX = TransformContext(image_size=(32, 32), channels=3)
SCHEMAS = {c.name: c.params_schema for c in medattn_components()}


def fill(schema: dict, data):
    """``data`` with the schema's defaults filled in, nested ones too (as the core hands params over)."""
    if isinstance(data, dict):
        for key, sub in schema.get("properties", {}).items():
            if key not in data and "default" in sub:
                data[key] = sub["default"]
            if key in data:
                data[key] = fill(sub, data[key])
    elif isinstance(data, list) and "items" in schema:
        return [fill(schema["items"], d) for d in data]
    return data


def filled(name: str, params: dict | None = None) -> dict:
    return fill(SCHEMAS[name], dict(params or {}))


def test_records() -> None:
    names = {c.name for c in medattn_components()}
    assert names == {"none", "goncalves2021", "mishra2019", "agpad2021", "custom"}
    for c in medattn_components():
        assert c.kind == "transform" and c.params_schema["additionalProperties"] is False


def test_none_is_identity() -> None:
    x = torch.rand(3, 32, 32)
    assert torch.equal(build_none({}, CTX)(x), x)


def test_goncalves2021_is_the_papers_recipe() -> None:
    t = build_goncalves2021({}, CTX)
    affine, flip = t.transforms
    assert isinstance(affine, v2.RandomAffine) and isinstance(flip, v2.RandomHorizontalFlip)
    assert list(affine.degrees) == [-10.0, 10.0] and list(affine.translate) == [0.05, 0.1]
    assert list(affine.scale) == [0.95, 1.05] and list(affine.shear) == [0.0, 0.0]
    assert affine.fill == 0
    assert affine.interpolation == v2.InterpolationMode.NEAREST and flip.p == 0.5
    x = torch.rand(3, 32, 32)
    torch.manual_seed(0)
    y = t(x)
    assert y.shape == x.shape
    # nearest interpolation: every output value is an input value or the fill 0
    assert set(y.unique().tolist()) <= set(x.unique().tolist()) | {0.0}


def test_keras_affine_shift_and_zoom_geometry() -> None:
    x = torch.zeros(1, 20, 20)
    x[:, 8:12, 8:12] = 1.0
    k = KerasAffine(width_shift=0.25)
    k._u = lambda r: r  # fix the draw at the top of the range
    y = k(x)
    cols = (y[0].sum(0) > 0.5).nonzero().flatten()
    # sampling the input at x + 5 moves the square 5 px to the left
    assert cols.min().item() == 3 and cols.max().item() == 6
    z = KerasAffine(zoom=0.5)
    z._u = lambda r: -r  # z = 0.5: magnify 2x
    y = z(x)
    assert math.isclose(float(y.sum()), 4 * float(x.sum()), rel_tol=0.15)
    assert KerasAffine()(x).allclose(x, atol=1e-6)


def test_keras_presets_shapes_and_range() -> None:
    torch.manual_seed(1)
    x = torch.rand(3, 40, 30)
    for t in (build_mishra2019(filled("mishra2019"), CTX),
              build_mishra2019(filled("mishra2019", {"rotation": 20, "reference_size": 224}), CTX),
              build_agpad2021({}, CTX)):
        y = t(x)
        assert y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1
    m = build_mishra2019(filled("mishra2019"), CTX).transforms[0]
    assert math.isclose(m.width_shift, 40 / 112) and m.shear == 0.2 and m.zoom == 0.2
    a = build_agpad2021({}, CTX).transforms[0]
    assert (a.rotation, a.width_shift, a.height_shift, a.shear, a.zoom) == (10.0, 0.1, 0.1, 0.1, 0.1)


def test_custom_pipeline_and_errors() -> None:
    t = build_custom(filled("custom", {"ops": [
        {"name": "RandomAffine", "params": {"degrees": 5, "interpolation": "bilinear"}},
        {"name": "RandomVerticalFlip", "params": {"p": 1.0}}]}), CTX)
    x = torch.rand(3, 16, 16)
    assert t(x).shape == x.shape
    flip = build_custom(filled("custom", {"ops": [{"name": "RandomVerticalFlip", "params": {"p": 1.0}}]}), CTX)
    assert torch.equal(flip(x), x.flip(-2))
    assert filled("custom", {"ops": [{"name": "RandomVerticalFlip"}]})["ops"][0]["params"] == {}
    with pytest.raises(UserError, match=r"^train\.augment\.params\.ops\.0\.name: 'RandomAfine' .*did you mean "
                                        r"'RandomAffine'"):
        build_custom(filled("custom", {"ops": [{"name": "RandomAfine"}]}), CTX)
    with pytest.raises(UserError, match=r"^train\.augment\.params\.ops\.0\.params: RandomAffine: .*degres"):
        build_custom(filled("custom", {"ops": [{"name": "RandomAffine", "params": {"degres": 5}}]}), CTX)
    with pytest.raises(UserError, match=r"^train\.augment\.params\.ops\.0\.params\.interpolation: 'cubicx'"):
        build_custom(filled("custom", {"ops": [{"name": "RandomAffine",
                                                "params": {"degrees": 5, "interpolation": "cubicx"}}]}), CTX)
