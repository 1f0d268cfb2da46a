"""Reading M3R-CR files with errors that name the file and the problem, and the one GeoTIFF writer."""

from __future__ import annotations

import contextlib
import math
import warnings
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import CRSError, NodataShadowWarning, NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from m3rcr.errors import DataError
from m3rcr.utils.files import atomic_path

_NPY_MAGIC = b"\x93NUMPY"
#: What GDAL raises for a file it cannot read or a CRS it cannot use (an engineering CRS, say).
GDAL_ERRORS = (CRSError, RasterioError, CPLE_BaseError)


@dataclass
class Raster:
    """A raster's pixels (bands, H, W) with its georeference."""

    array: np.ndarray
    transform: Affine
    crs: CRS | None
    nodata: float | None
    path: Path

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width)."""
        return self.array.shape[-2], self.array.shape[-1]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in CRS units, for a north-up grid."""
        return grid_bounds(self.transform, self.shape)


def grid_bounds(transform: Affine, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of a grid of ``shape`` (height, width) under ``transform``."""
    h, w = shape
    xs, ys = zip(*(transform @ (c, r) for c, r in ((0, 0), (w, 0), (0, h), (w, h))))
    return min(xs), min(ys), max(xs), max(ys)


def gdal_message(exc: BaseException) -> str:
    """GDAL's own words for a failure: rasterio's "Read failed. See previous exception" keeps them in the cause."""
    message = str(exc)
    cause = exc.__cause__ or exc.__context__
    if cause is not None and "previous exception" in message:
        message = str(cause) or message
    return message


def describe_read(bands: int | Sequence[int] | None, window: Window | None) -> str:
    """``band(s) 1, 2 in rows 0-255, columns 256-511`` (1-based bands, 0-based inclusive pixel ranges)."""
    if bands is None:
        what = "every band"
    else:
        what = "band(s) " + ", ".join(str(int(b)) for b in np.atleast_1d(bands))
    if window is None:
        return what
    try:
        win = window if isinstance(window, Window) else Window.from_slices(*window)
        (r0, r1), (c0, c1) = win.toranges()
        return f"{what} in rows {int(r0)}-{int(r1) - 1}, columns {int(c0)}-{int(c1) - 1}"
    except (TypeError, ValueError):
        return f"{what} in window {window}"


def read_bands(src: Any, bands: int | Sequence[int] | None = None, *, window: Window | None = None,
               where: str | Path | None = None, masks: bool = False, **kwargs: Any) -> np.ndarray:
    """``src.read`` (or ``src.read_masks`` with ``masks=True``), but a corrupt or truncated file is a
    :class:`DataError` naming the file (``where``, default ``src.name``), the bands and the window.

    Every pixel read of the data and inference code goes through here: GDAL's own message names
    neither the file (when the reader is a warped VRT) nor what was being read.
    """
    reader = src.read_masks if masks else src.read
    if bands is not None and not isinstance(bands, int):
        bands = list(bands)
    try:
        with warnings.catch_warnings():
            # a file with both an alpha band and a no-data value: GDAL uses the alpha band, as we want
            warnings.simplefilter("ignore", NodataShadowWarning)
            return reader(bands, window=window, **kwargs)
    except GDAL_ERRORS as exc:
        what = ("the validity mask of " if masks else "") + describe_read(bands, window)
        raise DataError(where if where is not None else src.name,
                        f"cannot read {what}: {gdal_message(exc)} (truncated or corrupt file?)") from None


def sample_bands(src: Any, bands: Sequence[int], max_side: int = 512, where: str | Path | None = None,
                 window: Window | None = None) -> np.ndarray:
    """A (len(bands), h, w) float64 nearest-neighbour subsample of a raster (or of ``window``), at most
    ``max_side`` pixels a side, no-data (GDAL's mask) as NaN: its value distribution in bounded memory."""
    height, width = (int(window.height), int(window.width)) if window is not None else (src.height, src.width)
    f = max(1, math.ceil(max(height, width) / max_side))
    shape = (len(bands), max(1, height // f), max(1, width // f))
    data = read_bands(src, list(bands), window=window, out_shape=shape, masked=True,
                      resampling=Resampling.nearest, where=where)
    return np.ma.filled(data.astype(np.float64), np.nan)


def open_dataset(path: str | Path, what: str, unreadable: str = "cannot be read as a raster"
                 ) -> rasterio.io.DatasetReader:
    """Open a raster; a missing or unreadable file is a :class:`DataError` (``unreadable`` says how).

    A missing georeference is left to the caller, which reports it in its own words.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(path, f"is a folder; give the {what} file")
    if not path.is_file():
        raise DataError(path, f"missing {what} file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except GDAL_ERRORS as exc:
        raise DataError(path, f"{unreadable} ({exc})") from None


def read_geotiff(
    path: str | Path,
    *,
    what: str = "raster",
    bands: int | None = None,
    size: tuple[int, int] | None = None,
    georeferenced: bool = True,
) -> Raster:
    """Read every band of a GeoTIFF.

    Args:
        path: the file.
        what: what the file should hold ("cloudy optical", "SAR", ...), used in error messages.
        bands: required band count, or None for any.
        size: required (height, width), or None for any.
        georeferenced: require a CRS and a geotransform (a plain TIFF is not a GeoTIFF).
    """
    path = Path(path)
    src = open_dataset(path, what, unreadable="not a readable GeoTIFF")
    try:
        with src:
            if src.driver != "GTiff":
                raise DataError(path, f"not a GeoTIFF (GDAL reads it as {src.driver}); the {what} must be a GeoTIFF")
            if georeferenced and (src.crs is None or src.transform == Affine.identity()):
                raise DataError(path, f"has no georeference (CRS and geotransform); the {what} must be a GeoTIFF")
            if bands is not None and src.count != bands:
                raise DataError(path, f"{what} must have {bands} band(s), found {src.count}")
            if size is not None and (src.height, src.width) != tuple(size):
                raise DataError(path, f"{what} must be {size[0]}x{size[1]} pixels, found {src.height}x{src.width}")
            array = read_bands(src, where=path)
            return Raster(array, src.transform, src.crs, src.nodata, path)
    except RasterioError as exc:
        raise DataError(path, f"not a readable GeoTIFF ({exc})") from None


@dataclass(frozen=True)
class GeoTiffLayout:
    """How :func:`geotiff_writer` lays a GeoTIFF out on disk.

    The defaults give an uncompressed, striped, pixel-interleaved file like the official M3R-CR tiles.
    With ``cog=True`` the pixels go to a tiled uncompressed work file (cheap to write window by window,
    with an internal mask) that is copied, when the block ends, to a cloud-optimised GeoTIFF with
    overviews: compression and overviews are computed once, over the finished image.
    """

    interleave: Literal["pixel", "band"] = "pixel"  #: M3R-CR land cover is band-interleaved
    tiled: bool = False  #: internal tiles instead of strips (ignored with ``cog``: a COG is always tiled)
    blocksize: int | None = None  #: tile side in pixels; None: GDAL's default (256; 512 for a COG)
    compress: str | None = None  #: e.g. "deflate"; None: uncompressed
    predictor: int | None = None  #: 2 (horizontal differencing, integers) or 3 (floating point)
    bigtiff: Literal["YES", "NO", "IF_NEEDED", "IF_SAFER"] | None = None  #: None: GDAL's default
    cog: bool = False  #: write a cloud-optimised GeoTIFF with overviews (``OVERVIEWS=AUTO``)
    overview_resampling: str = "average"  #: how a COG's overviews are computed
    #: the ``AREA_OR_POINT`` tag: "Area" says the transform gives the outer corner of the first pixel;
    #: None writes no tag (GDAL then assumes Area too, but the file differs byte for byte)
    area_or_point: Literal["Area", "Point"] | None = "Area"

    def creation_options(self) -> dict[str, Any]:
        """rasterio creation options of the file written (the work file for a COG)."""
        opts: dict[str, Any] = {"interleave": self.interleave}
        if self.cog:
            return {**opts, "tiled": True, "blockxsize": 256, "blockysize": 256, "BIGTIFF": "IF_SAFER"}
        if self.tiled:
            opts["tiled"] = True
            if self.blocksize is not None:
                opts.update(blockxsize=self.blocksize, blockysize=self.blocksize)
        if self.compress is not None:
            opts["compress"] = self.compress
        if self.predictor is not None:
            opts["predictor"] = self.predictor
        if self.bigtiff is not None:
            opts["BIGTIFF"] = self.bigtiff
        return opts

    def cog_options(self) -> dict[str, Any]:
        """GDAL COG driver options of the final copy."""
        opts: dict[str, Any] = {"BLOCKSIZE": self.blocksize or 512, "OVERVIEWS": "AUTO",
                                "RESAMPLING": self.overview_resampling.upper(), "BIGTIFF": self.bigtiff or "IF_SAFER"}
        if self.compress is not None:
            opts["COMPRESS"] = self.compress.upper()
        if self.predictor is not None:
            opts["PREDICTOR"] = self.predictor
        return opts


@dataclass(frozen=True)
class RasterSpec:
    """What a GeoTIFF holds: band count, size, dtype, georeference and no-data value."""

    count: int
    height: int
    width: int
    dtype: str
    crs: str | CRS | None
    transform: Affine
    nodata: float | None = None

    @classmethod
    def of(cls, array: np.ndarray, crs: str | CRS | None, transform: Affine, nodata: float | None = None
           ) -> RasterSpec:
        """The spec of a (bands, H, W) array."""
        if array.ndim != 3:
            raise ValueError(f"expected a (bands, H, W) array, got shape {array.shape}")
        return cls(array.shape[0], array.shape[1], array.shape[2], array.dtype.name, crs, transform, nodata)


@contextlib.contextmanager
def geotiff_writer(
    path: str | Path,
    spec: RasterSpec,
    layout: GeoTiffLayout | None = None,
    *,
    tags: Mapping[str, str] | None = None,
    descriptions: Sequence[str | None] | None = None,
) -> Iterator[Any]:
    """Open a GeoTIFF for writing (window by window if need be); it appears under ``path`` only when the
    block succeeds, never half-written.

    Yields rasterio's dataset writer; ``tags`` (after ``layout.area_or_point``) and band ``descriptions`` are
    set when the block ends. The caller may set more (units, scales, masks) inside the block.
    """
    if layout is not None and not isinstance(layout, GeoTiffLayout):  # e.g. the interleave string of old calls
        raise TypeError(f"layout must be a GeoTiffLayout (interleave, tiling and compression are its fields), "
                        f"got {layout!r}")
    layout = layout or GeoTiffLayout()
    profile = dict(driver="GTiff", count=spec.count, height=spec.height, width=spec.width, dtype=spec.dtype,
                   crs=spec.crs, transform=spec.transform, nodata=spec.nodata, **layout.creation_options())
    all_tags = dict(tags or {})
    if layout.area_or_point is not None:
        all_tags = {"AREA_OR_POINT": layout.area_or_point, **all_tags}
    with atomic_path(path) as tmp:
        target = tmp.with_suffix(".work.tif") if layout.cog else tmp
        try:
            # a COG's work file keeps its mask inside: a .msk side-car would not follow it into the copy
            with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(target, "w", **profile) as dst:
                yield dst
                # set after the pixels: GDAL lays the file out in that order, and earlier files were written so
                if all_tags:
                    dst.update_tags(**all_tags)
                if descriptions:
                    dst.descriptions = tuple(descriptions)
            if layout.cog:
                rasterio.shutil.copy(target, tmp, driver="COG", **layout.cog_options())
        finally:
            if layout.cog:
                target.unlink(missing_ok=True)
                target.with_name(target.name + ".msk").unlink(missing_ok=True)


def write_geotiff(
    path: str | Path,
    array: np.ndarray,
    crs: str | CRS | None,
    transform: Affine,
    nodata: float | None = None,
    layout: GeoTiffLayout | None = None,
    *,
    tags: Mapping[str, str] | None = None,
    descriptions: Sequence[str | None] | None = None,
) -> None:
    """Write a (bands, H, W) array as a GeoTIFF, atomically (never half-written under ``path``).

    By default uncompressed and pixel-interleaved like the official M3R-CR files, with
    ``AREA_OR_POINT=Area`` (the transform gives the outer corner of the first pixel); ``layout`` chooses
    tiling, compression, or a cloud-optimised GeoTIFF with overviews (see :class:`GeoTiffLayout`).
    """
    spec = RasterSpec.of(array, crs, transform, nodata)
    with geotiff_writer(path, spec, layout, tags=tags, descriptions=descriptions) as dst:
        dst.write(array)


def read_cloudmask(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read a cloud mask ``.npy`` (True/1 = cloudy) as a bool array, without ever unpickling."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "missing cloud mask file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError as exc:
        raise DataError(path, f"cannot be read ({exc.strerror or exc})") from None
    if head != _NPY_MAGIC:
        if zipfile.is_zipfile(path):
            problem = "is an .npz archive; the cloud mask must be a single .npy array"
        elif head[:1] == b"\x80":
            problem = "is a Python pickle, not an .npy array; pickles are never loaded"
        else:
            problem = "not a NumPy .npy file"
        raise DataError(path, problem)
    try:
        mask = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc):
            raise DataError(path, "cloud mask holds Python objects and needs pickle to load; "
                                  "save it as a bool or 0/1 array") from None
        raise DataError(path, f"cannot be read as an .npy array ({exc})") from None
    except (OSError, EOFError) as exc:
        raise DataError(path, f"truncated or corrupt .npy file ({exc})") from None
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.ndim != 2:
        raise DataError(path, f"cloud mask must be a 2-D array, found shape {mask.shape}")
    if size is not None and mask.shape != tuple(size):
        raise DataError(path, f"cloud mask must be {size[0]}x{size[1]} pixels, found {mask.shape[0]}x{mask.shape[1]}")
    if mask.dtype == bool:
        return mask
    if mask.dtype.kind not in "biuf":
        raise DataError(path, f"cloud mask must be boolean or 0/1, found dtype {mask.dtype}")
    bad = ~((mask == 0) | (mask == 1))
    if bad.any():
        values = np.unique(mask[bad])[:5]
        raise DataError(path, f"cloud mask must be boolean or 0/1, found {int(bad.sum())} pixel(s) with other "
                              f"values, e.g. {', '.join(str(v) for v in values)}")
    return mask.astype(bool)
