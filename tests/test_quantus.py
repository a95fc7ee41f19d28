"""medattn's explanation-quality scores against Quantus on the same maps, masks and models.

Where the definitions agree the scores match; the differences in definition are asserted as such, so a change on
either side shows up here. One-channel 16 x 16 images, continuous maps (no ties unless a test makes them).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from medattn.evidence import explanation_quality as Q

quantus = pytest.importorskip("quantus")

N, SIZE = 6, 16


class TinyNet(nn.Module):
    """A two-class softmax CNN on one-channel images, with the ``probabilities`` medattn's scores call."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                                      nn.ReLU(), nn.AdaptiveAvgPool2d(4))
        self.fc = nn.Linear(64, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, dim=1)


def saliency(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **kwargs) -> np.ndarray:
    """|d logit / d x| (N, 1, H, W): the explain function handed to Quantus and used for medattn alike."""
    x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32).clone().requires_grad_(True)
    out = model(x)
    out[torch.arange(len(x)), torch.as_tensor(np.asarray(targets)).long()].sum().backward()
    return x.grad.abs().numpy()


@pytest.fixture
def case():
    """Images (min 0 each: Quantus's 'black' baseline is the image minimum), maps and masks of varied size."""
    rng = np.random.default_rng(0)
    x = rng.random((N, 1, SIZE, SIZE)).astype(np.float32)
    x -= x.min(axis=(1, 2, 3), keepdims=True)
    maps = rng.random((N, 1, SIZE, SIZE)).astype(np.float32)
    masks = np.zeros((N, 1, SIZE, SIZE), dtype=np.float32)
    for i in range(N):
        masks[i, :, 2 + i:8 + i, 3:5 + 2 * i] = 1
    maps[::2] += 2 * masks[::2]  # half the maps point into the mask
    return x, maps, masks


def call(metric, x, a, s=None, model=None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(metric(model=model, x_batch=x, y_batch=np.zeros(len(x), dtype=int), a_batch=a, s_batch=s,
                                 channel_first=True, **kw), dtype=float)


def test_pointing_game_agrees(case):
    x, maps, masks = case
    ours = Q.localisation(maps[:, 0], masks)["pointing_game"]
    theirs = call(quantus.PointingGame(abs=True, disable_warnings=True), x, maps, masks)
    assert ours == pytest.approx(theirs.mean()) and 0 < ours < 1


def test_pointing_game_differs_on_tied_maxima_and_empty_masks(case):
    x, maps, masks = case
    tied = np.zeros_like(maps[:1])
    tied[0, 0, 0, 0] = tied[0, 0, 5, 4] = 1.0  # the first maximum is outside the mask, the second inside
    assert Q.localisation(tied[:, 0], masks[:1])["pointing_game"] == 0  # medattn: the first maximum (argmax)
    assert call(quantus.PointingGame(abs=True, disable_warnings=True), x[:1], tied, masks[:1])[0] == 1  # any
    empty = masks.copy()
    empty[0] = 0
    ours = Q.localisation(maps[:, 0], empty)["pointing_game"]
    theirs = call(quantus.PointingGame(abs=True, disable_warnings=True), x, maps, empty)
    assert ours == pytest.approx(theirs[1:].mean())  # medattn leaves an image without a mask out
    assert theirs[0] == 1  # Quantus 0.6 means NaN there, but writes it into a boolean array: a hit


@pytest.mark.parametrize("metric", ["RelevanceMassAccuracy", "AttributionLocalisation"])
def test_energy_in_mask_agrees(case, metric):
    x, maps, masks = case
    ours = Q.localisation(maps[:, 0], masks)["energy_in_mask"]
    theirs = call(getattr(quantus, metric)(abs=True, disable_warnings=True), x, maps, masks)
    assert ours == pytest.approx(theirs.mean(), rel=1e-5)


def test_energy_in_mask_of_signed_maps_differs_unless_quantus_takes_abs(case):
    x, maps, masks = case
    signed = maps - 0.5
    ours = Q.localisation(signed[:, 0], masks)["energy_in_mask"]  # medattn: always |relevance|
    assert ours == pytest.approx(call(quantus.RelevanceMassAccuracy(abs=True, disable_warnings=True), x, signed,
                                      masks).mean(), rel=1e-5)
    raw = call(quantus.RelevanceMassAccuracy(abs=False, normalise=False, disable_warnings=True), x, signed, masks)
    assert np.any((raw < 0) | (raw > 1))  # Quantus's default keeps the sign: not a fraction any more


def test_iou_of_top_pixels_is_a_function_of_relevance_rank_accuracy(case):
    x, maps, masks = case
    rra = call(quantus.RelevanceRankAccuracy(abs=True, disable_warnings=True), x, maps, masks)
    # both take the top k = |mask| pixels: RRA = hits / k, medattn's IoU = hits / (2k - hits) = RRA / (2 - RRA)
    ious = [Q.localisation(maps[i:i + 1, 0], masks[i:i + 1])["iou_top"] for i in range(N)]
    assert ious == pytest.approx(rra / (2 - rra))


def test_deletion_curve_agrees_with_pixel_flipping(case):
    x, maps, _ = case
    model = TinyNet().eval()
    steps = 8
    classes = np.zeros(N, dtype=int)
    ours = Q.deletion_insertion(model, torch.as_tensor(x), maps[:, 0], classes, steps, "zero", "zero", "cpu", 16)
    flip = quantus.PixelFlipping(features_in_step=SIZE * SIZE // steps, perturb_baseline="black", abs=True,
                                 disable_warnings=True)
    theirs = np.array(call(flip, x, maps, model=model, softmax=True))
    # Quantus's curve starts after the first step; medattn's at the untouched image (fraction 0)
    assert theirs.shape == (N, steps) and ours["deletion"][:, 1:] == pytest.approx(theirs, abs=1e-5)
    # Quantus's AUC (return_auc_per_sample) is the trapezoid of that curve over step indices (dx = 1); it is
    # computed here because Quantus 0.6 calls np.trapz, which numpy 2.4 no longer has
    auc_q = Q.auc(theirs, np.arange(steps, dtype=float))
    # Quantus integrates over step indices (dx = 1); medattn over the fraction of pixels removed, from fraction 0
    first = (ours["deletion"][:, 0] + ours["deletion"][:, 1]) / 2
    assert Q.auc(ours["deletion"], ours["fractions"]) == pytest.approx((first + auc_q) / steps, abs=1e-5)


@pytest.mark.parametrize("name", ["RegionPerturbation", "Selectivity"])
def test_region_metrics_with_one_pixel_patches_are_the_deletion_curve(case, name):
    x, maps, _ = case
    model = TinyNet().eval()
    pixels = SIZE * SIZE
    ours = Q.deletion_insertion(model, torch.as_tensor(x), maps[:, 0], np.zeros(N, dtype=int), pixels, "zero",
                                "zero", "cpu", pixels + 1)["deletion"]  # one pixel per step
    extra = {"regions_evaluation": pixels} if name == "RegionPerturbation" else {}
    metric = getattr(quantus, name)(patch_size=1, perturb_baseline="black", abs=True, disable_warnings=True, **extra)
    theirs = call(metric, x, maps, model=model, softmax=True)
    # Quantus ranks patches by their summed relevance; with 1-pixel patches that is medattn's pixel order.
    # RegionPerturbation records the drop from the untouched image, Selectivity the probability itself.
    want = ours[:, :1] - ours[:, 1:] if name == "RegionPerturbation" else ours[:, 1:]
    assert theirs == pytest.approx(want, abs=1e-5)


def test_randomisation_score_agrees_with_mprt_on_the_same_randomised_model(case):
    from quantus.helpers.model.pytorch_model import PyTorchModel

    x, _, _ = case
    model = TinyNet().eval()
    y = np.zeros(N, dtype=int)
    original = saliency(model, x, y)
    mprt = quantus.MPRT(layer_order="top_down", seed=42, return_last_correlation=True, abs=True,
                        disable_warnings=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = np.asarray(mprt(model=model, x_batch=x, y_batch=y, a_batch=original, channel_first=True,
                                 explain_func=saliency, softmax=False))
    # the cascade ends with every layer re-initialised: the model medattn's score compares with
    *_, (_, randomised) = PyTorchModel(model, channel_first=True).get_random_layer_generator("top_down", 42)
    ours = Q.rank_correlation(Q.pixel_map(original, "abs"), Q.pixel_map(saliency(randomised, x, y), "abs"))
    assert ours == pytest.approx(theirs.mean(), abs=1e-6)
    assert ours < 0.9  # the maps do depend on the weights


def test_rank_correlation_of_a_constant_map_is_defined_where_spearman_is_not():
    from quantus.functions.similarity_func import correlation_spearman

    flat, ramp = np.ones((1, 1, 4, 4)), np.arange(16.0).reshape(1, 1, 4, 4)
    assert Q.rank_correlation(flat, flat) == 1.0 and Q.rank_correlation(flat, ramp) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isnan(correlation_spearman(flat.ravel(), ramp.ravel()))
