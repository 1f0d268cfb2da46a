"""Synthetic whole scenes: what a user brings instead of M3R-CR tiles.

One call writes, for a :class:`~m3rcr.data.synthetic.landscape.Landscape`:

* ``cloudy.tif`` and ``cloudfree.tif``: 4-band uint16 reflectance x 10000 on a 3 m UTM grid, no-data 0
  outside a rotated footprint (as in a PlanetScope scene);
* ``sar.tif``: Sentinel-1 VV/VH sigma0 (float32, dB or linear power) in any CRS and resolution,
  optionally covering only the western part of the optical scene;
* ``landcover.tif``: WorldCover codes (uint8) in EPSG:4326 at 1/12000 degree, like the ESA tiles;
* ``cloudmask.tif`` (uint8, 1 = cloudy) and ``udm.tif`` (Planet's legacy UDM bits: bit 0 no-data,
  bit 1 cloud) on the optical grid; they flag every pixel with visible cloud (opacity >= 5 %), as a
  good cloud detector would, so that the semi-transparent cloud edges are in the mask;
* ``scene.json``: the settings.

Everything is generated strip by strip, so a scene of many thousand pixels needs little memory.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import calculate_default_transform, reproject
from rasterio.windows import Window

from m3rcr.data.io import GeoTiffLayout, RasterSpec, geotiff_writer, write_geotiff
from m3rcr.data.synthetic.landscape import (
    CLOUD,
    Landscape,
    SmoothField,
    backscatter_db,
    majority,
    reflectance,
    to_uint16,
)

#: Planet legacy UDM bits.
UDM_NODATA_BIT = 0
UDM_CLOUD_BIT = 1
#: Cloud opacity from which the scene's cloud mask flags a pixel. Opacity rises from 0 to 0.95 over half a
#: unit of the cloud field; flagging only the opaque core (as the first version did) left 15-20 px wide
#: rims with up to 55 % cloud unflagged, which a method given the mask leaves as bright halos.
MASK_OPACITY = 0.05
#: Tiled and deflate-compressed like a delivered scene; no AREA_OR_POINT tag (earlier versions wrote none, and
#: the same seed must give the same bytes).
SCENE_LAYOUT = GeoTiffLayout(tiled=True, compress="deflate", area_or_point=None)


@dataclass(frozen=True)
class SceneConfig:
    """Settings of a synthetic scene."""

    height: int = 2000  #: optical rows
    width: int = 2000  #: optical columns
    optical_res: float = 3.0  #: metres
    crs: str = "EPSG:32633"  #: UTM CRS of the optical scene
    origin: tuple[float, float] = (400_000.0, 5_000_000.0)  #: (x, y) of the optical north-west corner
    sar_crs: str = "EPSG:4326"  #: CRS of the SAR raster
    sar_res: float | None = None  #: SAR pixel size in its CRS units; default about 10 m (20 m: 2e-4 degree)
    sar_units: str = "db"  #: "db" or "linear" (power)
    sar_cover: float = 1.0  #: fraction of the optical width, from the west, that the SAR covers
    footprint_angle: float = 8.0  #: rotation of the valid footprint in degrees; 0 leaves no no-data corners
    cloud_cover: float = 0.35  #: target cloudy fraction
    season: str = "summer"
    strip: int = 512  #: rows generated at a time

    def __post_init__(self) -> None:
        if self.height < 16 or self.width < 16:
            raise ValueError("a synthetic scene needs at least 16x16 pixels")
        if self.sar_units not in ("db", "linear"):
            raise ValueError(f"sar_units must be 'db' or 'linear', got {self.sar_units!r}")
        if not 0.05 <= self.sar_cover <= 1.0:
            raise ValueError("sar_cover must be between 0.05 and 1")


def _footprint(ys: np.ndarray, xs: np.ndarray, cfg: SceneConfig, shrink: float) -> np.ndarray:
    """Pixels inside a rectangle rotated by ``footprint_angle`` and inscribed in the scene (True = valid)."""
    if cfg.footprint_angle == 0:
        return np.ones((len(ys), len(xs)), bool)
    h, w = cfg.height * cfg.optical_res, cfg.width * cfg.optical_res
    a = math.radians(cfg.footprint_angle)
    Y, X = np.meshgrid(ys - h / 2, xs - w / 2, indexing="ij")
    u, v = X * math.cos(a) + Y * math.sin(a), -X * math.sin(a) + Y * math.cos(a)
    # the largest rotated rectangle of the scene's aspect that stays inside it, shrunk a little
    scale = shrink / (math.cos(a) + math.sin(a) * max(h / w, w / h))
    return (np.abs(u) <= w / 2 * scale) & (np.abs(v) <= h / 2 * scale)


def generate_scene(out: str | Path, config: SceneConfig | None = None, seed: int = 0) -> dict[str, Path]:
    """Write a synthetic scene to the folder ``out``; return the paths by kind.

    ``scene.json`` keeps the generator name ``m3rcr.data.synthetic_scene`` of earlier versions, so the same
    seed gives the same files.
    """
    cfg = config or SceneConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 7])
    res = cfg.optical_res
    H, W = cfg.height, cfg.width
    x0, y0 = cfg.origin
    extent = max(H, W) * res
    landscape = Landscape(rng, cfg.season, extent)
    ref = np.arange(0, extent, 10.0) + 5.0
    landscape.calibrate(ref, ref)
    clouds = SmoothField(rng, extent + 400, dict(c1=600.0, c2=300.0, c3=120.0, c4=50.0, tex=40.0))
    xs = (np.arange(W) + 0.5) * res
    # the cloud threshold that gives the target cover, from a coarse reference grid
    coarse = np.arange(0, extent, 30.0) + 15.0

    def cloud_field(ys: np.ndarray, xs_: np.ndarray) -> np.ndarray:
        return sum(w * clouds.on_grid(n, ys, xs_) for n, w in (("c1", 1.0), ("c2", 0.5), ("c3", 0.25), ("c4", 0.12)))

    # opacity = 0.95 * clip((f - t) / 0.5 + 0.5, 0, 1) ** 0.8 reaches MASK_OPACITY at f = t - edge; the mask
    # (f >= t - edge) covers the target fraction
    edge = 0.25 - 0.5 * (MASK_OPACITY / 0.95) ** (1 / 0.8)
    t_cloud = edge + float(np.quantile(cloud_field(coarse[coarse < H * res], coarse[coarse < W * res]),
                                       1 - cfg.cloud_cover))

    t_opt = Affine(res, 0, x0, 0, -res, y0)
    paths = {k: out / f"{k}.tif" for k in ("cloudy", "cloudfree", "cloudmask", "udm", "sar", "landcover")}
    gain_free = rng.normal(1.0, 0.02, size=4)[:, None, None]
    gain_cloudy = rng.normal(1.0, 0.03, size=4)[:, None, None]
    optical = RasterSpec(4, H, W, "uint16", cfg.crs, t_opt, nodata=0)
    flags = RasterSpec(1, H, W, "uint8", cfg.crs, t_opt)
    with contextlib.ExitStack() as stack:  # the four files appear together, only when all are complete
        d_cloudy, d_free, d_mask, d_udm = (stack.enter_context(geotiff_writer(paths[k], spec, SCENE_LAYOUT))
                                           for k, spec in (("cloudy", optical), ("cloudfree", optical),
                                                           ("cloudmask", flags), ("udm", flags)))
        for d in (d_cloudy, d_free):
            d.descriptions = ("blue", "green", "red", "nir")  # before the pixels, as earlier versions did
        for r0 in range(0, H, cfg.strip):
            n = min(cfg.strip, H - r0)
            ys = (np.arange(r0, r0 + n) + 0.5) * res
            srng = np.random.default_rng([seed, 8, r0])
            ground = reflectance(landscape.sample(ys, xs), srng, landscape.water_tint)
            f = cloud_field(ys, xs)
            alpha = 0.95 * np.clip((f - t_cloud) / 0.5 + 0.5, 0.0, 1.0) ** 0.8
            texture = 1.0 + 0.12 * clouds.on_grid("tex", ys, xs)
            cloud_refl = np.asarray(CLOUD, float)[:, None, None] * texture[None]
            cloudy = (ground * gain_cloudy) * (1 - alpha[None]) + cloud_refl * alpha[None]
            valid_c = _footprint(ys, xs, cfg, 0.98)
            valid_f = _footprint(ys + 2 * res, xs - 3 * res, cfg, 0.97)
            win = Window(0, r0, W, n)
            d_cloudy.write(np.where(valid_c, to_uint16(cloudy), 0).astype(np.uint16), window=win)
            d_free.write(np.where(valid_f, to_uint16(ground * gain_free), 0).astype(np.uint16), window=win)
            mask = (alpha >= MASK_OPACITY) & valid_c
            d_mask.write(mask.astype(np.uint8)[None], window=win)
            udm = (~valid_c).astype(np.uint8) << UDM_NODATA_BIT | mask.astype(np.uint8) << UDM_CLOUD_BIT
            d_udm.write(udm[None], window=win)

    sar_db, landcover, t10 = _coarse_layers(landscape, cfg, seed)
    _write_reprojected(paths["sar"], sar_db, t10, cfg, "sar")
    _write_reprojected(paths["landcover"], landcover, t10, cfg, "landcover")
    meta = {"generator": "m3rcr.data.synthetic_scene", "seed": seed, "config": asdict(cfg), "biome": landscape.biome}
    (out / "scene.json").write_text(json.dumps(meta, indent=1))
    return paths


def _coarse_layers(landscape: Landscape, cfg: SceneConfig, seed: int) -> tuple[np.ndarray, np.ndarray, Affine]:
    """SAR dB (2, h, w) and WorldCover codes (1, h, w) on a 10 m grid in the optical CRS covering the scene."""
    res = cfg.optical_res
    h = math.ceil(cfg.height * res / 10.0) + 2
    w = math.ceil(cfg.width * res / 10.0) + 2
    sub = 3
    sar = np.empty((2, h, w))
    lc = np.empty((1, h, w), np.uint8)
    xs = (np.arange(w * sub) + 0.5) * (10.0 / sub) - 10.0
    rows = max(1, 4096 // w) * 10
    for r0 in range(0, h, rows):
        n = min(rows, h - r0)
        ys = (np.arange(r0 * sub, (r0 + n) * sub) + 0.5) * (10.0 / sub) - 10.0
        s = landscape.sample(ys, xs)
        sar[:, r0:r0 + n] = backscatter_db(s, np.random.default_rng([seed, 9, r0]), sub)
        lc[0, r0:r0 + n] = majority(s["code"], sub)
    x0, y0 = cfg.origin
    return sar, lc, Affine(10.0, 0, x0 - 10.0, 0, -10.0, y0 + 10.0)


def _write_reprojected(path: Path, array: np.ndarray, src_t: Affine, cfg: SceneConfig, kind: str) -> None:
    """Reproject a 10 m layer into the SAR CRS (SAR) or EPSG:4326 at 1/12000 degree (land cover) and write it."""
    src_crs = CRS.from_user_input(cfg.crs)
    dst_crs = CRS.from_user_input(cfg.sar_crs if kind == "sar" else "EPSG:4326")
    if kind == "sar":
        res = cfg.sar_res or (1e-4 if dst_crs.is_geographic else 10.0)
    else:
        res = 1 / 12000
    h, w = array.shape[-2:]
    if kind == "sar" and cfg.sar_cover < 1:
        keep = max(2, math.ceil(w * cfg.sar_cover))
        array = array[..., :keep]
        w = keep
    transform, width, height = calculate_default_transform(src_crs, dst_crs, w, h, *_bounds(src_t, h, w),
                                                          resolution=res)
    is_sar = kind == "sar"
    dst = np.full((array.shape[0], height, width), np.nan if is_sar else 0,
                  dtype=np.float32 if is_sar else np.uint8)
    src = array.astype(np.float32) if is_sar else array
    if is_sar:
        src = 10 ** (src / 10) if cfg.sar_units == "linear" else src
    reproject(src, dst, src_transform=src_t, src_crs=src_crs, dst_transform=transform, dst_crs=dst_crs,
              resampling=Resampling.bilinear if is_sar else Resampling.nearest,
              src_nodata=None, dst_nodata=np.nan if is_sar else 0)
    write_geotiff(path, dst, dst_crs.to_string(), transform, np.nan if is_sar else 0, SCENE_LAYOUT,
                  descriptions=("VV", "VH") if is_sar else ("WorldCover",))


def _bounds(t: Affine, h: int, w: int) -> tuple[float, float, float, float]:
    return t.c, t.f + t.e * h, t.c + t.a * w, t.f
