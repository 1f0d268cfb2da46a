"""Preprocessing exactly as the paper's spec (section 2), checked on the two real samples.

Expected values are computed here straight from the raw files with rasterio and numpy, without the
package's readers, normalisers or resamplers.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.enums import Resampling

from m3rcr.data import M3RCRDataset
from m3rcr.data.preprocess import (
    cloud_cover_bin,
    fill_nan,
    landcover_ids,
    normalize_optical,
    normalize_sar,
)
from m3rcr.errors import DataError, DataWarning

# spec section 2, typed out independently of the package's tables
LEVEL1 = {10: 0, 20: 1, 30: 1, 40: 2, 50: 3, 60: 4, 70: 6, 80: 5, 90: 5, 95: 6, 100: 6}
LEVEL2 = {10: 0, 20: 1, 30: 2, 40: 3, 50: 4, 60: 5, 70: 6, 80: 7, 90: 8, 95: 9, 100: 10}


def _files(root: Path, split: str) -> dict[str, Path]:
    row = (root / f"{split}.csv").read_text().strip().split(",")
    return dict(zip(("cloudfree", "cloudy", "sar", "landcover", "cloudmask"), (root / split / r for r in row)))


def _expected(root: Path, split: str, level: int = 1) -> dict[str, np.ndarray]:
    f = _files(root, split)
    out = {}
    for key in ("cloudy", "cloudfree"):
        with rasterio.open(f[key]) as src:
            raw = src.read().astype(np.float64)
        out[key] = (np.clip(raw, 0, 10000) / 10000).astype(np.float32)
    with rasterio.open(f["sar"]) as src:
        # the authors' loader: rasterio nearest read straight to 300x300, then clip and rescale
        up = src.read(out_shape=(2, 300, 300), resampling=Resampling.nearest)
        native = src.read()
    vv = (np.clip(up[0], -25, 0) + 25) / 25
    vh = (np.clip(up[1], -32.5, 0) + 32.5) / 32.5
    out["sar"] = np.stack([vv, vh]).astype(np.float32)
    out["sar_native"] = np.stack([(np.clip(native[0], -25, 0) + 25) / 25,
                                  (np.clip(native[1], -32.5, 0) + 32.5) / 32.5]).astype(np.float32)
    with rasterio.open(f["landcover"]) as src:
        codes = src.read(1, out_shape=(300, 300), resampling=Resampling.nearest)
    table = LEVEL1 if level == 1 else LEVEL2
    out["landcover"] = np.vectorize(table.__getitem__)(codes).astype(np.int64)
    out["cloudmask"] = np.load(f["cloudmask"], allow_pickle=False).astype(np.float32)
    return out


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("level", [1, 2])
def test_real_samples_are_read_exactly(real_root: Path, split: str, level: int) -> None:
    exp = _expected(real_root, split, level)
    s = M3RCRDataset(real_root, split, landcover_level=level)[0]
    for key in ("cloudy", "cloudfree", "sar", "landcover", "cloudmask"):
        got = s[key].numpy()
        assert got.dtype == exp[key].dtype, key
        assert got.shape == exp[key].shape, key
        np.testing.assert_array_equal(got, exp[key], err_msg=key)
    assert s["cloud_cover"] == pytest.approx(exp["cloudmask"].mean())
    assert s["cloud_cover"] == s["cloud_cover_tile"]


def test_real_samples_known_statistics(real_root: Path) -> None:
    """Facts about the real files that the spec and the files themselves state."""
    train = M3RCRDataset(real_root, "train")[0]
    test = M3RCRDataset(real_root, "test")[0]
    assert train["cloud_cover"] == pytest.approx(0.4842444444444444)
    assert test["cloud_cover"] == pytest.approx(0.28881111111111113)
    for s in (train, test):
        for key in ("cloudy", "cloudfree", "sar"):
            assert 0.0 <= float(s[key].min()) and float(s[key].max()) <= 1.0
    # the train SAR has VV above 0 dB (up to 11.5 dB), which clips to exactly 1
    assert float(train["sar"][0].max()) == 1.0
    assert set(torch.unique(train["landcover"]).tolist()) == {0, 1, 2, 3, 4}  # codes 10, 30, 40, 50, 60
    assert set(torch.unique(test["landcover"]).tolist()) == {0, 1}  # codes 10, 20, 30
    assert train["crs"] == "EPSG:32646" and test["crs"] == "EPSG:32736"
    assert tuple(test["transform"].tolist()) == (3.0, 0.0, 385308.0, 0.0, -3.0, 9215070.0)


def test_native_mode_keeps_the_10m_grid(real_root: Path) -> None:
    exp = _expected(real_root, "train")
    s = M3RCRDataset(real_root, "train", sar_mode="native")[0]
    assert s["sar"].shape == (2, 90, 90) and s["landcover"].shape == (90, 90)
    np.testing.assert_array_equal(s["sar"].numpy(), exp["sar_native"])
    assert tuple(s["sar_transform"].tolist()) == (10.0, 0.0, 760300.0, 0.0, -10.0, 1898410.0)


def test_normalize_optical_clips_and_scales() -> None:
    raw = np.array([[[0, 1, 5000, 10000, 12000, 65535]]], dtype=np.uint16)
    got = normalize_optical(raw)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got[0, 0], np.float32([0, 1e-4, 0.5, 1, 1, 1]))


def test_normalize_sar_ranges() -> None:
    vv = np.array([-40.0, -25.0, -12.5, 0.0, 11.0])
    vh = np.array([-40.0, -32.5, -16.25, 0.0, 3.0])
    got = normalize_sar(np.stack([vv, vh])[:, None, :])
    np.testing.assert_allclose(got[0, 0], [0, 0, 0.5, 1, 1], atol=1e-7)
    np.testing.assert_allclose(got[1, 0], [0, 0, 0.5, 1, 1], atol=1e-7)


def test_nan_fill_uses_the_image_mean_and_warns() -> None:
    img = np.array([[[1.0, np.nan], [3.0, 5.0]], [[np.nan, 7.0], [9.0, np.nan]]])
    with pytest.warns(DataWarning, match=r"x\.tif: filled 3 NaN value\(s\) in 3 pixel\(s\) with the image mean"):
        out = fill_nan(img, "x.tif")
    assert np.all(out[np.isnan(img)] == 5.0)  # mean of 1, 3, 5, 7, 9
    with pytest.warns(DataWarning, match="band mean"):
        out = fill_nan(img, "x.tif", mode="band")
    assert out[0, 0, 1] == 3.0 and out[1, 0, 0] == 8.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fill_nan(np.ones((1, 2, 2)), "y.tif").sum() == 4  # nothing to fill, no warning
    with pytest.raises(DataError, match="no valid"):
        fill_nan(np.full((2, 2, 2), np.nan), "z.tif")


@pytest.mark.parametrize("level,table", [(1, LEVEL1), (2, LEVEL2)])
def test_landcover_levels(level: int, table: dict[int, int]) -> None:
    codes = np.array(sorted(table), dtype=np.uint8)
    np.testing.assert_array_equal(landcover_ids(codes, level, "lc.tif"), [table[c] for c in codes])
    with pytest.raises(DataError, match=r"lc\.tif: land cover has values that are not WorldCover codes: 37"):
        landcover_ids(np.array([10, 37], dtype=np.uint8), level, "lc.tif")


def test_cloud_cover_bins() -> None:
    assert [cloud_cover_bin(f) for f in (0.0, 0.1999, 0.2, 0.4, 0.6, 0.79, 0.8, 1.0)] == [0, 0, 1, 2, 3, 3, 4, 4]
    with pytest.raises(ValueError):
        cloud_cover_bin(1.2)
