"""A synthetic SEN12MS-CR dataset: the official layout, 13-band L1C-like Sentinel-2 and Sentinel-1 on one grid.

Each region of interest (ROI) is one :class:`~m3rcr.data.synthetic.landscape.Landscape`; its patches are
neighbouring 256 x 256 windows of it on a 10 m UTM grid shared exactly by the three files of a triplet:

* ``s2``: 13 bands B1..B12 with B8A, uint16 DN = TOA reflectance x 10000. Surface reflectance per land-cover
  class (:data:`S2_SURFACE`), seen through a simple atmosphere (path radiance, transmittance, water vapour in
  B9, almost no signal in the cirrus band B10) and blurred to each band's native 10/20/60 m resolution.
* ``s2_cloudy``: another acquisition of the same ground with opaque clouds (bright in all bands, lower in
  SWIR), their shadows, haze (strongest at short wavelengths) and thin cirrus that stands out in B10.
* ``s1``: float32 VV, VH sigma0 in dB per class with speckle
  (:func:`~m3rcr.data.synthetic.landscape.backscatter_db`).

``synthetic.json`` at the root holds the seed, the settings and per-patch ground truth (cloud cover, cirrus
fraction, class fractions). ROI numbers are taken from the published split (``sen12mscr_splits.tsv``) so that
train, val and test each get ROIs (see :data:`ROI_NUMBERS`); ``roi_numbering="sequential"`` numbers them
1..N per season instead. Generation is deterministic for a seed, and a patch does not depend on the others.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from affine import Affine
from scipy.ndimage import gaussian_filter

from m3rcr.data.io import GeoTiffLayout, write_geotiff
from m3rcr.data.synthetic.landscape import (
    BARE,
    BUILT,
    CROP,
    GRASS,
    MANGROVE,
    SEASONS,
    SHRUB,
    SNOW,
    TREE,
    WATER,
    WETLAND,
    Landscape,
    SmoothField,
    backscatter_db,
    majority,
    per_class,
    tile_clouds,
    to_uint16,
)
from m3rcr.utils.files import atomic_dir, check_output
from m3rcr.version import __version__

S2_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
S1_BANDS = ("VV", "VH")
#: the four seasonal sets of the release: season -> folder prefix
SEASON_SETS = {"spring": "ROIs1158_spring", "summer": "ROIs1868_summer", "fall": "ROIs1970_fall",
               "winter": "ROIs2017_winter"}
#: native ground sampling distance of each band in metres (B1, B9, B10 at 60 m; red edge, B8A, SWIR at 20 m)
NATIVE_RES = (60, 10, 10, 10, 20, 20, 20, 10, 20, 60, 60, 20, 20)
CLASS_NAMES = {TREE: "tree", SHRUB: "shrub", GRASS: "grass", CROP: "crop", BUILT: "built", BARE: "bare",
               SNOW: "snow", WATER: "water", WETLAND: "wetland", MANGROVE: "mangrove"}

# Surface reflectance x 10000 per band (B1, B2, B3, B4, B5, B6, B7, B8, B8A, B9, B10, B11, B12). Hand-set to
# the shapes of typical Sentinel-2 signatures (as in the USGS/ECOSTRESS spectral libraries resampled to the
# S2 bands): vegetation has a green peak, red absorption, the red-edge rise B5 -> B7, a NIR plateau and
# SWIR water absorption (B11 > B12); water falls to almost nothing beyond the red; bare soil rises steadily
# into SWIR; snow is bright in the visible and dark in SWIR; urban is flat and moderate. B2, B3, B4 and B8
# equal the landscape's 4-band REFLECTANCE, so both synthetic datasets see the same ground. B9 and B10 give
# the surface term only: the atmosphere below absorbs most of it.
S2_SURFACE = {
    TREE: (230, 260, 450, 300, 700, 2000, 2600, 2900, 3000, 2900, 500, 1500, 650),
    SHRUB: (450, 520, 760, 760, 1150, 1800, 2150, 2350, 2450, 2400, 600, 2600, 1600),
    GRASS: (380, 450, 760, 600, 1050, 2100, 2600, 2800, 2900, 2800, 550, 2300, 1250),
    CROP: (300, 350, 650, 420, 900, 2500, 3200, 3500, 3650, 3500, 600, 2100, 1000),
    BUILT: (1100, 1150, 1200, 1250, 1350, 1420, 1470, 1500, 1550, 1500, 1400, 1800, 1600),
    BARE: (1200, 1400, 1700, 2100, 2300, 2450, 2550, 2600, 2700, 2750, 2900, 3300, 2800),
    SNOW: (8300, 8200, 8100, 7900, 7700, 7500, 7300, 7000, 6800, 6000, 2000, 700, 500),
    WATER: (560, 520, 560, 360, 250, 180, 170, 200, 150, 100, 50, 60, 40),
    WETLAND: (330, 360, 560, 450, 800, 1300, 1550, 1700, 1750, 1700, 300, 1100, 550),
    MANGROVE: (230, 250, 450, 280, 650, 1800, 2350, 2600, 2700, 2600, 400, 1200, 500),
}
BARE_SOIL_13 = (950, 1100, 1300, 1650, 1800, 1950, 2050, 2100, 2200, 2250, 2500, 2900, 2400)  # fallow parcels
ROAD_13 = (780, 800, 880, 960, 1000, 1070, 1110, 1150, 1180, 1200, 1300, 1400, 1300)
ROOF_RED_13 = (850, 900, 950, 1500, 1700, 1780, 1800, 1800, 1850, 1850, 1900, 2300, 2000)  # clay tiles
ROOF_GREY_13 = (1250, 1300, 1350, 1400, 1450, 1550, 1600, 1650, 1700, 1700, 1750, 2100, 1900)  # concrete
# TOA = PATH + TRANSMITTANCE * surface: Rayleigh and aerosol path radiance falls with wavelength; B9 sits in a
# water-vapour band and B10 (1375 nm) in a band the lower atmosphere absorbs almost entirely (B10 < ~25 DN on
# land, as in the real samples).
PATH = (1000, 700, 450, 280, 220, 170, 140, 120, 100, 40, 3, 15, 8)
TRANSMITTANCE = (0.80, 0.84, 0.88, 0.91, 0.92, 0.93, 0.94, 0.95, 0.95, 0.40, 0.003, 0.93, 0.90)
# Opaque cloud TOA reflectance x 10000: bright and white, lower in SWIR (ice and water absorb); B10 for high
# tops (scaled down per patch for low clouds). B2-B8 match the landscape's CLOUD.
CLOUD_13 = (6200, 5600, 5700, 5900, 6000, 6100, 6150, 6200, 6150, 4200, 1500, 4300, 2900)
# Thin cirrus lies above the water vapour: nearly flat in the spectrum, so it shows strongly only in B10,
# whose background is dark.
CIRRUS_13 = (1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 950, 1000, 850, 700)
# Haze (a thick aerosol layer below the water vapour): scattering strongest at short wavelengths.
HAZE_13 = (3000, 2700, 2300, 2000, 1850, 1700, 1600, 1500, 1450, 600, 5, 900, 600)

#: ROI numbers per season in the published split, interleaving train / val / test, so that a few ROIs per
#: season already cover all three splits (sen12mscr_splits.tsv). ROIs beyond these get numbers 201, 202, ...,
#: outside the published split.
ROI_NUMBERS = {
    "spring": ((1, "train"), (106, "test"), (17, "val"), (6, "train"), (123, "test"), (8, "train")),
    "summer": ((19, "val"), (4, "train"), (73, "test"), (7, "train"), (80, "val"), (11, "train")),
    "fall": ((139, "test"), (1, "train"), (65, "val"), (3, "train"), (4, "train"), (6, "train")),
    "winter": ((8, "train"), (22, "val"), (63, "test"), (21, "train"), (108, "test"), (25, "train")),
}


@dataclass(frozen=True)
class Sen12mscrSynthConfig:
    """Settings of the synthetic SEN12MS-CR generator; the defaults give official 256 x 256 patches."""

    size: int = 256  #: patch side in pixels
    res: float = 10.0  #: metres
    rois_per_season: int = 2
    patches_per_roi: int = 4  #: neighbouring windows of one landscape
    seasons: tuple[str, ...] = SEASONS  #: which seasonal sets to write
    roi_numbering: Literal["split", "sequential"] = "split"  #: see :data:`ROI_NUMBERS`
    cirrus_probability: float = 0.4  #: chance that a cloudy image has thin cirrus
    clear_probability: float = 0.1  #: chance that a cloudy image has no opaque clouds (haze/cirrus only)
    max_cloud_cover: float = 0.9

    def __post_init__(self) -> None:
        if self.size < 16 or self.res <= 0:
            raise ValueError("size must be >= 16 pixels and res > 0")
        if self.rois_per_season < 1 or self.patches_per_roi < 1:
            raise ValueError("need at least one ROI per season and one patch per ROI")
        if not self.seasons or any(s not in SEASON_SETS for s in self.seasons) or len(set(self.seasons)) != len(
                self.seasons):
            raise ValueError(f"seasons must be distinct names among {', '.join(SEASON_SETS)}")
        if self.roi_numbering not in ("split", "sequential"):
            raise ValueError("roi_numbering must be 'split' or 'sequential'")
        for name in ("cirrus_probability", "clear_probability", "max_cloud_cover"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")

    @property
    def grid(self) -> int:
        """Patches of a ROI lie on a grid x grid block of the landscape."""
        return math.ceil(math.sqrt(self.patches_per_roi))


@dataclass(frozen=True)
class PatchWeather:
    """The clouds of one cloudy acquisition."""

    cloud_cover: float  #: requested opaque-cloud cover (block mask fraction), 0 for none
    cirrus: bool
    haze: float  #: haze strength, 0..1


def roi_number(season: str, index: int, numbering: str = "split") -> tuple[int, str | None]:
    """ROI number and published split of the ``index``-th (0-based) synthetic ROI of ``season``."""
    if numbering == "sequential":
        return index + 1, None
    table = ROI_NUMBERS[season]
    return table[index] if index < len(table) else (200 + index - len(table) + 1, None)


def patch_paths(season: str, roi: int, patch: int) -> dict[str, str]:
    """Paths of one triplet relative to the root, in the official layout (keys ``s1``, ``s2``, ``s2_cloudy``)."""
    prefix = SEASON_SETS[season]
    return {kind: f"{prefix}_{kind}/{kind}_{roi}/{prefix}_{kind}_{roi}_p{patch}.tif"
            for kind in ("s1", "s2", "s2_cloudy")}


# --------------------------------------------------------------------------- spectra
def surface_13(s: dict[str, np.ndarray], rng: np.random.Generator, water_tint: float) -> np.ndarray:
    """Surface reflectance x 10000, (13, H, W), from a landscape sample (as ``reflectance`` does for 4 bands)."""
    code = s["code"]
    refl = per_class(code, S2_SURFACE)
    veg = (code == CROP) | (code == GRASS)
    g = s["green"][veg]  # greenness blends green vegetation with bare soil
    refl[:, veg] = refl[:, veg] * g + np.asarray(BARE_SOIL_13, float)[:, None] * (1 - g)
    roof = s["material"] == 1
    roof_color = np.where(s["roof_red"][roof], np.asarray(ROOF_RED_13, float)[:, None],
                          np.asarray(ROOF_GREY_13, float)[:, None])
    refl[:, roof] = roof_color * s["roof_gain"][roof]
    refl[:, s["material"] == 2] = np.asarray(ROAD_13, float)[:, None]
    water = code == WATER
    refl[:5, water] *= water_tint  # turbidity changes the visible, not NIR/SWIR
    H, W = code.shape
    grain = gaussian_filter(rng.standard_normal((H, W)), 1.0) * 2.5
    crowns = np.where(code == TREE, gaussian_filter(rng.standard_normal((H, W)), 1.3) * 4.0, 0.0)
    gain = 1.0 + 0.06 * grain + 0.25 * np.clip(crowns, -1.5, 1.5) + 0.06 * s["bright"] - 0.08 * s["texture"]
    gain = np.where(water, 1.0 + 0.02 * grain, gain)
    return refl * np.clip(gain, 0.5, 1.6)[None]


def _column(values: tuple[float, ...] | np.ndarray) -> np.ndarray:
    return np.asarray(values, float)[:, None, None]


def toa(surface: np.ndarray, aerosol: float, vapour: float) -> np.ndarray:
    """L1C-like TOA reflectance x 10000 of a surface, for an aerosol load (path radiance scale, ~1) and a
    water-vapour transmittance in B9."""
    trans = np.array(TRANSMITTANCE)
    trans[9] = vapour
    path = np.array(PATH, float)
    path[:9] *= aerosol  # aerosol scattering matters at short wavelengths only
    return _column(path) + _column(trans) * surface


def _cirrus(rng: np.random.Generator, size: int, res: float) -> np.ndarray:
    """Thin cirrus opacity (H, W), 0..~0.7: streaks along one axis (stretched smooth fields)."""
    extent = size * res
    field = SmoothField(rng, 4 * extent + 400, {"a": 400.0, "b": 120.0})
    across = (np.arange(size) + 0.5) * res * 3.0  # narrow across the streaks
    along = (np.arange(size) + 0.5) * res * 0.4  # long along them
    f = field.on_grid("a", across, along) + 0.4 * field.on_grid("b", across, along)
    if rng.random() < 0.5:
        f = f.T
    t = float(np.quantile(f, 1.0 - rng.uniform(0.2, 0.8)))
    return rng.uniform(0.2, 0.7) * np.clip((f - t) / 0.8, 0.0, 1.0)


def _s1_floor(db: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add the SAR noise floor (noise-equivalent sigma0 about -26 dB in VV, -30 dB in VH, speckled) and cap
    at 0 dB, as in the release; float32."""
    floor = _column((10 ** -2.6, 10 ** -3.0)) * rng.gamma(4.4, 1 / 4.4, size=db.shape)
    return np.minimum(10 * np.log10(10 ** (db / 10) + floor), 0.0).astype(np.float32)


def _sensor(toa_img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur each band to its native resolution, add detector noise, round to uint16 DN."""
    out = np.empty_like(toa_img)
    for b, native in enumerate(NATIVE_RES):
        sigma = 0.45 * native / 10.0 if native > 10 else 0.0
        out[b] = gaussian_filter(toa_img[b], sigma) if sigma else toa_img[b]
    noise = np.where(np.arange(13) == 10, 1.0, 4.0)  # DN; the cirrus band is quiet
    out += rng.standard_normal(out.shape) * _column(noise)
    return to_uint16(out)


# --------------------------------------------------------------------------- one patch
def generate_sen12mscr_patch(landscape: Landscape, origin_xy: tuple[float, float], weather: PatchWeather,
                             rng: np.random.Generator, config: Sen12mscrSynthConfig) -> dict[str, object]:
    """Arrays of one triplet at ``origin_xy`` (its north-west corner in landscape metres, x east, y south):
    ``s2`` and ``s2_cloudy`` uint16 (13, H, W), ``s1`` float32 dB (2, H, W), plus ``landcover`` (H, W) and
    ``cloud_alpha``/``cirrus``/``shadow`` maps (H, W) for tests, and ``truth`` (JSON-ready ground truth)."""
    n, sub = config.size, 2  # 2 x 2 sub-samples per pixel: the pixel averages its ground
    fine = (np.arange(n * sub) + 0.5) * (config.res / sub)
    s = landscape.sample(origin_xy[1] + fine, origin_xy[0] + fine)
    surf = surface_13(s, rng, landscape.water_tint).reshape(13, n, sub, n, sub).mean(axis=(2, 4))
    s1 = _s1_floor(backscatter_db(s, rng, sub), rng)
    landcover = majority(s["code"], sub)
    green = s["green"].reshape(n, sub, n, sub).mean(axis=(1, 3))
    # two acquisitions weeks apart: their own gains, aerosol and water vapour
    free = toa(surf * rng.normal(1.0, 0.02, size=13)[:, None, None], rng.uniform(0.7, 1.3), rng.uniform(0.3, 0.5))
    clouds = tile_clouds(rng, n, weather.cloud_cover, config.res)
    if weather.cloud_cover == 0:  # tile_clouds leaves a faint veil even then: no clouds means none
        clouds.update(alpha=np.zeros((n, n)), shadow=np.ones((n, n)))
    cloudy = toa(surf * rng.normal(1.0, 0.03, size=13)[:, None, None] * clouds["shadow"][None],
                 rng.uniform(0.7, 1.3), rng.uniform(0.3, 0.5))
    h = weather.haze * np.clip(0.6 + 0.3 * clouds["texture"], 0.0, 1.0)[None]  # patchy haze
    cloudy = cloudy * (1 - 0.5 * h) + _column(HAZE_13) * h
    cloud = _column(CLOUD_13) * clouds["texture"][None] * rng.uniform(0.85, 1.15)
    cloud[10] *= rng.uniform(0.1, 1.0)  # cloud-top height: low clouds are dim in B10
    a = clouds["alpha"][None]
    cloudy = cloudy * (1 - a) + cloud * a
    cirrus = _cirrus(rng, n, config.res) if weather.cirrus else np.zeros((n, n))
    cloudy = cloudy * (1 - 0.3 * cirrus[None]) + _column(CIRRUS_13) * cirrus[None]
    s2, s2_cloudy = _sensor(free, rng), _sensor(cloudy, rng)
    codes, counts = np.unique(landcover, return_counts=True)
    truth = {"biome": landscape.biome, "season": landscape.season, "cloud_cover": float(clouds["mask"].mean()),
             "cloud_cover_target": weather.cloud_cover,
             "thick_clouds": bool(clouds["thick"]) and weather.cloud_cover > 0,
             "cirrus": weather.cirrus, "cirrus_fraction": float((cirrus > 0.05).mean()), "haze": weather.haze,
             "shadow_fraction": float((clouds["shadow"] < 0.9).mean()),
             "class_fractions": {CLASS_NAMES[int(c)]: round(float(k) / landcover.size, 5)
                                 for c, k in zip(codes, counts)}}
    return {"s2": s2, "s2_cloudy": s2_cloudy, "s1": s1, "landcover": landcover, "green": green,
            "cloud_alpha": clouds["alpha"], "cirrus": cirrus, "shadow": clouds["shadow"], "truth": truth}


def write_sen12mscr_patch(root: Path, rel: dict[str, str], patch: dict, crs: str, transform: Affine) -> None:
    """Write one triplet's three GeoTIFFs (deflate, pixel-interleaved, no nodata, like the release)."""
    layout = GeoTiffLayout(compress="deflate")
    write_geotiff(root / rel["s1"], patch["s1"], crs, transform, None, layout, descriptions=S1_BANDS)
    for kind in ("s2", "s2_cloudy"):
        write_geotiff(root / rel[kind], patch[kind], crs, transform, None, layout, descriptions=S2_BANDS)


# --------------------------------------------------------------------------- a dataset
def _roi_geo(rng: np.random.Generator) -> tuple[str, float, float]:
    """A random UTM CRS and north-west corner (centimetre precision, like the release's grids)."""
    zone = int(rng.integers(1, 61))
    north = bool(rng.random() < 0.7)
    x = round(rng.uniform(200_000, 800_000), 2)
    y = round(rng.uniform(500_000, 7_000_000) if north else rng.uniform(2_500_000, 9_500_000), 2)
    return f"EPSG:{(32600 if north else 32700) + zone}", x, y


def _weather(rng: np.random.Generator, config: Sen12mscrSynthConfig) -> PatchWeather:
    """Cloud cover, cirrus and haze of one cloudy acquisition."""
    clear = rng.random() < config.clear_probability
    cover = 0.0 if clear else float(rng.uniform(0.05, config.max_cloud_cover))
    cirrus = bool(rng.random() < config.cirrus_probability) or (clear and config.cirrus_probability > 0)
    return PatchWeather(cloud_cover=cover, cirrus=cirrus, haze=float(rng.uniform(0.0, 0.35)))


def _write_roi(root: Path, season: str, index: int, seed: int, config: Sen12mscrSynthConfig,
               on_patch: Callable[[dict], None]) -> None:
    """Generate and write every patch of one ROI; ``on_patch`` gets each patch's JSON record."""
    s_id = SEASONS.index(season)  # seeds use the season's fixed index, so --seasons does not change content
    rrng = np.random.default_rng([seed, s_id, index, 0])
    roi, split = roi_number(season, index, config.roi_numbering)
    crs, x0, y0 = _roi_geo(rrng)
    extent = config.grid * config.size * config.res
    landscape = Landscape(rrng, season, extent)
    ref = np.arange(0, extent, 10.0) + 5.0
    landscape.calibrate(ref, ref)
    for p in range(config.patches_per_roi):
        prng = np.random.default_rng([seed, s_id, index, 1, p])
        col, row = p % config.grid, p // config.grid
        dx, dy = col * config.size * config.res, row * config.size * config.res
        patch = generate_sen12mscr_patch(landscape, (dx, dy), _weather(prng, config), prng, config)
        rel = patch_paths(season, roi, p + 1)
        transform = Affine(config.res, 0.0, x0 + dx, 0.0, -config.res, y0 - dy)
        write_sen12mscr_patch(root, rel, patch, crs, transform)
        on_patch(dict(season_set=SEASON_SETS[season], roi=roi, patch=p + 1, published_split=split, crs=crs,
                      files=rel, **patch["truth"]))


def generate_sen12mscr(
    out: str | Path,
    config: Sen12mscrSynthConfig | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a synthetic SEN12MS-CR dataset in the official layout to ``out``, plus ``synthetic.json``
    (seed, settings, per-patch ground truth).

    The dataset is built in a temporary folder next to ``out`` and moved into place when complete;
    ``overwrite`` replaces an existing non-empty ``out``.
    """
    config = config or Sen12mscrSynthConfig()
    out = check_output(out, overwrite, folder=True)
    seasons = [s for s in SEASONS if s in config.seasons]  # release order, whatever order was given
    records: list[dict] = []
    total = len(seasons) * config.rois_per_season * config.patches_per_roi

    def on_patch(record: dict) -> None:
        records.append(record)
        if progress:
            progress(len(records), total)

    with atomic_dir(out) as tmp:
        for season in seasons:
            for index in range(config.rois_per_season):
                _write_roi(tmp, season, index, seed, config, on_patch)
        meta = {"generator": "m3rcr.data.synthetic.sen12mscr", "format": "sen12mscr", "m3rcr_version": __version__,
                "seed": seed, "config": asdict(config), "s2_bands": list(S2_BANDS), "s1_bands": list(S1_BANDS),
                "patches": records}
        (tmp / "synthetic.json").write_text(json.dumps(meta, indent=1))
    return out
