"""Cutting an M3R-CR-style dataset out of whole scenes (``m3rcr build-dataset``).

A *scene set* is what a user brings for one area: a cloudy and a cloud-free optical scene (UTM or
any projected CRS, any band count, no-data outside the footprint), Sentinel-1 VV/VH (any CRS and
resolution, dB or linear power), an ESA WorldCover map and a cloud mask (a raster, or Planet's UDM /
UDM2). :func:`build_dataset` cuts each set into tiles and writes them in the official layout
(:mod:`m3rcr.data.layout`) with ``train.csv``, ``test.csv`` and ``build.json``.

Grids. The optical grid is the cloudy scene's; an optical tile is ``tile`` x ``tile`` of its pixels.
The low-resolution grid (SAR, land cover) is one scene-wide grid anchored at the optical origin whose
pixel is ``tile * res / n`` with ``n = round(tile * res / lowres)``, so an ``n`` x ``n`` low-res tile
covers exactly the ground of its optical tile (3 m optical, 300 px tiles: n = 90 pixels of exactly
10 m). Tile origins must fall on low-res pixel boundaries: the stride is a multiple of
``tile / gcd(tile, n)`` optical pixels (10 for 3 m / 10 m). Everything else is warped onto these
grids window by window with :class:`~m3rcr.data.scene.WarpedLayer`, so no scene is ever read whole.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from affine import Affine
from rasterio.windows import Window

from m3rcr.data.io import grid_bounds, read_bands, write_geotiff
from m3rcr.data.layout import relative_paths, write_csv
from m3rcr.data.optical_values import check_optical_raster
from m3rcr.data.preprocess import OPTICAL_BANDS, OPTICAL_SCALE, SAR_BANDS, WORLDCOVER, WORLDCOVER_NODATA
from m3rcr.data.resample import upsample_nearest
from m3rcr.data.sar_units import check_sar_raster
from m3rcr.data.scene import (
    Grid,
    WarpedLayer,
    bounded_block_cache,
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
from m3rcr.utils.files import atomic_dir, atomic_path, check_output

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")
#: UDM2 class bands (1-based) that ``cloud_classes`` may name; band 1 is "clear", band 7 the confidence.
UDM2_CLASSES: dict[str, int] = {"snow": 2, "shadow": 3, "light_haze": 4, "heavy_haze": 5, "cloud": 6}
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

_SEASON_RE = re.compile(r"^[A-Za-z0-9]+$")  # the official file-name pattern (layout._NAME_RE)
_AOI_RE = re.compile(r"^[A-Za-z0-9-]+$")
_REQUIRED_KEYS = ("season", "aoi", "cloudy", "cloudfree", "sar", "landcover")
_OPTIONAL_KEYS = ("cloudmask", "cloudmask_band", "udm", "udm_format", "cloud_classes", "bands",
                  "cloudfree_bands", "sar_bands", "sar_units", "split")
_WORLDCOVER_CODES = np.array(sorted({WORLDCOVER_NODATA, *WORLDCOVER}), dtype=np.uint8)
#: How to declare the other SAR units, on the command line or in a manifest.
_OPTICAL_FLAGS = "--bands (bands: in a scene manifest)"
_OPTICAL_FIX = ("build-dataset copies optical values as stored and reads them as surface reflectance x 10000 "
                "(PlanetScope's convention, no offset): convert the scene to that first, e.g. with gdal_calc.py "
                "--type=UInt16 --calc='A*10000' for reflectance in [0, 1], or --calc='(A*a+b)*10000' for a product "
                "documented as 'reflectance = DN x a + b'")
_SAR_UNITS_ADVICE = {
    "linear": "if it holds linear power, pass --sar-units linear (sar_units: linear in a scene manifest)",
    "db": "if it holds dB, pass --sar-units db (sar_units: db in a scene manifest; the default)",
}


# --------------------------------------------------------------------------- scene sets
@dataclass(frozen=True)
class SceneSet:
    """The rasters of one area and how to read them; paths may be relative to the working folder.

    Exactly one of ``cloudmask`` (a raster, non-zero = cloudy) and ``udm`` (Planet UDM or UDM2) is given.
    """

    season: str
    aoi: str
    cloudy: Path
    cloudfree: Path
    sar: Path
    landcover: Path
    cloudmask: Path | None = None
    cloudmask_band: int = 1
    udm: Path | None = None
    udm_format: Literal["udm", "udm2"] | None = None  #: None: from the band count (1: udm, 8: udm2)
    cloud_classes: tuple[str, ...] = ("cloud",)  #: UDM2 classes counted as cloudy
    bands: tuple[int, ...] | None = None  #: 1-based blue, green, red, NIR; None: 1..4 of a 4-band scene
    cloudfree_bands: tuple[int, ...] | None = None  #: the same for the cloud-free scene; None: ``bands``
    sar_bands: tuple[int, int] = (1, 2)  #: VV, VH
    sar_units: Literal["db", "linear"] = "db"
    split: Split | None = None  #: None: assigned by AOI (see :func:`assign_splits`)
    source: str = ""  #: where the set was described ("scenes.yaml entry 2"), for error messages

    def __post_init__(self) -> None:
        where = self.source or "scene set"
        for name, value, pattern in (("season", self.season, _SEASON_RE), ("aoi", self.aoi, _AOI_RE)):
            if not isinstance(value, str) or not pattern.match(value):
                allowed = "letters and digits" + (" and '-'" if name == "aoi" else "")
                raise DataError(where, f"{name} {value!r} must be {allowed} (it becomes part of file names)")
        if (self.cloudmask is None) == (self.udm is None):
            raise DataError(where, "give exactly one of cloudmask (a raster, non-zero = cloudy) and udm "
                                   "(Planet UDM or UDM2)")
        if self.udm is None and (self.udm_format is not None or tuple(self.cloud_classes) != ("cloud",)):
            raise DataError(where, "udm_format and cloud_classes apply to a udm only")
        if self.cloudmask is None and self.cloudmask_band != 1:
            raise DataError(where, "cloudmask_band applies to a cloudmask raster only")
        if self.udm_format not in (None, "udm", "udm2"):
            raise DataError(where, f"udm_format must be udm or udm2, got {self.udm_format!r}")
        bad = [c for c in self.cloud_classes if c not in UDM2_CLASSES]
        if bad or not self.cloud_classes:
            raise DataError(where, f"cloud_classes must name some of {', '.join(UDM2_CLASSES)}; got "
                                   f"{list(self.cloud_classes)}")
        if self.sar_units not in ("db", "linear"):
            raise DataError(where, f"sar_units must be db or linear, got {self.sar_units!r}")
        if self.split not in (None, *SPLITS):
            raise DataError(where, f"split must be train or test, got {self.split!r}")
        if len(self.sar_bands) != 2 or len(set(self.sar_bands)) != 2:
            raise DataError(where, "sar_bands must be two different band numbers (VV, VH), got "
                                   f"{list(self.sar_bands)}")
        for name, value in (("bands", self.bands), ("cloudfree_bands", self.cloudfree_bands)):
            if value is not None and len(value) != len(OPTICAL_BANDS):
                raise DataError(where, f"{name} needs {len(OPTICAL_BANDS)} band numbers "
                                       f"({', '.join(OPTICAL_BANDS)}), got {len(value)}")

    @property
    def key(self) -> str:
        """``<season>_<aoi>``: the folder suffix of this set's tiles; sets sharing it continue numbering."""
        return f"{self.season}_{self.aoi}"

    @property
    def mask_path(self) -> Path:
        """The cloud mask raster or the UDM."""
        return self.cloudmask if self.cloudmask is not None else self.udm  # type: ignore[return-value]

    def paths(self) -> dict[str, Path]:
        """Every input raster by role."""
        out = {"cloudy": self.cloudy, "cloudfree": self.cloudfree, "sar": self.sar,
               "landcover": self.landcover}
        out["cloudmask" if self.cloudmask is not None else "udm"] = self.mask_path
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready description (for ``build.json``)."""
        out: dict[str, Any] = {"season": self.season, "aoi": self.aoi, "source": self.source}
        out.update({k: str(v.absolute()) for k, v in self.paths().items()})
        if self.cloudmask is not None:
            out["cloudmask_band"] = self.cloudmask_band
        else:
            out.update(udm_format=self.udm_format, cloud_classes=list(self.cloud_classes))
        out.update(bands=list(self.bands) if self.bands else None,
                   cloudfree_bands=list(self.cloudfree_bands) if self.cloudfree_bands else None,
                   sar_bands=list(self.sar_bands), sar_units=self.sar_units, split=self.split)
        return out


def _int_list(value: Any, where: str, key: str) -> tuple[int, ...]:
    """Band numbers from ``"2,3,4,8"``, ``[2, 3, 4, 8]`` or a single number."""
    items = value.replace(" ", "").split(",") if isinstance(value, str) else value
    if isinstance(items, int) and not isinstance(items, bool):
        items = [items]
    if not isinstance(items, (list, tuple)):
        raise DataError(where, f"{key}: expected band numbers such as [2, 3, 4, 8], got {value!r}")
    out = []
    for item in items:
        try:
            if isinstance(item, bool) or (isinstance(item, float) and not item.is_integer()):
                raise ValueError
            number = int(item)
        except (TypeError, ValueError):
            raise DataError(where, f"{key}: {item!r} is not a band number") from None
        if number < 1:
            raise DataError(where, f"{key}: band numbers start at 1, got {number}")
        out.append(number)
    return tuple(out)


def scene_set_from_mapping(entry: Any, base: str | Path, where: str) -> SceneSet:
    """A :class:`SceneSet` from one manifest entry (or the command-line flags), paths relative to ``base``.

    Raises a :class:`DataError` naming ``where`` for unknown or missing keys and bad values.
    """
    if not isinstance(entry, Mapping):
        raise DataError(where, f"must be a mapping of keys ({', '.join(_REQUIRED_KEYS)}, ...), "
                               f"got {type(entry).__name__}")
    unknown = sorted(str(k) for k in entry if k not in _REQUIRED_KEYS + _OPTIONAL_KEYS)
    if unknown:
        raise DataError(where, f"unknown key(s) {', '.join(unknown)}; allowed: "
                               f"{', '.join(_REQUIRED_KEYS + _OPTIONAL_KEYS)}")
    missing = [k for k in _REQUIRED_KEYS if entry.get(k) in (None, "")]
    if missing:
        raise DataError(where, f"missing key(s) {', '.join(missing)}")
    base = Path(base)

    def path(key: str) -> Path | None:
        value = entry.get(key)
        if value is None:
            return None
        if not isinstance(value, (str, Path)) or not str(value):
            raise DataError(where, f"{key} must be a file path, got {value!r}")
        return base / Path(value).expanduser()

    def name(key: str) -> str:
        value = entry[key]
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise DataError(where, f"{key} must be letters and digits, got {value!r}")
        return str(value)

    classes = entry.get("cloud_classes", ("cloud",))
    classes = (classes,) if isinstance(classes, str) else classes
    if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes):
        raise DataError(where, f"cloud_classes must be a list of names, got {classes!r}")
    band = entry.get("cloudmask_band", 1)
    if isinstance(band, bool) or not isinstance(band, int) or band < 1:
        raise DataError(where, f"cloudmask_band must be a band number (1, 2, ...), got {band!r}")
    sar_bands = _int_list(entry.get("sar_bands", (1, 2)), where, "sar_bands")
    return SceneSet(
        season=name("season"), aoi=name("aoi"),
        cloudy=path("cloudy"), cloudfree=path("cloudfree"),  # type: ignore[arg-type]
        sar=path("sar"), landcover=path("landcover"),  # type: ignore[arg-type]
        cloudmask=path("cloudmask"), cloudmask_band=band, udm=path("udm"), udm_format=entry.get("udm_format"),
        cloud_classes=tuple(classes),
        bands=_int_list(entry["bands"], where, "bands") if entry.get("bands") is not None else None,
        cloudfree_bands=(_int_list(entry["cloudfree_bands"], where, "cloudfree_bands")
                         if entry.get("cloudfree_bands") is not None else None),
        sar_bands=sar_bands,  # type: ignore[arg-type]
        sar_units=str(entry.get("sar_units", "db")).lower(),  # type: ignore[arg-type]
        split=entry.get("split"), source=where,
    )


def load_manifest(path: str | Path) -> list[SceneSet]:
    """Read a YAML scene manifest: ``scenes:`` followed by a list of scene sets (or just the list).

    Paths in it are relative to the manifest's folder.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "scene manifest not found")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot be read ({exc})") from None
    except yaml.YAMLError as exc:
        raise DataError(path, f"not valid YAML ({exc})".replace("\n", " ")) from None
    if isinstance(doc, Mapping):
        extra = sorted(str(k) for k in doc if k != "scenes")
        if extra:
            raise DataError(path, f"unknown top-level key(s) {', '.join(extra)}; expected only 'scenes'")
        doc = doc.get("scenes")
    if not isinstance(doc, list) or not doc:
        raise DataError(path, "expected a list of scene sets under 'scenes:' (season, aoi, cloudy, "
                              "cloudfree, sar, landcover, cloudmask or udm)")
    return [scene_set_from_mapping(e, path.parent, f"{path} entry {i}") for i, e in enumerate(doc, start=1)]


def assign_splits(scenes: Sequence[SceneSet], test_fraction: float = 0.2, seed: int = 0) -> dict[str, Split]:
    """The split of every AOI name, so that no AOI is in both splits.

    An AOI is identified by its ``aoi`` name alone, whatever the season: the same place seen in two
    seasons must not be trained on and tested on. AOIs with an explicit ``split`` keep it; the others
    are shuffled with ``seed`` and ``round(test_fraction * k)`` of them go to test, clamped so that,
    with two or more of them and a positive fraction, each split gets at least one.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test fraction must be in [0, 1), got {test_fraction} (put scene sets in test with "
                         "'split: test' instead)")
    fixed: dict[str, tuple[Split, str]] = {}
    for s in scenes:
        if s.split is None:
            continue
        if s.aoi in fixed and fixed[s.aoi][0] != s.split:
            other_split, other = fixed[s.aoi]
            where = s.source or s.cloudy
            raise DataError(where, f"AOI {s.aoi!r} is put in {s.split} here but in {other_split} by "
                                   f"{other or 'another scene set'}; an AOI must stay in one split")
        fixed[s.aoi] = (s.split, s.source)
    out: dict[str, Split] = {aoi: split for aoi, (split, _) in fixed.items()}
    free = sorted({s.aoi for s in scenes} - set(fixed))
    k = len(free)
    n_test = round(test_fraction * k)
    if k >= 2 and test_fraction > 0:
        n_test = min(max(n_test, 1), k - 1)
    order = np.random.default_rng([seed, 0x5EED]).permutation(k)
    for rank, i in enumerate(order):
        out[free[i]] = "test" if rank < n_test else "train"
    return out


# --------------------------------------------------------------------------- options and grids
@dataclass(frozen=True)
class BuildOptions:
    """Tiling, filters and split settings of :func:`build_dataset`."""

    tile: int = 300  #: optical tile size in pixels
    stride: int | None = None  #: optical pixels between tile origins; None: ``tile`` (no overlap)
    lowres: float = 10.0  #: target low-res pixel size in metres (the actual one is tile * res / n)
    sar_resampling: Literal["nearest", "bilinear"] = "bilinear"
    min_valid: float = 1.0  #: keep tiles whose valid fraction is at least this
    min_cloud: float = 0.0  #: keep tiles whose cloud cover is in [min_cloud, max_cloud]
    max_cloud: float = 1.0
    test_fraction: float = 0.2  #: fraction of the AOIs without an explicit split that go to test
    seed: int = 0  #: seed of the AOI split

    def __post_init__(self) -> None:
        if self.tile < 1:
            raise ValueError(f"tile must be positive, got {self.tile}")
        if self.stride is not None and self.stride < 1:
            raise ValueError(f"stride must be positive, got {self.stride}")
        if not self.lowres > 0:
            raise ValueError(f"lowres must be positive, got {self.lowres}")
        if self.sar_resampling not in ("nearest", "bilinear"):
            raise ValueError(f"SAR resampling must be nearest or bilinear, got {self.sar_resampling!r}")
        for name in ("min_valid", "min_cloud", "max_cloud"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.min_cloud > self.max_cloud:
            raise ValueError(f"min_cloud {self.min_cloud} is above max_cloud {self.max_cloud}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test fraction must be in [0, 1), got {self.test_fraction}")


def lowres_pixels(tile: int, res: float, lowres: float) -> int:
    """Low-res pixels per tile side: ``round(tile * res / lowres)`` (90 for 300 px at 3 m and 10 m)."""
    n = round(tile * res / lowres)
    if n < 1:
        raise ValueError(f"a {tile} px tile at {res:g} m is smaller than one {lowres:g} m low-res pixel")
    return n


def stride_step(tile: int, n: int) -> int:
    """The smallest stride (optical pixels) keeping tile origins on low-res pixel boundaries.

    tile / gcd(tile, n): the origin ``k * stride`` maps to low-res pixel ``k * stride * n / tile``.
    """
    return tile // math.gcd(tile, n)


@dataclass(frozen=True)
class TileGrid:
    """The optical grid of a scene, its scene-wide low-res grid, and the tile origins."""

    optical: Grid
    lowres: Grid
    tile: int
    n: int  #: low-res pixels per tile side
    stride: int

    @property
    def factor(self) -> float:
        """Optical pixels per low-res pixel (tile / n)."""
        return self.tile / self.n

    def origins(self) -> list[tuple[int, int]]:
        """(row, col) of every tile lying fully inside the optical grid, row by row."""
        rows = range(0, self.optical.height - self.tile + 1, self.stride)
        cols = range(0, self.optical.width - self.tile + 1, self.stride)
        return [(r, c) for r in rows for c in cols]

    def optical_window(self, row: int, col: int) -> Window:
        """The optical window of the tile at (row, col)."""
        return Window(col, row, self.tile, self.tile)

    def lowres_window(self, row: int, col: int) -> Window:
        """The low-res window covering the same ground (the origin is a low-res pixel boundary)."""
        return Window(col * self.n // self.tile, row * self.n // self.tile, self.n, self.n)

    def transforms(self, row: int, col: int) -> tuple[Affine, Affine]:
        """Optical and low-res transforms of a tile; both start at the same corner."""
        t = self.optical.transform @ Affine.translation(col, row)
        return t, t @ Affine.scale(self.factor)


def tile_grid(optical: Grid, options: BuildOptions, where: str | Path = "optical scene") -> TileGrid:
    """The tiling of an optical grid under ``options``; a :class:`DataError` if it cannot be tiled."""
    if optical.crs.is_geographic:
        raise DataError(where, f"optical scene is in the geographic CRS {optical.crs.to_string()}; it must "
                               "be in a projected CRS in metres (e.g. UTM)")
    rx, ry = optical.res
    if abs(rx - ry) > 1e-6 * max(rx, ry):
        raise DataError(where, f"optical pixels must be square, found {rx:g} x {ry:g}")
    tile = options.tile
    if optical.height < tile or optical.width < tile:
        raise DataError(where, f"scene is {optical.height}x{optical.width} pixels, smaller than one "
                               f"{tile}x{tile} tile")
    n = lowres_pixels(tile, rx, options.lowres)
    stride = options.stride or tile
    step = stride_step(tile, n)
    if stride % step:
        pixel = tile * rx / n
        raise DataError(where, f"stride {stride} does not keep tile origins on low-res pixel boundaries: "
                               f"with {tile} px tiles of {n} low-res pixels ({rx:g} m -> {pixel:g} m) "
                               f"it must be a multiple of {step} optical pixels")
    # the scene-wide low-res grid: anchored at the optical origin, covering every whole tile
    lowres = Grid(optical.crs, optical.transform @ Affine.scale(tile / n),
                  math.ceil(optical.height * n / tile), math.ceil(optical.width * n / tile))
    return TileGrid(optical, lowres, tile, n, stride)


# --------------------------------------------------------------------------- reading one scene set
@dataclass
class Tile:
    """One tile's arrays, ready to write."""

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
                             where=s.cloudy, flags=_OPTICAL_FLAGS, fix=_OPTICAL_FIX)
        file_nodata = self.cloudy.nodatavals[self.bands[0] - 1]
        # written tiles keep the input's no-data value; without one, 0 (PlanetScope's blackfill)
        self.nodata = float(file_nodata) if file_nodata is not None else 0.0
        self.grid = grid_of(self.cloudy)
        self.tiles = tile_grid(self.grid, self.options, s.cloudy)

        # cloud-free: nearest onto the cloudy grid, so an aligned scene is copied pixel for pixel
        cf = self._open_raster(s.cloudfree, "cloud-free optical scene")
        cf_bands = parse_bands(s.cloudfree_bands or s.bands, cf.count, s.cloudfree)
        cf_dtype = picked_dtype(cf, cf_bands, "cloud-free optical scene")
        check_optical_raster(cf, cf_bands, OPTICAL_SCALE, 0.0, what="cloud-free optical scene", where=s.cloudfree,
                             flags="--cloudfree-bands (cloudfree_bands: in a scene manifest)", fix=_OPTICAL_FIX)
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

    def read_tile(self, row: int, col: int) -> Tile | str:
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
        return Tile(cloudy=cloudy, cloudfree=cloudfree, sar=sar, landcover=landcover, cloudmask=cloudmask,
                    valid_fraction=n_valid / size, cloud_cover=cover)

    def write_tile(self, tile: Tile, split_dir: Path, patch: int, row: int, col: int) -> list[str]:
        """Write a tile's five files in the official layout; return its CSV row."""
        rel = relative_paths(self.scene.season, self.scene.aoi, patch)
        paths = [split_dir / r for r in rel]
        t_opt, t_low = self.tiles.transforms(row, col)
        crs = self.grid.crs
        write_geotiff(paths[0], tile.cloudfree, crs, t_opt, self.cf_nodata, descriptions=OPTICAL_BANDS)
        write_geotiff(paths[1], tile.cloudy, crs, t_opt, self.nodata, descriptions=OPTICAL_BANDS)
        write_geotiff(paths[2], tile.sar, crs, t_low, math.nan, descriptions=SAR_BANDS)
        write_geotiff(paths[3], tile.landcover, crs, t_low, WORLDCOVER_NODATA, "band",
                      descriptions=("WorldCover",))
        with atomic_path(paths[4]) as tmp, open(tmp, "wb") as fh:
            np.save(fh, tile.cloudmask, allow_pickle=False)
        return rel


# --------------------------------------------------------------------------- the dataset
@dataclass
class TileRecord:
    """What ``build.json`` records of a written tile."""

    name: str
    split: Split
    scene: int  #: index of the scene set
    row: int  #: optical window origin in the cloudy scene
    col: int
    size: int
    bounds: tuple[float, float, float, float]  #: (left, bottom, right, top) in the optical CRS
    valid_fraction: float
    cloud_cover: float

    def as_dict(self, scenes: Sequence[SceneSet]) -> dict[str, Any]:
        """JSON-ready form."""
        return {"name": self.name, "split": self.split, "scene": self.scene,
                "cloudy": str(scenes[self.scene].cloudy.absolute()),
                "window": {"row": self.row, "col": self.col, "height": self.size, "width": self.size},
                "bounds": [round(v, 6) for v in self.bounds], "valid_fraction": round(self.valid_fraction, 6),
                "cloud_cover": round(self.cloud_cover, 6)}


@dataclass
class BuildResult:
    """What :func:`build_dataset` wrote."""

    root: Path
    tiles: list[TileRecord] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  #: skip reason -> tiles
    considered: int = 0  #: candidate tiles (written + skipped)

    def counts(self) -> dict[str, int]:
        """Tiles written per split."""
        c = Counter(t.split for t in self.tiles)
        return {s: c.get(s, 0) for s in SPLITS}

    def summary(self) -> str:
        """A few lines for the terminal."""
        counts = self.counts()
        lines = [f"wrote {len(self.tiles)} of {self.considered} tiles to {self.root}: "
                 + ", ".join(f"{s} {n}" for s, n in counts.items())]
        if self.skipped:
            reasons = sorted(self.skipped.items())
            lines.append("skipped: " + ", ".join(f"{n} ({SKIP_REASONS[r]})" for r, n in reasons))
        lines += [f"note: the {s} split is empty (no {s}.csv written)" for s, n in counts.items() if n == 0]
        return "\n".join(lines)


def _is_previous_build(folder: Path) -> bool:
    """Whether ``folder`` holds a dataset this module wrote (so --overwrite may replace it)."""
    try:
        meta = json.loads((folder / "build.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("generator") == "m3rcr.data.build"


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def build_dataset(
    scenes: Sequence[SceneSet],
    out: str | Path,
    options: BuildOptions | None = None,
    *,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> BuildResult:
    """Cut every scene set into tiles and write a dataset in the official layout to ``out``.

    Writes ``train/``, ``test/``, ``train.csv``, ``test.csv`` (a split without tiles gets neither) and
    ``build.json`` (settings, inputs, every tile's window, bounds, valid fraction and cloud cover, and
    the skipped tiles by reason). Every scene set is opened and checked before anything is written;
    the dataset is built in a hidden folder next to ``out`` and renamed when complete, so a failure
    leaves nothing behind. ``progress(done, total)`` is called after every candidate tile.

    Memory: one tile of every layer at a time, plus GDAL's block cache (at most :data:`m3rcr.data.scene.BLOCK_CACHE_BYTES`
    unless GDAL_CACHEMAX is set).
    """
    with bounded_block_cache():
        return _build(scenes, out, options, overwrite=overwrite, progress=progress)


def _build(scenes: Sequence[SceneSet], out: str | Path, options: BuildOptions | None, *, overwrite: bool,
           progress: Callable[[int, int], None] | None) -> BuildResult:
    options = options or BuildOptions()
    out = Path(out)
    if not scenes:
        raise ValueError("no scene sets given")
    if _inside(Path.cwd(), out):
        raise ValueError(f"{out}: is the current folder or holds it; choose a new folder for the dataset")
    check_output(out, overwrite, folder=True)
    if out.exists() and any(out.iterdir()) and not _is_previous_build(out):
        raise FileExistsError(f"{out}: is not a dataset written by m3rcr build-dataset (no build.json from "
                              "it); --overwrite only replaces those")
    for s in scenes:
        for p in s.paths().values():
            if out.exists() and _inside(p, out):
                raise ValueError(f"{out}: holds the input {p}; replacing it would delete the input")
    splits = assign_splits(scenes, options.test_fraction, options.seed)

    # check every scene set before writing anything: a bad file late in a manifest fails in seconds
    plans = []
    for s in scenes:
        with SceneReader(s, options) as reader:
            plans.append(reader.tiles.origins())
    total = sum(len(p) for p in plans)

    result = BuildResult(root=out, considered=total)
    rows: dict[str, list[list[str]]] = {s: [] for s in SPLITS}
    next_patch: Counter = Counter()  # per season_aoi: sets sharing it continue the numbering
    per_scene: list[dict[str, Any]] = []
    done = 0
    with atomic_dir(out) as tmp:
        for index, (s, origins) in enumerate(zip(scenes, plans)):
            split = splits[s.aoi]
            written, skipped = 0, Counter()
            with SceneReader(s, options) as reader:
                for row, col in origins:
                    tile = reader.read_tile(row, col)
                    if isinstance(tile, str):
                        skipped[tile] += 1
                    else:
                        next_patch[s.key] += 1
                        patch = next_patch[s.key]
                        rows[split].append(reader.write_tile(tile, tmp / split, patch, row, col))
                        t_opt, _ = reader.tiles.transforms(row, col)
                        result.tiles.append(TileRecord(
                            name=f"{s.key}_p_{patch}", split=split, scene=index, row=row, col=col,
                            size=options.tile, bounds=grid_bounds(t_opt, (options.tile, options.tile)),
                            valid_fraction=tile.valid_fraction, cloud_cover=tile.cloud_cover))
                        written += 1
                    done += 1
                    if progress:
                        progress(done, total)
                grid = reader.tiles
                per_scene.append({
                    "index": index, **s.as_dict(), "split": split, "udm_format": reader.udm_format,
                    "bands": list(reader.bands), "crs": grid.optical.crs.to_string(),
                    "optical_res": grid.optical.res[0], "shape": list(grid.optical.shape),
                    "lowres_shape": list(grid.lowres.shape), "lowres_pixels": grid.n,
                    "lowres_pixel_size": grid.optical.res[0] * grid.factor, "tiles_considered": len(origins),
                    "tiles_written": written, "skipped": dict(skipped)})
            result.skipped.update(skipped)
        if not result.tiles:
            detail = ", ".join(f"{n} {SKIP_REASONS[r]}" for r, n in sorted(result.skipped.items()))
            raise DataError(out, f"no tile passed the filters ({total} considered: {detail}); "
                                 "nothing written")
        for split, split_rows in rows.items():
            if split_rows:
                write_csv(tmp / f"{split}.csv", split_rows)
        from m3rcr import __version__

        meta = {
            "generator": "m3rcr.data.build", "m3rcr_version": __version__,
            "settings": {"tile": options.tile, "stride": options.stride or options.tile,
                         "lowres": options.lowres,
                         "sar_resampling": options.sar_resampling, "min_valid": options.min_valid,
                         "min_cloud": options.min_cloud, "max_cloud": options.max_cloud,
                         "test_fraction": options.test_fraction, "seed": options.seed},
            "splits": result.counts(), "aoi_splits": dict(sorted(splits.items())),
            "skipped": {r: result.skipped.get(r, 0) for r in SKIP_REASONS},
            "scenes": per_scene,
            "tiles": [t.as_dict(scenes) for t in result.tiles],
        }
        (tmp / "build.json").write_text(json.dumps(meta, indent=1))
    return result


def iter_tiles(scene: SceneSet, options: BuildOptions | None = None) -> Iterator[tuple[int, int, Tile | str]]:
    """(row, col, tile or skip reason) for every candidate tile of one scene set, without writing anything."""
    with SceneReader(scene, options or BuildOptions()) as reader:
        for row, col in reader.tiles.origins():
            yield row, col, reader.read_tile(row, col)
