"""Bringing the 10 m rasters (SAR, land cover) onto the 3 m optical grid.

Two ways:

* :func:`upsample_nearest` resizes the array, ignoring the georeference. It is exactly what the
  authors' loader does with ``rasterio``'s ``read(out_shape=..., resampling=nearest)`` (GDAL picks the
  source pixel under each output pixel centre), and so the paper's protocol. It treats the two grids
  as if they shared their origin, which in M3R-CR they do not (they differ by 1-2 m).
* :func:`reproject_to_grid` places the raster by its georeference with ``rasterio.warp.reproject``,
  so every optical pixel gets the SAR value at its own ground position.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import reproject, transform_bounds

from m3rcr.data.io import grid_bounds
from m3rcr.data.scene import Grid
from m3rcr.errors import DataError

Interpolation = Literal["nearest", "bilinear"]


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output pixel when resizing ``n_in`` -> ``n_out`` by nearest neighbour.

    floor((j + 0.5) * n_in / n_out), computed in integers: GDAL's choice (the pixel under the output
    pixel's centre), and torch's ``nearest-exact``.
    """
    j = np.arange(n_out, dtype=np.int64)
    return ((2 * j + 1) * n_in) // (2 * n_out)


def upsample_nearest(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize the last two axes of ``array`` to ``shape`` by nearest neighbour (see :func:`nearest_indices`)."""
    rows = nearest_indices(array.shape[-2], shape[0])
    cols = nearest_indices(array.shape[-1], shape[1])
    return array[..., rows[:, None], cols[None, :]]


def check_same_crs(src_crs: CRS | None, dst_crs: CRS | None, src_path: str | Path, dst_path: str | Path) -> None:
    """Both rasters must be georeferenced in the same CRS."""
    if src_crs is None:
        raise DataError(src_path, "has no CRS; placing it by georeference needs one")
    if dst_crs is None:
        raise DataError(dst_path, "has no CRS; placing data on its grid by georeference needs one")
    if src_crs != dst_crs:
        raise DataError(src_path, f"CRS {src_crs.to_string()} differs from the optical CRS {dst_crs.to_string()} "
                                  f"of {dst_path}")


def coverage_gap(
    src_transform: Affine,
    src_shape: tuple[int, int],
    src_crs: CRS,
    dst_transform: Affine,
    dst_shape: tuple[int, int],
    dst_crs: CRS,
) -> float:
    """How far (in destination CRS units) the destination grid reaches beyond the source footprint; <= 0 if inside."""
    sl, sb, sr, st = grid_bounds(src_transform, src_shape)
    if src_crs != dst_crs:
        sl, sb, sr, st = transform_bounds(src_crs, dst_crs, sl, sb, sr, st, densify_pts=21)
    dl, db, dr, dt = grid_bounds(dst_transform, dst_shape)
    return max(sl - dl, sb - db, dr - sr, dt - st)


def reproject_to_grid(
    array: np.ndarray,
    src_transform: Affine,
    src_crs: CRS,
    dst: Grid,
    *,
    resampling: Interpolation = "nearest",
    tolerance: float | None = None,
    where: str | Path = "raster",
) -> np.ndarray:
    """Reproject a (bands, h, w) raster onto the destination grid ``dst`` with ``rasterio.warp.reproject``.

    The source must cover the destination grid to within ``tolerance`` CRS units (default: half a
    source pixel); destination pixels in that margin take the nearest edge value of the source, which
    is what lets M3R-CR's 10 m rasters, whose footprint is offset from the optical one by 1-2 m, fill
    the whole optical grid.

    Returns float64 for float input and the input dtype otherwise.
    """
    if array.ndim != 3:
        raise ValueError(f"expected a (bands, h, w) array, got shape {array.shape}")
    src_res = min(abs(src_transform.a), abs(src_transform.e)) if src_transform.b == src_transform.d == 0 else None
    if tolerance is None:
        tolerance = 0.5 * src_res if src_res else 0.0
    dst_shape, dst_transform, dst_crs = dst.shape, dst.transform, dst.crs
    gap = coverage_gap(src_transform, array.shape[-2:], src_crs, dst_transform, dst_shape, dst_crs)
    if gap > tolerance + 1e-9:
        dl, db, dr, dt = grid_bounds(dst_transform, dst_shape)
        raise DataError(where, f"does not cover the optical extent (left {dl:.2f}, bottom {db:.2f}, right {dr:.2f}, "
                               f"top {dt:.2f}): it falls short by {gap:.2f} CRS units, more than the "
                               f"{tolerance:.2f} allowed")
    # Replicate the edge so that output pixels within the tolerance margin, and bilinear kernels at
    # the border, see real values instead of no-data.
    pad = 2
    padded = np.pad(array, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    padded_transform = src_transform @ Affine.translation(-pad, -pad)
    is_float = array.dtype.kind == "f"
    work = padded.astype(np.float64) if is_float else padded
    nodata = np.nan if is_float else _integer_sentinel(array)
    out = np.full((array.shape[0], *dst_shape), nodata, dtype=work.dtype)
    reproject(
        work,
        out,
        src_transform=padded_transform,
        src_crs=src_crs,
        src_nodata=None,
        dst_transform=dst_transform,
        dst_crs=dst_crs,
        dst_nodata=nodata,
        resampling=Resampling[resampling],
    )
    missing = np.isnan(out) if is_float else out == nodata
    if missing.any():
        raise DataError(where, f"does not cover {int(missing[0].sum())} pixel(s) of the optical grid")
    return out


def _integer_sentinel(array: np.ndarray) -> int:
    """A value of the array's integer dtype that the array does not hold, to mark uncovered pixels."""
    info = np.iinfo(array.dtype)
    for candidate in (info.max, info.min):
        if not (array == candidate).any():
            return int(candidate)
    raise ValueError("cannot pick a no-data value for an integer raster that uses its dtype's extremes")
