"""Whole georeferenced scenes: window-by-window reading of optical scenes and of rasters warped onto their grid.

A scene is never read whole. :class:`OpticalScene` reads windows of an optical raster (any band
count; the bands a model reads are picked from it: blue, green, red, NIR for M3R-CR, the 13 Sentinel-2 L1C
bands for SEN12MS-CR) with their no-data mask;
:class:`WarpedLayer` reads windows of another raster (SAR, land cover, a cloud mask) brought onto a
target grid by GDAL's warper (any CRS and resolution). The warper uses an exact transformation
(error tolerance 1e-6 pixel instead of GDAL's default 0.125), so a window reads the same pixels
whether it is read alone or as part of the whole grid.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from m3rcr.data.io import GDAL_ERRORS, grid_bounds, open_dataset, read_bands, sample_bands
from m3rcr.data.optical_values import check_optical_raster
from m3rcr.data.preprocess import OPTICAL_BANDS, OPTICAL_SCALE, SAR_BANDS, normalize_sar
from m3rcr.data.sar_units import CLI_ADVICE, SarUnits, check_sar_raster
from m3rcr.errors import DataError

#: GDAL's block cache during scene work (GDAL's default, 5 % of RAM, would grow with the scene written).
BLOCK_CACHE_BYTES = 64 * 2**20
#: Error tolerance of the warper's approximate transformation, in pixels (GDAL's default is 0.125).
WARP_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Grid:
    """A north-up or rotated raster grid: CRS, affine transform and size."""

    crs: CRS
    transform: Affine
    height: int
    width: int

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width)."""
        return self.height, self.width

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in CRS units."""
        return grid_bounds(self.transform, self.shape)

    def window_transform(self, window: Window) -> Affine:
        """The transform of a window of this grid."""
        return self.transform @ Affine.translation(window.col_off, window.row_off)

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) in CRS units."""
        return math.hypot(self.transform.a, self.transform.d), math.hypot(self.transform.b, self.transform.e)


def open_raster(path: str | Path, what: str) -> rasterio.io.DatasetReader:
    """Open a georeferenced raster for reading, or raise a :class:`DataError` saying what is wrong."""
    src = open_dataset(path, what)
    try:
        if src.gcps[0] and src.transform == Affine.identity():
            # raw Sentinel-1 GRD: rasterio reports no CRS for GCP-only rasters
            raise DataError(path, f"{what} is georeferenced by ground control points only; "
                                  "orthorectify it first (e.g. gdalwarp, or SNAP terrain correction)")
        if src.crs is None:
            raise DataError(path, f"{what} has no CRS (unknown coordinate reference system); it must be georeferenced")
        if src.transform == Affine.identity():
            raise DataError(path, f"{what} has no geotransform; it must be georeferenced")
        _check_crs_usable(src.crs, path, what)
    except BaseException:
        src.close()
        raise
    return src


def _check_crs_usable(crs: CRS, path: str | Path, what: str) -> None:
    try:
        transform_bounds(crs, "EPSG:4326", 0.0, 0.0, 1.0, 1.0) if not crs.is_geographic else None
    except GDAL_ERRORS as exc:
        raise DataError(path, f"{what} CRS {crs.to_string() or crs.wkt[:60]} cannot be transformed ({exc})") from None


def grid_of(src: rasterio.io.DatasetReader) -> Grid:
    """The grid of an open raster."""
    return Grid(src.crs, src.transform, src.height, src.width)


def parse_bands(spec: str | Sequence[int] | None, count: int, where: str | Path,
                names: Sequence[str] = OPTICAL_BANDS, option: str = "--bands") -> tuple[int, ...]:
    """1-based band indices for ``names`` (blue, green, red, NIR) from ``"2,3,4,8"`` or a sequence.

    Without ``spec`` a raster with exactly ``len(names)`` bands uses them in file order. ``option``
    names the command-line option in error messages.
    """
    n = len(names)
    if spec is None:
        if count == n:
            return tuple(range(1, n + 1))
        raise DataError(where, f"has {count} band(s); say which are {', '.join(names)} with {option} "
                               f"(1-based, e.g. --bands 2,3,4,8 for Sentinel-2)")
    if isinstance(spec, str):
        try:
            bands = tuple(int(b) for b in spec.replace(" ", "").split(","))
        except ValueError:
            raise DataError(where, f"{option} {spec!r}: expected {n} comma-separated band numbers") from None
    else:
        bands = tuple(int(b) for b in spec)
    if len(bands) != n:
        raise DataError(where, f"{option} needs {n} band numbers ({', '.join(names)}), got {len(bands)}")
    bad = [b for b in bands if not 1 <= b <= count]
    if bad:
        raise DataError(where, f"band(s) {', '.join(map(str, bad))} do not exist: the raster has bands 1..{count}")
    if len(set(bands)) != n:
        raise DataError(where, f"{option} {','.join(map(str, bands))} names a band twice")
    return bands


def covered_fraction(src: rasterio.io.DatasetReader, grid: Grid) -> float:
    """Fraction of ``grid``'s bounding box inside ``src``'s bounding box (both in the grid's CRS)."""
    gl, gb, gr, gt = grid.bounds
    try:
        sl, sb, sr, st = transform_bounds(src.crs, grid.crs, *src.bounds, densify_pts=21)
    except GDAL_ERRORS as exc:
        raise DataError(src.name, f"cannot be transformed to {grid.crs.to_string()} ({exc})") from None
    w = max(0.0, min(gr, sr) - max(gl, sl))
    h = max(0.0, min(gt, st) - max(gb, sb))
    return w * h / max((gr - gl) * (gt - gb), 1e-300)


def require_overlap(src: rasterio.io.DatasetReader, grid: Grid, what: str, scene: str = "the optical scene"
                    ) -> float:
    """The fraction of ``grid`` that ``src`` covers (see :func:`covered_fraction`); none is a :class:`DataError`."""
    fraction = covered_fraction(src, grid)
    if fraction <= 0:
        raise DataError(src.name, f"{what} does not overlap {scene} (its footprint, in {grid.crs.to_string()}, "
                                  f"misses the scene's bounds {_fmt(grid.bounds)})")
    return fraction


#: A cloud mask holds classes (0 clear, non-zero cloudy); more than this share of values strictly between 0
#: and 1 is a probability or a fractional cover, which "non-zero = cloudy" would turn into all-cloud.
MAX_FRACTIONAL_MASK = 0.001


def check_cloud_mask(src: rasterio.io.DatasetReader, where: str | Path) -> None:
    """Refuse a cloud mask of several bands (an image, a UDM2) or whose values are fractions (a cloud
    probability), read on a subsample."""
    if src.count != 1:
        raise DataError(where, f"cloud mask has {src.count} bands; a cloud mask has one (non-zero = cloudy). An "
                               "optical image or a multi-band UDM2? Extract or compute the cloud band first "
                               "(e.g. gdal_translate -b N)")
    values = sample_bands(src, [1])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return
    fractional = (values > 0) & (values < 1)
    if fractional.mean() > MAX_FRACTIONAL_MASK:
        example = float(values[fractional][0])
        raise DataError(where, f"cloud mask: {fractional.mean():.1%} of its values lie between 0 and 1 (e.g. "
                               f"{example:.3g}); a probability or a fractional cover? Non-zero means cloudy here, so "
                               "threshold it first (e.g. gdal_calc.py -A MASK --calc='A>0.5' --type=Byte)")


def footprint_window(src: rasterio.io.DatasetReader, grid: Grid) -> Window | None:
    """The window of ``src`` under ``grid``'s bounding box (None: the whole raster, e.g. when rotated)."""
    try:
        bounds = transform_bounds(grid.crs, src.crs, *grid.bounds, densify_pts=21)
        win = rasterio.windows.from_bounds(*bounds, transform=src.transform)
    except (*GDAL_ERRORS, ValueError):  # a rotated raster, say
        return None
    r0, c0 = max(0, math.floor(win.row_off)), max(0, math.floor(win.col_off))
    r1 = min(src.height, math.ceil(win.row_off + win.height))
    c1 = min(src.width, math.ceil(win.col_off + win.width))
    return Window(c0, r0, c1 - c0, r1 - r0) if r1 > r0 and c1 > c0 else None


def require_float_sar(src: rasterio.io.DatasetReader, what: str, linear_hint: str) -> None:
    """SAR backscatter must be stored as floats (dB or linear power); ``linear_hint`` says how to pick linear."""
    if not src.dtypes[0].startswith("float"):
        raise DataError(src.name, f"{what} has dtype {src.dtypes[0]}; expected float backscatter "
                                  f"(dB, or linear power with {linear_hint})")


def picked_dtype(src: rasterio.io.DatasetReader, bands: Sequence[int], what: str) -> np.dtype:
    """The data type of the picked optical bands: one type for all of them, integer or float."""
    if len({src.dtypes[b - 1] for b in bands}) > 1:
        raise DataError(src.name, "the picked bands have different data types")
    dtype = np.dtype(src.dtypes[bands[0] - 1])
    if dtype.kind not in "uif":
        raise DataError(src.name, f"{what} has dtype {dtype}; expected integer or float reflectance")
    return dtype


class WarpedLayer:
    """Windows of a raster warped onto a target grid (any source CRS and resolution).

    Pixels the source does not cover, or where it is no-data (its no-data value, NaN or its mask),
    read as ``nodata`` (NaN for float output). ``use_source_nodata=False`` ignores the source's
    no-data value: for masks, whose 0 means "clear" even when the file declares it as no-data.
    """

    def __init__(self, src: rasterio.io.DatasetReader, grid: Grid, bands: Sequence[int], *,
                 resampling: str = "nearest", dtype: str = "float32", nodata: float | None = None,
                 what: str = "raster", use_source_nodata: bool = True) -> None:
        self.src, self.grid, self.bands, self.what = src, grid, tuple(bands), what
        bad = [b for b in self.bands if not 1 <= b <= src.count]
        if bad:
            raise DataError(src.name, f"{what} has {src.count} band(s); band(s) {bad} do not exist")
        if resampling not in Resampling.__members__:
            raise ValueError(f"unknown resampling {resampling!r}")
        self.nodata = (math.nan if np.dtype(dtype).kind == "f" else 0) if nodata is None else nodata
        src_nodata = src.nodata if use_source_nodata else None
        if src_nodata is None and use_source_nodata and src.dtypes[0].startswith("float"):
            src_nodata = math.nan  # NaN pixels are missing data, not values to interpolate
        try:
            # XSCALE/YSCALE = 1: GDAL otherwise widens interpolation kernels when downsampling by a ratio it
            # estimates per processing chunk, so a window's pixels would depend on how the grid is read
            # (upsampling, e.g. 10 m SAR onto a 3 m grid, is unaffected: kernels only ever widen)
            self.vrt = WarpedVRT(src, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                                 resampling=Resampling[resampling], tolerance=WARP_TOLERANCE, src_nodata=src_nodata,
                                 nodata=self.nodata, dtype=dtype, XSCALE=1, YSCALE=1)
        except GDAL_ERRORS as exc:
            raise DataError(src.name, f"cannot be warped onto the {grid.crs.to_string()} grid ({exc})") from None

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """(bands, h, w) values and the (h, w) mask of pixels valid in every band."""
        # the warped VRT's name is its XML: name the source file
        data = read_bands(self.vrt, self.bands, window=window, where=self.src.name)
        if np.isnan(self.nodata):
            valid = ~np.isnan(data).any(axis=0)
        else:
            valid = ~(data == self.nodata).any(axis=0)
        return data, valid

    def close(self) -> None:
        """Close the warper (the source stays open)."""
        self.vrt.close()


def sar_to_db(values: np.ndarray, units: SarUnits) -> np.ndarray:
    """SAR backscatter in dB from dB or linear power (non-positive power becomes -inf, clipped later)."""
    if units == "db":
        return values
    if units != "linear":
        raise ValueError(f"SAR units must be 'db' or 'linear', got {units!r}")
    with np.errstate(divide="ignore", invalid="ignore"):
        return 10.0 * np.log10(np.where(values > 0, values, 0.0))


class SarLayer:
    """Sentinel-1 VV/VH of any CRS, resolution and float dtype, warped onto a grid and scaled as in training.

    Opening it checks, on a subsample of the whole file, that the values are plausible in ``units``
    (:func:`m3rcr.data.sar_units.check_sar_units`), so wrong units fail before any tile is run. ``scale``
    maps (2, h, w) dB to the model's values (default: M3R-CR's :func:`~m3rcr.data.preprocess.normalize_sar`;
    a SEN12MS-CR convention's ``scale_s1`` for models trained on SEN12MS-CR).
    """

    def __init__(self, path: str | Path, grid: Grid, *, bands: str | Sequence[int] = (1, 2), units: SarUnits = "db",
                 resampling: str = "nearest", what: str = "SAR image",
                 scale: Callable[[np.ndarray], np.ndarray] = normalize_sar) -> None:
        if units not in ("db", "linear"):
            raise ValueError(f"SAR units must be 'db' or 'linear', got {units!r}")
        self.path, self.units, self.scale = Path(path), units, scale
        self.src = open_raster(path, what)
        try:
            require_float_sar(self.src, what, "--sar-units linear")
            #: share of the grid's bounding box inside the SAR's (pixels are counted while reading)
            self.covered_fraction = require_overlap(self.src, grid, what)
            self.bands = parse_bands(bands, self.src.count, path, names=SAR_BANDS, option="--sar-bands")
            self.value_stats = check_sar_raster(self.src, self.bands, units, advice=CLI_ADVICE, what=what,
                                                window=footprint_window(self.src, grid))
            self.layer = WarpedLayer(self.src, grid, self.bands, resampling=resampling, what=what)
        except BaseException:
            self.src.close()
            raise

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """SAR scaled by ``scale`` ((2, h, w) float32, [0, 1] for M3R-CR), and the mask of pixels inside its
        footprint."""
        raw, valid = self.layer.read(window)
        db = sar_to_db(raw, self.units)
        # zero or negative linear power (blackfill without a no-data tag) is missing data too
        valid &= np.isfinite(db).all(axis=0)
        # outside the footprint the value is irrelevant (the output is no-data there): clipped to the low end
        return self.scale(np.where(valid[None], db, -100.0)).astype(np.float32, copy=False), valid

    def close(self) -> None:
        """Release the files."""
        self.layer.close()
        self.src.close()

    def __enter__(self) -> SarLayer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fmt(bounds: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.2f}" for v in bounds) + ")"


class OpticalScene:
    """An optical raster read window by window, the bands ``names`` (blue, green, red, NIR by default) picked.

    Values are reflectance x ``scale`` minus ``offset`` in the file (reflectance = (value + offset) /
    scale, as for Sentinel-2's BOA_ADD_OFFSET); reflectance is clipped to [0, 1] as in training.
    A pixel is no-data where any picked band is no-data by GDAL's mask (no-data value, alpha band or
    internal mask) or NaN. Without a declared no-data value or mask every finite value is data,
    zeros included (GDAL's rule): no no-data value is guessed.

    ``bands`` are the 1-based bands of ``names`` in that order (default: a raster with exactly that many bands,
    in file order).
    """

    def __init__(self, path: str | Path, bands: str | Sequence[int] | None = None, *,
                 scale: float = OPTICAL_SCALE, offset: float = 0.0, what: str = "optical scene",
                 names: Sequence[str] = OPTICAL_BANDS) -> None:
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.path, self.scale, self.offset = Path(path), float(scale), float(offset)
        self.names = tuple(names)
        self.src = open_raster(path, what)
        try:
            self.bands = parse_bands(bands, self.src.count, path, names=self.names)
            self.grid = grid_of(self.src)
            self.dtype = picked_dtype(self.src, self.bands, what)
            declared = {self.src.nodatavals[b - 1] for b in self.bands}
            # one no-data value shared by the picked bands, else None (outputs then carry a validity mask);
            # NaN != NaN, so a set of NaNs has several members: compare them by their text
            by_text = {repr(v) for v in declared}
            self.nodata: float | None = next(iter(declared)) if len(by_text) == 1 else None
            # a wrong scale or band order would run every tile and write a black or garbled scene
            check_optical_raster(self.src, self.bands, self.scale, self.offset, what=what, where=self.path)
        except BaseException:
            self.src.close()
            raise

    @property
    def file_order(self) -> tuple[int, ...]:
        """Positions (in ``names`` order: 0..3 for blue, green, red, NIR) of the picked bands sorted as in the
        file."""
        return tuple(sorted(range(len(self.bands)), key=lambda i: self.bands[i]))

    def read_valid(self, window: Window, raw: np.ndarray | None = None) -> np.ndarray:
        """The (h, w) mask of pixels that are data in every picked band (GDAL's masks, and finite).

        ``raw``: the picked bands already read for ``window`` (any band order), to test them for NaN.
        """
        masks = read_bands(self.src, self.bands, window=window, masks=True, where=self.path)
        valid = (masks > 0).all(axis=0)
        if self.dtype.kind == "f":
            if raw is None:
                raw = read_bands(self.src, self.bands, window=window, where=self.path)
            valid &= np.isfinite(raw).all(axis=0)
        return valid

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Reflectance in [0, 1] (bands, h, w) float32 in ``names`` order, and the valid-pixel mask."""
        raw = read_bands(self.src, self.bands, window=window, where=self.path)
        valid = self.read_valid(window, raw)
        refl = (raw.astype(np.float64) + self.offset) / self.scale
        refl = np.where(valid[None], np.clip(np.nan_to_num(refl), 0.0, 1.0), 0.0)
        return refl.astype(np.float32), valid

    def read_raw(self, window: Window) -> np.ndarray:
        """The picked bands exactly as stored (file band order and dtype)."""
        return read_bands(self.src, [self.bands[i] for i in self.file_order], window=window, where=self.path)

    def _off_nodata(self, values: np.ndarray) -> np.ndarray:
        """Move values equal to :attr:`out_nodata` one step inwards (in place), so predicted pixels never take it."""
        nodata = self.out_nodata
        if nodata is None or np.isnan(nodata):
            return values
        if self.dtype.kind in "ui":
            values[values == nodata] = nodata + (1 if nodata < np.iinfo(self.dtype).max else -1)
        else:
            values[values == nodata] = np.nextafter(nodata, np.inf, dtype=self.dtype)
        return values

    @property
    def out_nodata(self) -> float | None:
        """No-data value of outputs: the input's, or None when it declares none (outputs then carry a mask)."""
        return float(self.nodata) if self.nodata is not None else None

    @property
    def fill_value(self) -> float:
        """What invalid output pixels hold: the no-data value, else 0 (NaN for float data) under the mask."""
        if self.out_nodata is not None:
            return self.out_nodata
        return math.nan if self.dtype.kind == "f" else 0.0

    def encode(self, reflectance: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Reflectance (bands, h, w) in ``names`` order -> file values in file band order and dtype.

        Invalid pixels get :attr:`fill_value`; valid pixels never take a declared no-data value.
        """
        values = reflectance.astype(np.float64)[list(self.file_order)] * self.scale - self.offset
        if self.dtype.kind in "ui":
            info = np.iinfo(self.dtype)
            values = np.clip(np.round(values), info.min, info.max)
        out = self._off_nodata(values).astype(self.dtype)
        out[:, ~valid] = self.fill_value
        return out

    def close(self) -> None:
        """Release the file."""
        self.src.close()

    def __enter__(self) -> OpticalScene:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_quicklook(path: str | Path, bands: Sequence[int], max_size: int = 1024, *,
                   mask_onto: str | Path | None = None) -> np.ndarray:
    """A decimated (len(bands), h, w) float64 array of a raster, no-data as NaN (read from overviews if any).

    With ``mask_onto`` the raster is a cloud mask on any grid: it is warped onto the grid of the raster
    ``mask_onto`` names and decimated as that raster's quicklook is, a quicklook pixel counting as
    cloudy (1.0) when any of its pixels is (0.0 clear; outside the mask raster is clear, as in
    :func:`m3rcr.inference.predict_scene`). Same inputs, same array: nothing is sampled at random.
    """
    if mask_onto is None:
        src = open_raster(path, "raster")
        with src:
            f = max(1, math.ceil(max(src.height, src.width) / max_size))
            shape = (len(bands), max(1, src.height // f), max(1, src.width // f))
            data = read_bands(src, bands, where=path, out_shape=shape, masked=True, resampling=Resampling.average)
        return data.astype(np.float64).filled(np.nan)
    with open_raster(mask_onto, "raster") as ref:
        grid = grid_of(ref)
    src = open_raster(path, "cloud mask")
    with src:
        f = max(1, math.ceil(max(grid.height, grid.width) / max_size))
        shape = (len(bands), max(1, grid.height // f), max(1, grid.width // f))
        # the quicklook's pixels cover the grid as the optical quicklook's do (out_shape over the whole extent)
        transform = grid.transform @ Affine.scale(grid.width / shape[2], grid.height / shape[1])
        try:
            # 0 means clear even where the file declares nodata=0; the maximum over each quicklook pixel's
            # footprint makes a pixel touched by cloud count as cloudy
            with WarpedVRT(src, crs=grid.crs, transform=transform, width=shape[2], height=shape[1],
                           resampling=Resampling.max, tolerance=WARP_TOLERANCE, src_nodata=None, nodata=0,
                           dtype="float32") as vrt:
                data = read_bands(vrt, bands, where=path)
        except GDAL_ERRORS as exc:
            raise DataError(path, f"cloud mask cannot be warped onto the grid of {mask_onto} ({exc})") from None
    return (np.nan_to_num(data.astype(np.float64), nan=0.0) != 0).astype(np.float64)


def bounded_block_cache() -> contextlib.AbstractContextManager:
    """GDAL's block cache capped at :data:`BLOCK_CACHE_BYTES`, unless the user chose GDAL_CACHEMAX."""
    if "GDAL_CACHEMAX" in os.environ or (rasterio.env.hasenv() and "GDAL_CACHEMAX" in rasterio.env.getenv()):
        return contextlib.nullcontext()
    try:
        current = int(rasterio.env.get_gdal_config("GDAL_CACHEMAX"))
    except (TypeError, ValueError):
        current = BLOCK_CACHE_BYTES
    return rasterio.Env(GDAL_CACHEMAX=min(current, BLOCK_CACHE_BYTES))
