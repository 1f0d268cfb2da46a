"""The three SAR placement modes, against independent computations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from affine import Affine
from rasterio.enums import Resampling
from scipy.ndimage import map_coordinates

from m3rcr.data import M3RCRDataset
from m3rcr.data.resample import nearest_indices, reproject_to_grid, upsample_nearest
from m3rcr.data.scene import Grid
from m3rcr.errors import DataError


@pytest.mark.parametrize("n_in,n_out", [(90, 300), (48, 160), (7, 23), (30, 100), (5, 5)])
def test_nearest_matches_gdal_and_torch(tmp_path: Path, n_in: int, n_out: int) -> None:
    rng = np.random.default_rng(n_in)
    arr = rng.random((1, n_in, n_in))
    path = tmp_path / "a.tif"
    with rasterio.open(path, "w", driver="GTiff", width=n_in, height=n_in, count=1, dtype="float64",
                       crs="EPSG:32632", transform=Affine(10, 0, 0, 0, -10, 0)) as dst:
        dst.write(arr)
    with rasterio.open(path) as src:
        gdal = src.read(out_shape=(1, n_out, n_out), resampling=Resampling.nearest)
    np.testing.assert_array_equal(upsample_nearest(arr, (n_out, n_out)), gdal)
    torch_up = F.interpolate(torch.from_numpy(arr)[None], size=(n_out, n_out), mode="nearest-exact")[0].numpy()
    np.testing.assert_array_equal(upsample_nearest(arr, (n_out, n_out)), torch_up)


def test_nearest_indices_90_to_300() -> None:
    idx = nearest_indices(90, 300)
    assert idx[:10].tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    assert idx[-1] == 89 and np.bincount(idx).min() == 3 and np.bincount(idx).max() == 4


def _normalize(raw: np.ndarray) -> np.ndarray:
    vv = (np.clip(raw[0], -25, 0) + 25) / 25
    vh = (np.clip(raw[1], -32.5, 0) + 32.5) / 32.5
    return np.stack([vv, vh])


def _sar_and_offset(root: Path, split: str) -> tuple[np.ndarray, float, float]:
    """Raw SAR in dB and the optical-minus-SAR origin offset in SAR pixels."""
    row = (root / f"{split}.csv").read_text().strip().split(",")
    with rasterio.open(root / split / row[1]) as opt, rasterio.open(root / split / row[2]) as sar:
        # optical origin minus SAR origin, in SAR pixels, along columns (x) and rows (y, southwards)
        dx = (opt.transform.c - sar.transform.c) / 10.0
        dy = (sar.transform.f - opt.transform.f) / 10.0
        raw = sar.read()
    return raw, dx, dy


@pytest.mark.parametrize("split,offset_px", [("test", (0.0, -2 / 3)), ("train", (-2 / 3, -1 / 3))])
def test_geo_mode_places_real_sar_by_its_georeference(real_root: Path, split: str, offset_px: tuple) -> None:
    """Geo mode lands the SAR shifted, relative to nearest mode, by the grids' origin offset.

    The test sample's optical origin is 2 m west of the SAR origin (-2/3 optical pixel in x); the
    train sample's is 1 m west and 2 m north (-1/3 px in x, -2/3 px in y).
    """
    raw, dx, dy = _sar_and_offset(real_root, split)
    sar = _normalize(raw)
    assert (dy * 10 / 3, dx * 10 / 3) == pytest.approx(offset_px)
    j = np.arange(300)
    # centre of optical pixel j in SAR pixel units, for nearest mode (shared origin) and for the true grids
    centre = (j + 0.5) * 0.3
    rows_geo, cols_geo = centre + dy, centre + dx

    nearest = M3RCRDataset(real_root, split, sar_mode="nearest")[0]["sar"].numpy()
    geo_nn = M3RCRDataset(real_root, split, sar_mode="geo")[0]["sar"].numpy()
    geo_bl = M3RCRDataset(real_root, split, sar_mode="geo", sar_resampling="bilinear")[0]["sar"].numpy()

    # nearest mode picks floor(centre); geo mode floor(centre + offset), clamped at the tile edge
    r, c = np.floor(centre).astype(int), np.floor(centre).astype(int)
    np.testing.assert_array_equal(nearest, sar[:, r[:, None], c[None, :]].astype(np.float32))
    r = np.clip(np.floor(rows_geo), 0, 89).astype(int)
    c = np.clip(np.floor(cols_geo), 0, 89).astype(int)
    np.testing.assert_array_equal(geo_nn, sar[:, r[:, None], c[None, :]].astype(np.float32))
    assert not np.array_equal(geo_nn, nearest)

    # bilinear: scipy's linear interpolation of the dB values at the true positions (edges clamped),
    # then the usual clipping and scaling
    R, C = np.meshgrid(rows_geo - 0.5, cols_geo - 0.5, indexing="ij")
    expected = _normalize(np.stack([map_coordinates(b, [R, C], order=1, mode="nearest") for b in raw]))
    np.testing.assert_allclose(geo_bl, expected, atol=1e-6)

    # and the shift that best explains geo-bilinear relative to the shared-origin grid is the offset
    shifts = np.arange(-1.0, 1.0001, 1 / 30)  # optical pixels
    def err(sy: float, sx: float) -> float:
        R, C = np.meshgrid(centre - 0.5 + sy * 0.3, centre - 0.5 + sx * 0.3, indexing="ij")
        pred = _normalize(np.stack([map_coordinates(b, [R, C], order=1, mode="nearest") for b in raw]))[0]
        return float(np.mean((pred - geo_bl[0])[5:-5, 5:-5] ** 2))
    best_x = shifts[np.argmin([err(offset_px[0], s) for s in shifts])]
    best_y = shifts[np.argmin([err(s, offset_px[1]) for s in shifts])]
    assert best_x == pytest.approx(offset_px[1], abs=1e-6)
    assert best_y == pytest.approx(offset_px[0], abs=1e-6)


def test_geo_landcover_is_nearest_by_georeference(real_root: Path) -> None:
    s = M3RCRDataset(real_root, "train", sar_mode="geo", sar_resampling="bilinear")[0]
    assert s["landcover"].dtype == torch.int64 and s["landcover"].shape == (300, 300)
    with rasterio.open(next((real_root / "train").glob("landcover_*/*/*.tif"))) as src:
        codes = src.read(1)
    table = {10: 0, 20: 1, 30: 1, 40: 2, 50: 3, 60: 4}
    j = np.arange(300)
    r = np.clip(np.floor((j + 0.5) * 0.3 - 0.2), 0, 89).astype(int)  # 2 m north
    c = np.clip(np.floor((j + 0.5) * 0.3 - 0.1), 0, 89).astype(int)  # 1 m west
    expected = np.vectorize(table.__getitem__)(codes[r[:, None], c[None, :]])
    np.testing.assert_array_equal(s["landcover"].numpy(), expected)


def test_reproject_across_crs_and_coverage_errors() -> None:
    """A 10 m raster in UTM 33N reprojected onto a 3 m grid in UTM 32N covering part of it."""
    from rasterio.crs import CRS
    from rasterio.warp import transform as warp_points

    src_crs, dst_crs = CRS.from_epsg(32633), CRS.from_epsg(32632)
    src_tf = Affine(10, 0, 300_000, 0, -10, 5_000_000)
    yy, xx = np.mgrid[0:100, 0:100]
    arr = (xx * 1.0 + yy * 100.0)[None]  # linear ramp: bilinear interpolation reproduces it exactly
    # a destination grid around the source centre, in the other zone
    (cx,), (cy,) = warp_points(src_crs, dst_crs, [300_500.0], [4_999_500.0])
    dst_tf = Affine(3, 0, cx - 150, 0, -3, cy + 150)
    out = reproject_to_grid(arr, src_tf, src_crs, Grid(dst_crs, dst_tf, 100, 100), resampling="bilinear")
    # check a few pixels against the ramp at the reprojected pixel centres
    cols, rows = np.array([5, 50, 94]), np.array([7, 50, 90])
    xs, ys = dst_tf @ (cols + 0.5, rows + 0.5)
    sx, sy = warp_points(dst_crs, src_crs, xs, ys)
    u, v = (np.array(sx) - 300_000) / 10 - 0.5, (5_000_000 - np.array(sy)) / 10 - 0.5
    np.testing.assert_allclose(out[0, rows, cols], u + 100 * v, atol=0.05)

    far = Affine(3, 0, cx + 2000, 0, -3, cy)
    with pytest.raises(DataError, match="does not cover the optical extent"):
        reproject_to_grid(arr, src_tf, src_crs, Grid(dst_crs, far, 100, 100), where="s1.tif")
