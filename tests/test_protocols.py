"""SEN12MS-CR metric protocol against numpy by hand, scikit-image and torchmetrics; NaN-skipping means; errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from paths import SHARED, require_shared
from scipy.ndimage import correlate
from skimage.metrics import structural_similarity
from torchmetrics.functional.image import peak_signal_noise_ratio, spectral_angle_mapper
from torchmetrics.functional.regression import mean_absolute_error

from m3rcr.evaluation.metrics import MetricAccumulator
from m3rcr.evaluation.protocols import (
    M3RCR,
    PROTOCOLS,
    SEN12MSCR,
    MeanResult,
    nan_mean,
    protocol,
    sam_skipping_zero_norm,
    sen12mscr_image_metrics,
)

SEN12MSCR_SAMPLES = SHARED / "data" / "sen12mscr-samples"


# ---- independent numpy implementations of spec sen12mscr.md section 5 ----------------------------------------

def np_rmse(t: np.ndarray, p: np.ndarray) -> float:
    return float(np.sqrt(np.mean((t - p) ** 2)))


def np_sam(t: np.ndarray, p: np.ndarray) -> float:
    """(C, H, W) -> mean angle in degrees over the pixels whose two band vectors are both nonzero."""
    t2, p2 = t.reshape(t.shape[0], -1), p.reshape(p.shape[0], -1)  # (C, pixels)
    nt, np_ = np.linalg.norm(t2, axis=0), np.linalg.norm(p2, axis=0)
    keep = (nt != 0) & (np_ != 0)
    if not keep.any():
        return math.nan
    cos = np.einsum("cn,cn->n", t2[:, keep], p2[:, keep]) / (nt[keep] * np_[keep])
    return float(np.degrees(np.arccos(np.clip(cos, -1, 1))).mean())


def np_ssim_map(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """(C, H, W) Gaussian SSIM map with zeros outside the image (the reference's conv2d padding)."""
    x = np.arange(11) - 5.0
    g = np.exp(-x**2 / (2 * 1.5**2))
    g /= g.sum()
    w = np.outer(g, g)

    def filt(a: np.ndarray) -> np.ndarray:
        return np.stack([correlate(band, w, mode="constant", cval=0.0) for band in a])

    mu_t, mu_p = filt(t), filt(p)
    s_t, s_p, s_tp = filt(t * t) - mu_t**2, filt(p * p) - mu_p**2, filt(t * p) - mu_t * mu_p
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mu_t * mu_p + c1) * (2 * s_tp + c2)) / ((mu_t**2 + mu_p**2 + c1) * (s_t + s_p + c2))


def check_against_numpy(t: np.ndarray, p: np.ndarray, got: dict[str, float]) -> None:
    e = np_rmse(t, p)
    assert got["rmse"] == pytest.approx(e, rel=1e-12)
    assert got["psnr"] == pytest.approx(20 * math.log10(1 / e), rel=1e-12)
    assert got["mae"] == pytest.approx(float(np.mean(np.abs(t - p))), rel=1e-12)
    assert got["sam"] == pytest.approx(np_sam(t, p), rel=1e-9)
    assert got["ssim"] == pytest.approx(float(np_ssim_map(t, p).mean()), abs=1e-5)  # float32 SSIM


@pytest.fixture
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    """Three random 13-band images on [0, 1] and noisy predictions of them."""
    g = torch.Generator().manual_seed(14)
    ref = torch.rand(3, 13, 24, 20, generator=g, dtype=torch.float64)
    pred = (ref + 0.05 * torch.randn(3, 13, 24, 20, generator=g, dtype=torch.float64)).clamp(0, 1)
    return pred, ref


def test_random_13_band_images_match_numpy(pair) -> None:
    pred, ref = pair
    rows = sen12mscr_image_metrics(pred, ref)
    assert len(rows) == 3
    for i, row in enumerate(rows):
        assert set(SEN12MSCR.metrics) <= set(row)
        assert row["sam_zero_norm_pixels"] == 0
        check_against_numpy(ref[i].numpy(), pred[i].numpy(), row)


def test_random_images_match_torchmetrics(pair) -> None:
    pred, ref = pair
    rows = sen12mscr_image_metrics(pred, ref)
    for i, row in enumerate(rows):
        p, r = pred[i : i + 1], ref[i : i + 1]
        assert row["mae"] == pytest.approx(mean_absolute_error(p, r).item(), rel=1e-12)
        assert row["psnr"] == pytest.approx(peak_signal_noise_ratio(p, r, data_range=1.0).item(), rel=1e-6)
        # torchmetrics averages the angle (radians) over every pixel of the whole batch: call it one image at
        # a time to get the per-image mean, then convert; per-pixel angles agree too
        assert row["sam"] == pytest.approx(math.degrees(spectral_angle_mapper(p, r).item()), rel=1e-9)
    per_pixel = torch.rad2deg(spectral_angle_mapper(pred, ref, reduction="none"))
    np.testing.assert_allclose([r["sam"] for r in rows], per_pixel.flatten(1).mean(1).numpy(), rtol=1e-9)


def test_ssim_matches_scikit_image_inside_and_numpy_everywhere(pair) -> None:
    """scikit-image's Gaussian SSIM crops 5 border pixels; inside, its map equals the zero-padded numpy map,
    and the protocol's SSIM is the numpy map's mean over ALL pixels (borders included, as the reference)."""
    pred, ref = pair
    rows = sen12mscr_image_metrics(pred, ref)
    for i in range(3):
        t, p = ref[i].numpy(), pred[i].numpy()
        mssim, sk_map = structural_similarity(t, p, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                              data_range=1.0, channel_axis=0, full=True)
        ours = np_ssim_map(t, p)
        np.testing.assert_allclose(ours[:, 5:-5, 5:-5], sk_map[:, 5:-5, 5:-5], atol=1e-9)
        assert mssim == pytest.approx(float(ours[:, 5:-5, 5:-5].mean()), abs=1e-9)
        assert rows[i]["ssim"] == pytest.approx(float(ours.mean()), abs=1e-5)  # computed in float32
        assert rows[i]["ssim"] != pytest.approx(mssim, abs=1e-4)  # the border convention matters


def test_float32_input_gives_the_float64_results(pair) -> None:
    pred, ref = pair
    r64 = sen12mscr_image_metrics(pred.float().double(), ref.float().double())
    r32 = sen12mscr_image_metrics(pred.float(), ref.float())
    for a, b in zip(r32, r64):
        for k in SEN12MSCR.metrics:
            assert a[k] == pytest.approx(b[k], rel=1e-12, abs=1e-12)


def test_perfect_image_gives_inf_psnr_and_the_mean_skips_it(pair) -> None:
    pred, ref = pair
    pred = pred.clone()
    pred[1] = ref[1]
    rows = sen12mscr_image_metrics(pred, ref)
    assert rows[1]["rmse"] == 0 and rows[1]["psnr"] == math.inf
    assert rows[1]["ssim"] == pytest.approx(1.0) and rows[1]["sam"] == pytest.approx(0.0, abs=1e-5)
    score = SEN12MSCR.aggregate(rows)["psnr"]
    assert (score.count, score.inf, score.nan) == (2, 1, 0)
    assert score.mean == pytest.approx((rows[0]["psnr"] + rows[2]["psnr"]) / 2)


def test_sam_skips_zero_norm_pixels() -> None:
    ref = torch.tensor([[1.0, 0.0, 0.0, 0.5], [0.0, 0.0, 1.0, 0.5]]).reshape(1, 2, 2, 2).double()  # pixels as columns
    pred = torch.tensor([[1.0, 0.3, 0.0, 0.0], [1.0, 0.2, 1.0, 0.0]]).reshape(1, 2, 2, 2).double()
    # pixel 0: 45 degrees; pixel 1: reference zero; pixel 2: 0 degrees; pixel 3: prediction zero
    mean, skipped = sam_skipping_zero_norm(pred, ref)
    assert mean.item() == pytest.approx(22.5) and skipped.item() == 2
    row = sen12mscr_image_metrics(pred, ref)[0]
    assert row["sam"] == pytest.approx(np_sam(ref[0].numpy(), pred[0].numpy()))
    assert row["sam_zero_norm_pixels"] == 2
    blank = sen12mscr_image_metrics(torch.zeros(1, 13, 4, 4), torch.rand(1, 13, 4, 4))[0]
    assert math.isnan(blank["sam"]) and blank["sam_zero_norm_pixels"] == 16
    assert math.isfinite(blank["rmse"]) and math.isfinite(blank["ssim"])


def test_nan_input_stays_nan_and_is_skipped(pair) -> None:
    pred, ref = pair
    pred = pred.clone()
    pred[0, 3, 2, 2] = math.nan
    rows = sen12mscr_image_metrics(pred, ref)
    assert all(math.isnan(rows[0][k]) for k in SEN12MSCR.metrics)
    scores = SEN12MSCR.aggregate(rows)
    for k in SEN12MSCR.metrics:
        assert (scores[k].count, scores[k].nan) == (2, 1)
        assert scores[k].mean == pytest.approx((rows[1][k] + rows[2][k]) / 2)


def test_nan_mean() -> None:
    r = nan_mean([1.0, math.nan, None, 3.0, math.inf, -math.inf, 2.0])
    assert r == MeanResult(mean=2.0, count=3, nan=2, inf=2)
    assert r.skipped == 4 and r.as_dict() == {"mean": 2.0, "count": 3, "nan": 2, "inf": 2}
    assert nan_mean([]) == MeanResult(None, 0, 0, 0)
    assert nan_mean([math.nan, None]) == MeanResult(None, 0, 2, 0)
    assert nan_mean(iter([0.1] * 10)).mean == 0.1  # fsum: exact where a running sum drifts
    assert SEN12MSCR.aggregate([{"rmse": 0.5}, {}])["rmse"] == MeanResult(0.5, 1, 1, 0)


@pytest.mark.parametrize("bad, error, words", [
    (lambda p, r: (p[:, :12], r), ValueError, "one shape"),
    (lambda p, r: (p[0], r[0]), ValueError, "(B, C, H, W)"),
    (lambda p, r: ((p * 10000).to(torch.int32), r), TypeError, "floating"),
    (lambda p, r: (p, (r * 10000).to(torch.uint8)), TypeError, "reference must be a floating"),
    (lambda p, r: (p.numpy(), r), TypeError, "torch.Tensor"),
])
def test_shape_and_dtype_errors(pair, bad, error, words) -> None:
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        sen12mscr_image_metrics(*bad(*pair))


def test_empty_batch() -> None:
    assert sen12mscr_image_metrics(torch.zeros(0, 13, 8, 8), torch.zeros(0, 13, 8, 8)) == []
    assert SEN12MSCR.aggregate([])["psnr"] == MeanResult(None, 0, 0, 0)


def test_protocol_lookup_and_m3rcr_matches_the_accumulator(pair) -> None:
    assert protocol("sen12mscr") is SEN12MSCR and protocol("m3rcr") is M3RCR and set(PROTOCOLS) == {"m3rcr", "sen12mscr"}
    with pytest.raises(ValueError, match="known: m3rcr, sen12mscr"):
        protocol("allclear")
    pred, ref = pair
    acc = MetricAccumulator()
    acc.update(pred, ref, None, None, [0.1, 0.2, 0.3], ["a", "b", "c"])
    for rec, row in zip(acc.records, M3RCR.image_metrics(pred, ref)):
        assert row == {k: getattr(rec, k) for k in M3RCR.metrics}


def _read_default(path) -> np.ndarray:
    """The 'default' preprocessing (spec section 4): S2 clipped to [0, 10000] and divided by 10000."""
    import rasterio

    with rasterio.open(path) as src:
        return np.clip(src.read().astype(np.float64), 0, 10000) / 10000


@pytest.mark.parametrize("sample", ["ROIs1970_fall_139_p839", "ROIs2017_winter_112_p797"])
def test_real_sen12mscr_sample_cloudy_vs_cloudfree(sample: str) -> None:
    folder = require_shared(SEN12MSCR_SAMPLES / sample)
    cloudy, clear = _read_default(folder / "s2_cloudy.tif"), _read_default(folder / "s2_cloudfree.tif")
    assert cloudy.shape == clear.shape == (13, 256, 256)
    row = sen12mscr_image_metrics(torch.from_numpy(cloudy)[None], torch.from_numpy(clear)[None])[0]
    check_against_numpy(clear, cloudy, row)
    _, sk_map = structural_similarity(clear, cloudy, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                      data_range=1.0, channel_axis=0, full=True)
    np.testing.assert_allclose(np_ssim_map(clear, cloudy)[:, 5:-5, 5:-5], sk_map[:, 5:-5, 5:-5], atol=1e-9)
    assert row["sam_zero_norm_pixels"] == 0
    print(f"\n{sample}: " + ", ".join(f"{k.upper()} {row[k]:.6f}" for k in SEN12MSCR.metrics))
