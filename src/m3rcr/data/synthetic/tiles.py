"""A synthetic M3R-CR dataset: the official layout, dtypes and georeferencing, with plausible content.

Each area of interest (AOI) is a :class:`~m3rcr.data.synthetic.landscape.Landscape`; its neighbouring
tiles sample it on the 3 m optical grid and the 10 m SAR and land-cover grids (offset from it by 1-2 m, as
in the real data). The SAR content is displaced by a random misalignment of up to ``max_sar_shift_px``
optical pixels; the cloud masks' coverage is spread evenly over the five cloud-cover bins; the cloudy and
cloud-free acquisitions differ slightly in radiometry.

Generation is deterministic for a seed, and sample ``i`` of a split does not depend on the others.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from affine import Affine

from m3rcr.data.io import GeoTiffLayout, write_geotiff
from m3rcr.data.layout import relative_paths, write_csv
from m3rcr.data.synthetic.landscape import (
    CLOUD,
    SEASONS,
    Landscape,
    backscatter_db,
    majority,
    reflectance,
    tile_clouds,
    to_uint16,
)
from m3rcr.utils.files import atomic_dir, atomic_path, check_output
from m3rcr.version import __version__

SPLITS = ("train", "test")


@dataclass(frozen=True)
class SynthConfig:
    """Settings of the generator; the defaults produce official M3R-CR tiles."""

    size: int = 300  #: optical tile size in pixels (a multiple of 10)
    optical_res: float = 3.0  #: metres
    sar_res: float = 10.0  #: metres
    patches_per_aoi: int = 4  #: neighbouring tiles cut from each AOI (at most 9)
    max_sar_shift_px: float = 3.0  #: largest misalignment of SAR content, in optical pixels (each axis uniform)
    #: if set, every sample's SAR content is displaced by exactly this many optical pixels, in a random
    #: direction (instead of ``max_sar_shift_px``); the optical images and clouds stay the same for any value
    sar_shift_px: float | None = None
    sar_hole_probability: float = 0.0  #: chance that a SAR tile has a NaN hole (exercises NaN filling)

    def __post_init__(self) -> None:
        ratio = self.size * self.optical_res / self.sar_res
        if abs(ratio - round(ratio)) > 1e-9:
            raise ValueError(f"size {self.size} at {self.optical_res} m does not fill whole {self.sar_res} m pixels")
        if not 1 <= self.patches_per_aoi <= 9:
            raise ValueError("patches_per_aoi must be between 1 and 9")
        if self.max_sar_shift_px < 0 or (self.sar_shift_px is not None and self.sar_shift_px < 0):
            raise ValueError("SAR shifts are distances: they must be >= 0")

    @property
    def sar_size(self) -> int:
        return round(self.size * self.optical_res / self.sar_res)

    @property
    def extent(self) -> float:
        return self.size * self.optical_res


# --------------------------------------------------------------------------- one sample
@dataclass
class SampleGeo:
    """Where a synthetic sample lies."""

    crs: str
    sar_origin: tuple[float, float]  #: (x, y) of the SAR/land-cover grid's north-west corner
    grid_offset_m: tuple[int, int]  #: optical origin minus SAR origin, (east, north), metres
    aoi_xy: tuple[float, float]  #: the tile's north-west corner in AOI coordinates (x east, y south)


def generate_sample(
    landscape: Landscape, geo: SampleGeo, coverage: float, rng: np.random.Generator, config: SynthConfig
) -> dict[str, object]:
    """Arrays of one sample: cloudy and cloud-free uint16 (4,H,W), SAR float64 dB (2,h,w),
    land cover uint8 (1,h,w), cloud mask bool (H,W), and the ground truth of how it was made."""
    n_opt, n_sar, r_opt, r_sar = config.size, config.sar_size, config.optical_res, config.sar_res
    ax, ay = geo.aoi_xy
    # optical pixel centres; the optical origin is east/north of the SAR origin by grid_offset_m
    ox, oy = geo.grid_offset_m
    xs_opt = ax + ox + (np.arange(n_opt) + 0.5) * r_opt
    ys_opt = ay - oy + (np.arange(n_opt) + 0.5) * r_opt
    # 3x3 sub-samples of each 10 m pixel
    sub = 3
    fine = (np.arange(n_sar * sub) + 0.5) * (r_sar / sub)
    xs_lc, ys_lc = ax + fine, ay + fine
    max_shift = config.max_sar_shift_px * r_opt
    if config.sar_shift_px is None:
        shift = rng.uniform(-max_shift, max_shift, size=2)  # (east, south) displacement of SAR content
    else:  # the same two draws as above, so nothing else in the sample changes with the shift
        u = rng.uniform(-1.0, 1.0, size=2)
        angle = math.atan2(u[1], u[0])
        shift = config.sar_shift_px * r_opt * np.array([math.cos(angle), math.sin(angle)])

    s_opt = landscape.sample(ys_opt, xs_opt)
    s_lc = landscape.sample(ys_lc, xs_lc)
    s_sar = landscape.sample(ys_lc - shift[1], xs_lc - shift[0])

    ground = reflectance(s_opt, rng, landscape.water_tint)
    clouds = tile_clouds(rng, n_opt, coverage, r_opt)
    # two acquisitions ~3 days apart: small gain/offset change and a little vegetation change
    gain_free = rng.normal(1.0, 0.02, size=4)[:, None, None]
    gain_cloudy = rng.normal(1.0, 0.03, size=4)[:, None, None]
    offset_cloudy = rng.normal(0.0, 25.0, size=4)[:, None, None]
    cloudfree = ground * gain_free
    cloudy_ground = (ground * gain_cloudy + offset_cloudy) * clouds["shadow"][None]
    cloud_refl = np.asarray(CLOUD, float)[:, None, None] * clouds["texture"][None] * rng.uniform(0.85, 1.15)
    a = clouds["alpha"][None]
    cloudy = cloudy_ground * (1 - a) + cloud_refl * a
    sar = backscatter_db(s_sar, rng, sub)
    if config.sar_hole_probability and rng.random() < config.sar_hole_probability:
        r0, c0 = rng.integers(0, n_sar - 5, size=2)
        sar[:, r0:r0 + rng.integers(2, 6), c0:c0 + rng.integers(2, 6)] = np.nan
    landcover = majority(s_lc["code"], sub)[None]
    return dict(
        cloudy=to_uint16(cloudy), cloudfree=to_uint16(cloudfree), sar=sar, landcover=landcover,
        cloudmask=clouds["mask"],
        truth=dict(sar_shift_m=[float(shift[0]), float(-shift[1])], cloud_cover_target=coverage,
                   thick_clouds=bool(clouds["thick"]), biome=landscape.biome, season=landscape.season,
                   grid_offset_m=list(geo.grid_offset_m)),
    )


def write_sample(split_dir: Path, season: str, aoi: int, patch: int, sample: dict, geo: SampleGeo,
                 config: SynthConfig) -> list[str]:
    """Write one sample's five files in the official layout; return its CSV row."""
    rel = relative_paths(season, aoi, patch)
    paths = [split_dir / r for r in rel]
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
    sx, sy = geo.sar_origin
    ox, oy = geo.grid_offset_m
    t_opt = Affine(config.optical_res, 0, sx + ox, 0, -config.optical_res, sy + oy)
    t_sar = Affine(config.sar_res, 0, sx, 0, -config.sar_res, sy)
    shift = sample["truth"]["sar_shift_m"]
    write_geotiff(paths[0], sample["cloudfree"], geo.crs, t_opt, 0)
    write_geotiff(paths[1], sample["cloudy"], geo.crs, t_opt, 0)
    write_geotiff(paths[2], sample["sar"], geo.crs, t_sar, None,
                  tags={"M3RCR_SYNTHETIC": "1", "M3RCR_SAR_SHIFT_EAST_M": f"{shift[0]:.3f}",
                        "M3RCR_SAR_SHIFT_NORTH_M": f"{shift[1]:.3f}"})
    write_geotiff(paths[3], sample["landcover"], geo.crs, t_sar, None, GeoTiffLayout(interleave="band"))
    with atomic_path(paths[4]) as tmp, open(tmp, "wb") as fh:
        np.save(fh, sample["cloudmask"], allow_pickle=False)
    return rel


# --------------------------------------------------------------------------- a dataset
def _cloud_coverages(rng: np.random.Generator, n: int) -> np.ndarray:
    """Coverages for n samples: bins used in turn (shuffled), uniform inside each bin, clear of its edges."""
    bins = rng.permutation(np.arange(n) % 5)
    lo = bins * 0.2 + 0.01
    return lo + rng.random(n) * 0.18


def _aoi_geo(rng: np.random.Generator) -> tuple[str, float, float]:
    """A random UTM CRS and AOI corner (10 m aligned)."""
    zone = int(rng.integers(1, 61))
    north = bool(rng.random() < 0.7)
    epsg = (32600 if north else 32700) + zone
    x = round(rng.uniform(250_000, 750_000) / 10) * 10
    y = round((rng.uniform(500_000, 7_000_000) if north else rng.uniform(2_500_000, 9_500_000)) / 10) * 10
    return f"EPSG:{epsg}", float(x), float(y)


def generate_dataset(
    out: str | Path,
    n_train: int,
    n_test: int,
    seed: int = 0,
    config: SynthConfig | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a synthetic M3R-CR dataset to ``out``: ``train/``, ``test/``, ``train.csv``, ``test.csv``
    and ``synthetic.json`` (settings and per-sample ground truth).

    The dataset is built in a temporary folder next to ``out`` and moved into place when complete.
    """
    config = config or SynthConfig()
    out = Path(out)
    check_output(out, overwrite, folder=True)
    if n_train < 0 or n_test < 0 or n_train + n_test == 0:
        raise ValueError("need at least one sample (train + test > 0, both >= 0)")
    meta: dict[str, object] = {"generator": "m3rcr.data.synthetic", "m3rcr_version": __version__, "seed": seed,
                               "n_train": n_train, "n_test": n_test, "config": asdict(config), "samples": []}
    done, total = 0, n_train + n_test
    with atomic_dir(out) as tmp:
        for split_id, (split, n) in enumerate(zip(SPLITS, (n_train, n_test))):
            split_dir = tmp / split
            split_dir.mkdir()
            coverages = _cloud_coverages(np.random.default_rng([seed, split_id, 0]), n)
            rows = []
            n_aoi = math.ceil(n / config.patches_per_aoi)
            for a in range(n_aoi):
                aoi_number = a + 1 + split_id * 1000  # train and test never share an AOI
                arng = np.random.default_rng([seed, split_id, 1, a])
                season = str(arng.choice(SEASONS))
                crs, ax, ay = _aoi_geo(arng)
                landscape = Landscape(arng, season, 3 * config.extent)
                ref = (np.arange(0, 3 * config.extent, 10.0) + 5.0)
                landscape.calibrate(ref, ref)
                for p in range(config.patches_per_aoi):
                    i = a * config.patches_per_aoi + p
                    if i >= n:
                        break
                    srng = np.random.default_rng([seed, split_id, 2, i])
                    offset = (0, 0)
                    while offset == (0, 0):
                        offset = tuple(int(v) for v in srng.integers(-2, 3, size=2))
                    col, row = p % 3, p // 3
                    geo = SampleGeo(crs=crs, sar_origin=(ax + col * config.extent, ay - row * config.extent),
                                    grid_offset_m=offset,  # type: ignore[arg-type]
                                    aoi_xy=(col * config.extent, row * config.extent))
                    sample = generate_sample(landscape, geo, float(coverages[i]), srng, config)
                    rows.append(write_sample(split_dir, season, aoi_number, p + 1, sample, geo, config))
                    truth = sample["truth"]
                    truth.update(split=split, name=f"{season}_{aoi_number}_p_{p + 1}",
                                 cloud_cover=float(sample["cloudmask"].mean()))
                    meta["samples"].append(truth)  # type: ignore[union-attr]
                    done += 1
                    if progress:
                        progress(done, total)
            write_csv(tmp / f"{split}.csv", rows)
        (tmp / "synthetic.json").write_text(json.dumps(meta, indent=1))
    return out
