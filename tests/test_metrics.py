"""Metrics against independent implementations (torchmetrics, scikit-image) and hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity
from torchmetrics.functional.image import peak_signal_noise_ratio, spectral_angle_mapper
from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim
from torchmetrics.functional.regression import mean_absolute_error

from m3rcr.evaluation.metrics import MetricAccumulator, mae, psnr, sam, sam_map, ssim, ssim_map


@pytest.fixture
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(3, 4, 48, 40, generator=g)
    pred = (ref + 0.1 * torch.randn(3, 4, 48, 40, generator=g)).clamp(0, 1)
    return pred.double(), ref.double()


def test_mae_and_psnr_match_torchmetrics(pair) -> None:
    pred, ref = pair
    for i in range(3):
        assert mae(pred, ref)[i].item() == pytest.approx(mean_absolute_error(pred[i], ref[i]).item(), rel=1e-12)
        expected = peak_signal_noise_ratio(pred[i], ref[i], data_range=1.0).item()
        assert psnr(pred, ref)[i].item() == pytest.approx(expected, rel=1e-6)  # torchmetrics works in float32
    assert psnr(ref, ref)[0].item() == 100.0  # the authors' value for a perfect image


def test_psnr_by_hand() -> None:
    ref = torch.zeros(1, 1, 2, 2)
    pred = torch.tensor([[[[0.1, 0.1], [0.1, 0.1]]]])
    assert psnr(pred, ref).item() == pytest.approx(20.0, abs=1e-5)  # MSE 0.01 -> 20 dB


def test_ssim_interior_matches_scikit_image_and_torchmetrics(pair) -> None:
    pred, ref = pair
    ours = ssim_map(pred, ref)
    for i in range(3):
        for c in range(4):
            _, sk = structural_similarity(ref[i, c].numpy(), pred[i, c].numpy(), data_range=1.0, gaussian_weights=True,
                                          sigma=1.5, use_sample_covariance=False, full=True)
            np.testing.assert_allclose(ours[i, c, 5:-5, 5:-5].numpy(), sk[5:-5, 5:-5], atol=1e-6)
    _, tm_map = tm_ssim(pred, ref, data_range=1.0, kernel_size=11, sigma=1.5, return_full_image=True)
    np.testing.assert_allclose(ours[..., 5:-5, 5:-5].numpy(), tm_map[..., 5:-5, 5:-5].numpy(), atol=1e-6)
    # the reported value averages the whole map, borders (zero padding) included
    assert ssim(pred, ref)[1].item() == pytest.approx(ours[1].mean().item())
    assert ssim(ref, ref)[0].item() == pytest.approx(1.0)


def test_ssim_whole_map_with_zero_padded_borders(pair) -> None:
    """The full map, borders included, against scipy filtering with zeros outside the image."""
    from scipy.ndimage import correlate

    pred, ref = pair
    x = np.arange(11) - 5.0
    g = np.exp(-(x**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    for i, c in ((0, 0), (2, 3)):
        a, b = pred[i, c].numpy(), ref[i, c].numpy()

        def f(z):
            return correlate(z, w, mode="constant", cval=0.0)

        mu_a, mu_b = f(a), f(b)
        va, vb, cov = f(a * a) - mu_a**2, f(b * b) - mu_b**2, f(a * b) - mu_a * mu_b
        ref_map = ((2 * mu_a * mu_b + 1e-4) * (2 * cov + 9e-4)) / ((mu_a**2 + mu_b**2 + 1e-4) * (va + vb + 9e-4))
        np.testing.assert_allclose(ssim_map(pred, ref)[i, c].numpy(), ref_map, atol=1e-9)


def test_ssim_half_pixel_window_shift_of_the_authors(pair) -> None:
    """The authors' Gaussian is centred at 5.5: a measurable but small difference."""
    pred, ref = pair
    centred, shifted = ssim(pred, ref), ssim(pred, ref, center=5.5)
    assert 0 < (centred - shifted).abs().max().item() < 0.01


def test_sam_matches_torchmetrics_and_hand_values(pair) -> None:
    pred, ref = pair
    expected = torch.rad2deg(spectral_angle_mapper(pred, ref, reduction="none")).mean(dim=(1, 2))
    torch.testing.assert_close(sam(pred, ref), expected, atol=1e-6, rtol=1e-6)
    a = torch.tensor([1.0, 0, 0, 0]).view(1, 4, 1, 1)
    b = torch.tensor([1.0, 1.0, 0, 0]).view(1, 4, 1, 1)
    assert sam(a, b).item() == pytest.approx(45.0, abs=1e-4)
    # a dark pixel: each squared norm is floored at 2^-10 (the authors' rule), so the angle stays defined
    z = torch.zeros(1, 4, 1, 1)
    assert sam_map(z, z).item() == pytest.approx(90.0)
    tiny = torch.full((1, 4, 1, 1), 1e-3)
    assert sam_map(tiny, a).item() == pytest.approx(math.degrees(math.acos(1e-3 / math.sqrt(2**-10))), abs=1e-3)


def test_per_class_and_per_bin_aggregation_on_a_constructed_example() -> None:
    """Two 2x2 images with known errors, classes and cloud covers."""
    ref = torch.zeros(2, 4, 2, 2)
    pred = ref.clone()
    pred[0, :, 0, 0] = 0.4  # image 0: one pixel off by 0.4 in every band (class 0)
    pred[1, :, :, :] = 0.1  # image 1: every pixel off by 0.1 (classes 0, 0, 1, 6)
    landcover = torch.tensor([[[0, 2], [2, 2]], [[0, 0], [1, 6]]])
    mask = torch.tensor([[[1.0, 0], [0, 0]], [[1, 1], [1, 1]]])
    acc = MetricAccumulator()
    acc.update(pred, ref, landcover, mask, cloud_cover=[0.25, 0.9], names=["a", "b"])
    s = acc.summary()
    # per image MAE: 0.4 / 4 = 0.1 and 0.1; overall = mean over images
    assert s["overall"]["mae"] == pytest.approx(0.1)
    assert s["overall"]["images"] == 2
    # pooled over pixels: class 0 has 3 pixels with errors 0.4, 0.1, 0.1 -> 0.2; class 2 has 3 exact pixels
    assert s["per_class"]["forest"]["mae"] == pytest.approx(0.2)
    assert s["per_class"]["forest"]["pixels"] == 3
    assert s["per_class"]["agriculture"]["mae"] == 0.0
    assert s["per_class"]["rangeland"]["mae"] == pytest.approx(0.1)
    assert s["per_class"]["urban"]["mae"] is None and "unknown" not in s["per_class"]
    # SAM against the zero reference is 90 degrees everywhere (norms floored, dot product 0)
    assert s["per_class"]["forest"]["sam"] == pytest.approx(90.0)
    assert s["per_class"]["agriculture"]["sam"] == pytest.approx(90.0)  # 0 vs 0: both floored, cos = 0
    # bins: image a in 20-40, image b in 80-100
    assert s["per_bin"]["20-40"]["images"] == 1 and s["per_bin"]["80-100"]["images"] == 1
    assert s["per_bin"]["20-40"]["mae"] == pytest.approx(0.1) and s["per_bin"]["0-20"]["mae"] is None
    # MAE split by the cloud mask
    assert s["per_bin"]["20-40"]["mae_cloudy"] == pytest.approx(0.4)
    assert s["per_bin"]["20-40"]["mae_clear"] == pytest.approx(0.0)
    assert s["per_bin"]["80-100"]["mae_clear"] is None


def test_accumulator_is_batch_size_independent(pair) -> None:
    pred, ref = pair
    lc = torch.randint(0, 7, (3, 48, 40), generator=torch.Generator().manual_seed(1))
    one, split = MetricAccumulator(), MetricAccumulator()
    one.update(pred, ref, lc, None, [0.1, 0.5, 0.9], ["x", "y", "z"])
    split.update(pred[:1], ref[:1], lc[:1], None, [0.1], ["x"])
    split.update(pred[1:], ref[1:], lc[1:], None, [0.5, 0.9], ["y", "z"])
    a, b = one.summary(), split.summary()
    assert a["overall"] == pytest.approx(b["overall"])
    for c in a["per_class"]:
        assert a["per_class"][c] == pytest.approx(b["per_class"][c])
