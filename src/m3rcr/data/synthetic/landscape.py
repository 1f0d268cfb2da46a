"""The synthetic landscape: land cover, optical spectra, SAR backscatter and clouds.

A :class:`Landscape` is a continuous scene in ground coordinates, so the 3 m optical grid, the 10 m
SAR and land-cover grids and neighbouring tiles all sample the same ground:

* land cover (:meth:`Landscape.sample`): crop and grass parcels, forest, rivers and lakes with wetland
  fringes, urban blocks, bare ground, shrubland, snow in winter, as WorldCover codes; :func:`majority`
  turns 3x3 sub-samples into one 10 m pixel.
* optical (:func:`reflectance`): top-of-atmosphere reflectance x 10000 per class (:data:`REFLECTANCE`)
  with parcel, row, crown and roof texture; NDVI below 0 on water and above 0.4 on vegetation.
* SAR (:func:`backscatter_db`): VV/VH sigma0 in dB per class (:data:`BACKSCATTER_DB`), area-averaged
  over each 10 m pixel, with multiplicative speckle and strong point scatterers in built-up areas.
* clouds (:func:`tile_clouds`): haze to opaque, with shadows and a blocky UDM-like mask.

Every function draws from the ``rng`` it is given, in a fixed order: the same seed gives the same data.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import gaussian_filter

SEASONS = ("spring", "summer", "fall", "winter")

# WorldCover codes used below
TREE, SHRUB, GRASS, CROP, BUILT, BARE, SNOW, WATER, WETLAND, MANGROVE = 10, 20, 30, 40, 50, 60, 70, 80, 90, 95

# Mean TOA reflectance x 10000 (blue, green, red, NIR) per land-cover code.
REFLECTANCE = {
    TREE: (260, 450, 300, 2900),
    SHRUB: (520, 760, 760, 2350),
    GRASS: (450, 760, 600, 2800),
    CROP: (350, 650, 420, 3500),  # green crop; fallow parcels blend towards BARE_SOIL
    BUILT: (1150, 1200, 1250, 1500),
    BARE: (1400, 1700, 2100, 2600),
    SNOW: (8200, 8100, 7900, 7000),
    WATER: (520, 560, 360, 200),
    WETLAND: (360, 560, 450, 1700),
    MANGROVE: (250, 450, 280, 2600),
}
BARE_SOIL = (1100, 1300, 1650, 2100)
ROAD = (800, 880, 960, 1150)
CLOUD = (5600, 5700, 5900, 6200)

# Mean sigma0 in dB (VV, VH) per land-cover code.
BACKSCATTER_DB = {
    TREE: (-7.5, -13.5),
    SHRUB: (-9.5, -16.5),
    GRASS: (-11.0, -18.0),
    CROP: (-10.5, -17.0),
    BUILT: (-4.0, -11.0),
    BARE: (-15.0, -24.0),
    SNOW: (-14.0, -21.0),
    WATER: (-22.0, -28.5),
    WETLAND: (-13.0, -20.0),
    MANGROVE: (-8.0, -14.0),
}

# Landscape recipes: fractions of forest, bare ground, urban area and lakes; river probability;
# probabilities of parcel types (crop, grass, shrub).
BIOMES = {
    "agricultural": dict(forest=0.15, bare=0.03, urban=0.06, lake=0.03, river=0.5, parcels=(0.75, 0.2, 0.05)),
    "forest": dict(forest=0.6, bare=0.02, urban=0.02, lake=0.08, river=0.5, parcels=(0.2, 0.6, 0.2)),
    "urban": dict(forest=0.08, bare=0.05, urban=0.55, lake=0.03, river=0.6, parcels=(0.4, 0.5, 0.1)),
    "arid": dict(forest=0.02, bare=0.45, urban=0.05, lake=0.02, river=0.3, parcels=(0.25, 0.25, 0.5)),
    "wetland": dict(forest=0.25, bare=0.02, urban=0.03, lake=0.25, river=0.7, parcels=(0.3, 0.6, 0.1)),
    "mixed": dict(forest=0.25, bare=0.1, urban=0.15, lake=0.05, river=0.5, parcels=(0.5, 0.35, 0.15)),
}



# --------------------------------------------------------------------------- smooth random fields
def _catmull_rom_matrix(pos: np.ndarray, n: int, cell: float) -> np.ndarray:
    """Weights (len(pos), n) interpolating a lattice of spacing ``cell`` at positions ``pos`` (metres)."""
    t = np.clip(pos / cell, 0, n - 1 - 1e-9)
    i = np.floor(t).astype(np.int64)
    f = t - i
    w = np.stack([
        ((-f + 2) * f - 1) * f / 2,
        ((3 * f - 5) * f * f + 2) / 2,
        ((-3 * f + 4) * f + 1) * f / 2,
        (f - 1) * f * f / 2,
    ], axis=1)
    m = np.zeros((len(pos), n))
    rows = np.arange(len(pos))
    for k in range(4):
        m[rows, np.clip(i + k - 1, 0, n - 1)] += w[:, k]  # one entry per row: no duplicate indices
    return m


class SmoothField:
    """Smooth random fields on a lattice over the AOI, evaluated exactly on any regular grid.

    ``cells`` maps a field's name to its lattice spacing in metres; :meth:`on_grid` evaluates one field.
    """

    def __init__(self, rng: np.random.Generator, extent: float, cells: dict[str, float]) -> None:
        self.cells = cells
        self.lattices = {name: rng.standard_normal((int(extent / c) + 4,) * 2) for name, c in cells.items()}

    def on_grid(self, name: str, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Field ``name`` on the grid ``ys`` x ``xs`` (1-D, metres): an (len(ys), len(xs)) array."""
        lat, cell = self.lattices[name], self.cells[name]
        wy = _catmull_rom_matrix(ys + cell, lat.shape[0], cell)
        wx = _catmull_rom_matrix(xs + cell, lat.shape[1], cell)
        return wy @ lat @ wx.T


def _threshold_for_fraction(values: np.ndarray, fraction: float) -> float:
    """Threshold t such that ``values > t`` holds for ``fraction`` of the values."""
    if fraction <= 0:
        return math.inf
    return float(np.quantile(values, 1.0 - min(fraction, 1.0)))


# --------------------------------------------------------------------------- the scene of one AOI
class Landscape:
    """A landscape in AOI ground coordinates (x east, y south, metres from the AOI's north-west corner).

    Drawn from ``rng`` for a ``season``: a biome of :data:`BIOMES`, then parcels, urban blocks, lakes, a
    river and snow. :meth:`calibrate` fixes the class fractions once; :meth:`sample` then gives the land
    cover and per-pixel attributes on any regular grid, so every sensor grid sees the same ground.
    """

    def __init__(self, rng: np.random.Generator, season: str, extent: float) -> None:
        self.season = season
        self.biome = str(rng.choice(list(BIOMES)))
        b = BIOMES[self.biome]
        scale = rng.uniform(0.6, 1.4, size=4)
        self.fractions = dict(forest=b["forest"] * scale[0], bare=b["bare"] * scale[1],
                              urban=b["urban"] * scale[2], lake=b["lake"] * scale[3])
        self.snow = season == "winter" and rng.random() < 0.35
        self.snow_fraction = rng.uniform(0.2, 0.6)
        self.field = SmoothField(rng, extent + 400, dict(
            forest=120.0, bare=150.0, urban=220.0, lake=160.0, snow=250.0, bright=90.0, moist=200.0))
        # parcels: a rotated grid with jittered rows, per-parcel attributes from lookup tables
        self.parcel_angle = rng.uniform(0, np.pi)
        self.parcel_size = (rng.uniform(50, 160), rng.uniform(40, 120))
        self.row_jitter = rng.uniform(0, self.parcel_size[0], size=97)
        self.parcel_type = rng.choice([CROP, GRASS, SHRUB], p=b["parcels"], size=(97, 97))
        self.parcel_green = np.where(rng.random((97, 97)) < 0.85, rng.uniform(0.55, 1.0, (97, 97)),
                                     rng.uniform(0.0, 0.35, (97, 97)))
        self.parcel_db = rng.normal(0.0, 1.2, (97, 97))
        self.row_period = rng.uniform(6, 14)
        # urban blocks
        self.block_angle = self.parcel_angle + rng.uniform(-0.3, 0.3)
        self.block_size = (rng.uniform(30, 70), rng.uniform(30, 70))
        self.street = rng.uniform(6, 12)
        self.roof = rng.uniform(0.6, 1.6, (97, 97))
        self.roof_red = rng.random((97, 97)) < 0.3
        # a river: a sine-wave centre line across the AOI
        self.river = rng.random() < b["river"]
        self.river_angle = rng.uniform(0, np.pi)
        self.river_params = (rng.uniform(20, 90), rng.uniform(250, 700), rng.uniform(0, 2 * np.pi),
                             rng.uniform(0.2, 0.8) * extent, rng.uniform(10, 40))
        self.water_tint = rng.uniform(0.8, 1.3)
        self._thresholds: dict[str, float] | None = None

    def calibrate(self, ys: np.ndarray, xs: np.ndarray) -> None:
        """Fix the field thresholds that give the recipe's class fractions, from one reference grid."""
        f = self.fractions
        self._thresholds = {
            name: _threshold_for_fraction(self.field.on_grid(name, ys, xs), f.get(name, 0.0))
            for name in ("forest", "bare", "urban", "lake")
        }
        self._thresholds["snow"] = _threshold_for_fraction(self.field.on_grid("snow", ys, xs), self.snow_fraction) \
            if self.snow else math.inf

    def sample(self, ys: np.ndarray, xs: np.ndarray) -> dict[str, np.ndarray]:
        """Classes and per-pixel attributes on the regular grid ``ys`` x ``xs`` (1-D, metres)."""
        assert self._thresholds is not None, "calibrate() first"
        th = self._thresholds
        Y, X = np.meshgrid(ys, xs, indexing="ij")
        # parcels
        ca, sa = math.cos(self.parcel_angle), math.sin(self.parcel_angle)
        u, v = X * ca + Y * sa, -X * sa + Y * ca
        iv = np.floor(v / self.parcel_size[1]).astype(np.int64) % 97
        iu = np.floor((u + self.row_jitter[iv]) / self.parcel_size[0]).astype(np.int64) % 97
        code = self.parcel_type[iu, iv].astype(np.uint8)
        green = self.parcel_green[iu, iv]
        extra_db = self.parcel_db[iu, iv]
        rows = 0.5 + 0.5 * np.sin(2 * np.pi * u / self.row_period)
        texture = np.where(code == CROP, rows, 0.0)
        material = np.zeros(Y.shape, np.uint8)  # 0 natural, 1 roof, 2 road
        # forest, bare ground
        forest = self.field.on_grid("forest", ys, xs) > th["forest"]
        code[forest] = TREE
        bare = self.field.on_grid("bare", ys, xs) > th["bare"]
        code[bare & ~forest] = BARE
        # urban blocks: the whole block area is built-up in WorldCover, roofs and streets differ optically
        urban = self.field.on_grid("urban", ys, xs) > th["urban"]
        cb, sb = math.cos(self.block_angle), math.sin(self.block_angle)
        bu, bv = X * cb + Y * sb, -X * sb + Y * cb
        bw, bh = self.block_size
        in_street = ((bu % bw) < self.street) | ((bv % bh) < self.street)
        code[urban] = BUILT
        material[urban] = np.where(in_street[urban], 2, 1)
        roof_id = (np.floor(bu / bw).astype(np.int64) % 97, np.floor(bv / bh).astype(np.int64) % 97)
        roof_gain = self.roof[roof_id]
        roof_red = self.roof_red[roof_id]
        # lakes with a wetland fringe, and the river
        lake_f = self.field.on_grid("lake", ys, xs)
        water = lake_f > th["lake"]
        fringe = (lake_f > th["lake"] - 0.25) & ~water & ~urban
        if self.river:
            amp, wavelength, phase, offset, width = self.river_params
            cr, sr = math.cos(self.river_angle), math.sin(self.river_angle)
            ru, rv = X * cr + Y * sr, -X * sr + Y * cr
            centre = offset + amp * np.sin(2 * np.pi * ru / wavelength + phase)
            water |= np.abs(rv - centre) < width / 2
        wet_code = MANGROVE if self.biome == "wetland" and self.season == "summer" else WETLAND
        code[fringe] = wet_code
        code[water] = WATER
        material[water | fringe] = 0
        if self.snow:
            snow = (self.field.on_grid("snow", ys, xs) > th["snow"]) & ~water & ~urban
            code[snow] = SNOW
        return dict(code=code, green=green, extra_db=extra_db, texture=texture, material=material,
                    roof_gain=roof_gain, roof_red=roof_red, bright=self.field.on_grid("bright", ys, xs),
                    moist=self.field.on_grid("moist", ys, xs))


def per_class(code: np.ndarray, table: dict[int, tuple[float, ...]]) -> np.ndarray:
    """(bands, H, W) float64: each pixel gets its land-cover code's values from ``table`` (0 if absent)."""
    lut = np.zeros((256, len(next(iter(table.values())))))
    for c, values in table.items():
        lut[c] = values
    return np.moveaxis(lut[code], -1, 0)


def reflectance(s: dict[str, np.ndarray], rng: np.random.Generator, water_tint: float) -> np.ndarray:
    """Ground reflectance x 10000, (4, H, W) float64, from a scene sample on the optical grid."""
    code = s["code"]
    refl = per_class(code, REFLECTANCE)
    # crops and grass: greenness blends green vegetation with bare soil
    veg = (code == CROP) | (code == GRASS)
    g = s["green"][veg]
    refl[:, veg] = refl[:, veg] * g + np.asarray(BARE_SOIL, float)[:, None] * (1 - g)
    # urban materials
    roof = s["material"] == 1
    roof_color = np.where(s["roof_red"][roof], np.array([[900], [950], [1500], [1800]]),
                          np.array([[1300], [1350], [1400], [1650]]))
    refl[:, roof] = roof_color * s["roof_gain"][roof]
    road = s["material"] == 2
    refl[:, road] = np.asarray(ROAD, float)[:, None]
    water = code == WATER
    refl[:3, water] *= water_tint
    # texture: crop rows, tree crowns, fine grain, large-scale brightness
    H, W = code.shape
    grain = gaussian_filter(rng.standard_normal((H, W)), 1.0) * 2.5
    crowns = np.where(code == TREE, gaussian_filter(rng.standard_normal((H, W)), 1.3) * 4.0, 0.0)
    gain = 1.0 + 0.06 * grain + 0.25 * np.clip(crowns, -1.5, 1.5) + 0.06 * s["bright"] - 0.08 * s["texture"]
    gain = np.where(water, 1.0 + 0.02 * grain, gain)
    refl *= np.clip(gain, 0.5, 1.6)[None]
    return gaussian_filter(refl, sigma=(0, 0.5, 0.5))  # sensor point-spread function


def backscatter_db(s: dict[str, np.ndarray], rng: np.random.Generator, subsample: int) -> np.ndarray:
    """SAR sigma0 in dB (2, h, w) from a scene sample on a grid ``subsample`` times finer than the SAR grid."""
    code = s["code"]
    db = per_class(code, BACKSCATTER_DB)
    veg = (code == CROP) | (code == GRASS) | (code == SHRUB)
    db[:, veg] += s["extra_db"][veg] + 3.0 * (s["green"][veg] - 0.6)
    db += 1.0 * s["moist"]  # soil moisture and terrain
    roads = s["material"] == 2
    db[:, roads] -= 6.0
    linear = 10 ** (db / 10)
    H, W = code.shape
    n = subsample
    linear = linear.reshape(2, H // n, n, W // n, n).mean(axis=(2, 4))  # each 10 m pixel averages its ground
    built = (code == BUILT).reshape(H // n, n, W // n, n).mean(axis=(1, 3))
    bright = rng.random(built.shape) < 0.12 * built  # corner reflectors in built-up areas
    linear[:, bright] *= 10 ** (rng.uniform(0.8, 1.5, int(bright.sum())) )
    looks = 4.4
    linear *= rng.gamma(looks, 1.0 / looks, size=linear.shape)  # multiplicative speckle
    return 10 * np.log10(linear)


def majority(code: np.ndarray, n: int) -> np.ndarray:
    """Most frequent code in each n x n block (ties go to the smaller code)."""
    H, W = code.shape
    values = np.unique(code)
    counts = np.stack([(code == v).reshape(H // n, n, W // n, n).sum(axis=(1, 3)) for v in values])
    return values[np.argmax(counts, axis=0)].astype(np.uint8)


def tile_clouds(rng: np.random.Generator, size: int, coverage: float, res: float) -> dict[str, np.ndarray]:
    """Clouds over a ``size`` x ``size`` tile of ``res`` m pixels: opacity ``alpha`` (H, W), a blocky UDM-like
    ``mask`` with exactly the requested block ``coverage``, cloud ``texture``, cast ``shadow`` and ``thick``."""
    xs = (np.arange(size) + 0.5) * res
    field = SmoothField(rng, size * res + 400, dict(c1=300.0, c2=150.0, c3=70.0, c4=35.0, c5=17.0, tex=40.0))
    f = sum(w * field.on_grid(n, xs, xs)
            for n, w in (("c1", 1.0), ("c2", 0.5), ("c3", 0.25), ("c4", 0.15), ("c5", 0.08)))
    block = 5  # UDM flags come in 5-pixel blocks
    nb = size // block
    fb = f[: nb * block, : nb * block].reshape(nb, block, nb, block).mean(axis=(1, 3))
    n_cloudy = round(coverage * fb.size)
    order = np.argsort(fb, axis=None)[::-1]
    mask_b = np.zeros(fb.size, bool)
    mask_b[order[:n_cloudy]] = True
    mask = np.zeros((size, size), bool)
    mask[: nb * block, : nb * block] = np.repeat(np.repeat(mask_b.reshape(nb, nb), block, 0), block, 1)
    t = fb.flat[order[n_cloudy - 1]] if n_cloudy else fb.max() + 1.0
    thick = rng.random() < 0.75
    alpha_max = rng.uniform(0.75, 1.0) if thick else rng.uniform(0.25, 0.6)
    soft = rng.uniform(0.3, 0.9)  # width of the cloud edge, in units of the field
    alpha = alpha_max * np.clip((f - t) / soft + 0.5, 0.0, 1.0) ** 0.8
    haze = rng.uniform(0.0, 0.08) * np.clip(field.on_grid("tex", xs, xs) * 0.5 + 0.5, 0, 1)
    alpha = np.clip(alpha + haze * (1 - alpha), 0.0, 1.0)
    texture = 1.0 + 0.12 * field.on_grid("tex", xs, xs) + 0.1 * (f - f.mean())
    if thick and n_cloudy:
        dy, dx = rng.integers(-20, 21, size=2)
        shifted = np.roll(alpha, (int(dy), int(dx)), axis=(0, 1))
        shadow = 1.0 - 0.55 * shifted * (1.0 - alpha)
    else:
        shadow = np.ones_like(alpha)
    return dict(alpha=alpha, mask=mask, texture=texture, shadow=shadow, thick=np.array(thick))


def to_uint16(x: np.ndarray) -> np.ndarray:
    """Round reflectance x 10000 to uint16; 0 is reserved for no-data."""
    return np.clip(np.round(x), 1, 65535).astype(np.uint16)
