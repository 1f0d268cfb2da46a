"""Reading one scene set tile by tile: every raster opened, checked and warped onto the tiling's grids."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from m3rcr.data.build.manifest import UDM2_CLASSES, SceneSet
from m3rcr.data.build.options import BuildOptions
from m3rcr.data.build.tiling import scene_tiling
from m3rcr.data.io import read_bands
from m3rcr.data.optical_values import OpticalAdvice, check_optical_raster
from m3rcr.data.preprocess import OPTICAL_SCALE, WORLDCOVER, WORLDCOVER_NODATA
from m3rcr.data.resample import upsample_nearest
from m3rcr.data.sar_units import check_sar_raster
from m3rcr.data.scene import (
    Grid,
    WarpedLayer,
    footprint_window,
    grid_of,
    open_raster,
    parse_bands,
    picked_dtype,
    require_float_sar,
    require_overlap,
    sar_to_db,
)
from m3rcr.errors import DataError

#: The UDM2 band that repeats the legacy UDM bits (bit 0: no-data / blackfill).
UDM2_LEGACY_BAND = 8
#: Legacy UDM bits.
UDM_NODATA_BIT = 0
UDM_CLOUD_BIT = 1
#: Reasons a tile is skipped, with what they mean; a tile counts under the first one found (pixels are read
#: cheapest first: cloudy scene, cloud mask, cloud-free scene, SAR and land cover).
SKIP_REASONS: dict[str, str] = {
    "low_valid": "valid fraction below --min-valid",
    "low_cloud": "cloud cover below --min-cloud",
    "high_cloud": "cloud cover above --max-cloud",
}

_WORLDCOVER_CODES = np.array(sorted({WORLDCOVER_NODATA, *WORLDCOVER}), dtype=np.uint8)
_OPTICAL_FIX = ("build-dataset copies optical values as stored and reads them as surface reflectance x 10000 "
                "(PlanetScope's convention, no offset): convert the scene to that first, e.g. with gdal_calc.py "
                "--type=UInt16 --calc='A*10000' for reflectance in [0, 1], or --calc='(A*a+b)*10000' for a product "
                "documented as 'reflectance = DN x a + b'")
_OPTICAL_ADVICE = OpticalAdvice(flags="--bands (bands: in a scene manifest)", fix=_OPTICAL_FIX)
_CLOUDFREE_ADVICE = OpticalAdvice(flags="--cloudfree-bands (cloudfree_bands: in a scene manifest)", fix=_OPTICAL_FIX)
#: How to declare the other SAR units, on the command line or in a manifest.
_SAR_UNITS_ADVICE = {
    "linear": "if it holds linear power, pass --sar-units linear (sar_units: linear in a scene manifest)",
    "db": "if it holds dB, pass --sar-units db (sar_units: db in a scene manifest; the default)",
}


@dataclass
class TileArrays:
    """One dataset tile's arrays, ready to write."""

    cloudy: np.ndarray  #: (4, H, W) input dtype, blue, green, red, NIR
    cloudfree: np.ndarray  #: (4, H, W)
    sar: np.ndarray  #: (2, n, n) float32 dB, NaN where uncovered
    landcover: np.ndarray  #: (1, n, n) uint8 WorldCover codes, 0 = no data
    cloudmask: np.ndarray  #: (H, W) bool
    valid_fraction: float
    cloud_cover: float


class SceneReader:
    """The rasters of a :class:`SceneSet`, opened and checked, read tile by tile.

    Construction checks everything that can be checked without reading pixels (files, CRS, bands,
    overlap, tile size) and raises a :class:`DataError` naming the file and the scene set.
    """

    def __init__(self, scene: SceneSet, options: BuildOptions) -> None:
        self.scene, self.options = scene, options
        self._stack = contextlib.ExitStack()
        try:
            self._open()
        except DataError as exc:
            self.close()
            if scene.source and scene.source not in exc.problem:
                raise DataError(exc.where, f"{exc.problem} ({scene.source})") from None
            raise
        except BaseException:
            self.close()
            raise

    def _open_raster(self, path: Path, what: str):
        src = open_raster(path, what)
        self._stack.callback(src.close)
        return src

    def _warp(self, src, grid: Grid, bands: Sequence[int], what: str, **kwargs: Any) -> WarpedLayer:
        layer = WarpedLayer(src, grid, bands, what=what, **kwargs)
        self._stack.callback(layer.close)
        return layer

    def _require_overlap(self, src, grid: Grid, what: str) -> None:
        require_overlap(src, grid, what, f"the optical scene {self.scene.cloudy}")

    def _open(self) -> None:
        s = self.scene
        # the cloudy scene defines the optical grid and is read directly (no resampling at all)
        self.cloudy = self._open_raster(s.cloudy, "cloudy optical scene")
        self.bands = parse_bands(s.bands, self.cloudy.count, s.cloudy)
        self.dtype = picked_dtype(self.cloudy, self.bands, "cloudy optical scene")
        # tiles are copied as stored and read as reflectance x 10000: another scaling trains on garbage
        check_optical_raster(self.cloudy, self.bands, OPTICAL_SCALE, 0.0, what="cloudy optical scene",
                             where=s.cloudy, advice=_OPTICAL_ADVICE)
        file_nodata = self.cloudy.nodatavals[self.bands[0] - 1]
        # written tiles keep the input's no-data value; without one, 0 (PlanetScope's blackfill)
        self.nodata = float(file_nodata) if file_nodata is not None else 0.0
        self.grid = grid_of(self.cloudy)
        self.tiles = scene_tiling(self.grid, self.options, s.cloudy)

        # cloud-free: nearest onto the cloudy grid, so an aligned scene is copied pixel for pixel
        cf = self._open_raster(s.cloudfree, "cloud-free optical scene")
        cf_bands = parse_bands(s.cloudfree_bands or s.bands, cf.count, s.cloudfree)
        cf_dtype = picked_dtype(cf, cf_bands, "cloud-free optical scene")
        check_optical_raster(cf, cf_bands, OPTICAL_SCALE, 0.0, what="cloud-free optical scene", where=s.cloudfree,
                             advice=_CLOUDFREE_ADVICE)
        self._require_overlap(cf, self.grid, "cloud-free optical scene")
        cf_nodata = cf.nodatavals[cf_bands[0] - 1]
        self.cf_nodata = float(cf_nodata) if cf_nodata is not None else 0.0
        self.cloudfree = self._warp(cf, self.grid, cf_bands, "cloud-free optical scene", resampling="nearest",
                                    dtype=cf_dtype.name, nodata=self.cf_nodata)

        sar = self._open_raster(s.sar, "SAR image")
        require_float_sar(sar, "SAR image", "sar_units: linear")
        self._require_overlap(sar, self.tiles.lowres, "SAR image")
        # linear power is resampled as power and converted to dB afterwards (averaging dB would bias it)
        self.sar = self._warp(sar, self.tiles.lowres, s.sar_bands, "SAR image",
                              resampling=self.options.sar_resampling, dtype="float32")
        # wrong units would be written into every S1 tile (linear read as dB clips to a constant 0 dB)
        check_sar_raster(sar, s.sar_bands, s.sar_units, advice=_SAR_UNITS_ADVICE, what="SAR image",
                         window=footprint_window(sar, self.tiles.lowres))

        lc = self._open_raster(s.landcover, "land-cover map")
        if np.dtype(lc.dtypes[0]).kind not in "ui":
            raise DataError(s.landcover, f"land-cover map has dtype {lc.dtypes[0]}; expected WorldCover "
                                         "codes (uint8)")
        self._require_overlap(lc, self.tiles.lowres, "land-cover map")
        self.landcover = self._warp(lc, self.tiles.lowres, [1], "land-cover map", resampling="nearest",
                                    dtype="uint8", nodata=WORLDCOVER_NODATA)

        # masks are read as float64 with NaN outside the raster, so "not covered" differs from every value;
        # a declared no-data value is ignored: masks copied from an optical profile often say nodata=0
        if s.cloudmask is not None:
            m = self._open_raster(s.cloudmask, "cloud mask")
            self._require_overlap(m, self.grid, "cloud mask")
            self.udm_format = None
            self.mask = self._warp(m, self.grid, [s.cloudmask_band], "cloud mask", resampling="nearest",
                                   dtype="float64", nodata=math.nan, use_source_nodata=False)
        else:
            m = self._open_raster(s.udm, "UDM")  # type: ignore[arg-type]
            detected = {1: "udm", 8: "udm2"}.get(m.count)
            fmt = s.udm_format or detected
            if fmt is None:
                raise DataError(s.udm, f"has {m.count} bands: neither a legacy UDM (1 band) nor a UDM2 (8 "
                                       "bands); give udm_format")
            if fmt == "udm2" and m.count < UDM2_LEGACY_BAND:
                raise DataError(s.udm, f"a UDM2 has {UDM2_LEGACY_BAND} bands, this one {m.count}")
            if fmt == "udm" and tuple(s.cloud_classes) != ("cloud",):
                raise DataError(s.udm, "a legacy UDM only flags clouds; cloud_classes needs a UDM2")
            if np.dtype(m.dtypes[0]).kind not in "ui":
                raise DataError(s.udm, f"UDM has dtype {m.dtypes[0]}; expected integer bit flags")
            self._require_overlap(m, self.grid, "UDM")
            self.udm_format = fmt
            bands = [1] if fmt == "udm" else [UDM2_CLASSES[c] for c in s.cloud_classes] + [UDM2_LEGACY_BAND]
            self.mask = self._warp(m, self.grid, bands, "UDM", resampling="nearest", dtype="float64",
                                   nodata=math.nan, use_source_nodata=False)

    def __enter__(self) -> SceneReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every file (warpers first)."""
        self._stack.close()

    # ------------------------------------------------------------------ per tile
    def _read_cloudmask(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """(cloudy, valid) masks on the optical window; valid is False outside the mask and at UDM no-data."""
        data, covered = self.mask.read(window)
        if self.udm_format is None:
            with np.errstate(invalid="ignore"):
                return covered & (data[0] != 0), covered  # any non-zero value, e.g. a probability of 0.3
        values = np.where(covered[None], data, 0).astype(np.int64)
        if self.udm_format == "udm":
            bits = values[0]
            cloudy = (bits >> UDM_CLOUD_BIT) & 1 == 1
        else:
            bits = values[-1]  # the legacy bits repeated in band 8
            cloudy = (values[:-1] != 0).any(axis=0)
        valid = covered & ((bits >> UDM_NODATA_BIT) & 1 == 0)
        return cloudy & covered, valid

    def read_tile(self, row: int, col: int) -> TileArrays | str:
        """The tile at (row, col), or the key of :data:`SKIP_REASONS` it fails (checked cheapest first)."""
        opts = self.options
        win = self.tiles.optical_window(row, col)
        size = self.tiles.tile ** 2
        need = math.ceil(opts.min_valid * size - 1e-9)  # in pixels: 0.9 keeps a tile exactly 90 % valid

        cloudy = read_bands(self.cloudy, self.bands, window=win, where=self.scene.cloudy)
        own_valid = (read_bands(self.cloudy, self.bands, window=win, where=self.scene.cloudy, masks=True) > 0
                     ).all(axis=0)
        if not math.isnan(self.nodata):
            own_valid &= ~(cloudy == self.nodata).any(axis=0)
        if cloudy.dtype.kind == "f":
            own_valid &= np.isfinite(cloudy).all(axis=0)
        valid = own_valid.copy()
        if np.count_nonzero(valid) < need:
            return "low_valid"  # the valid fraction only shrinks from here: skip the other reads

        cloudmask, mask_valid = self._read_cloudmask(win)
        valid &= mask_valid
        if np.count_nonzero(valid) < need:
            return "low_valid"
        cover = float(np.count_nonzero(cloudmask)) / size
        if cover < opts.min_cloud:
            return "low_cloud"
        if cover > opts.max_cloud:
            return "high_cloud"

        cloudfree, cf_valid = self.cloudfree.read(win)
        valid &= cf_valid
        if np.count_nonzero(valid) < need:
            return "low_valid"

        lwin = self.tiles.lowres_window(row, col)
        sar_raw, _ = self.sar.read(lwin)
        with np.errstate(invalid="ignore"):
            sar = sar_to_db(sar_raw, self.scene.sar_units).astype(np.float32)
        # non-positive linear power (GRD blackfill is 0) and every non-finite value are no data
        sar[~np.isfinite(sar)] = np.nan
        landcover, lc_valid = self.landcover.read(lwin)
        unknown = ~np.isin(landcover, _WORLDCOVER_CODES)
        if unknown.any():
            values = ", ".join(str(v) for v in np.unique(landcover[unknown])[:8])
            raise DataError(self.scene.landcover, "land-cover map has values that are not WorldCover codes: "
                                                  f"{values}")
        low_valid = lc_valid & np.isfinite(sar).all(axis=0)
        # the low-res tile covers the optical tile exactly, so the low-res pixel under an optical pixel's
        # centre is a plain nearest resize
        valid &= upsample_nearest(low_valid, (self.tiles.tile, self.tiles.tile))
        n_valid = np.count_nonzero(valid)
        if n_valid < need:
            return "low_valid"

        if not own_valid.all():  # e.g. an alpha band: make the no-data visible in the tile itself
            cloudy[:, ~own_valid] = self.nodata if not math.isnan(self.nodata) else np.nan
        return TileArrays(cloudy=cloudy, cloudfree=cloudfree, sar=sar, landcover=landcover, cloudmask=cloudmask,
                    valid_fraction=n_valid / size, cloud_cover=cover)
