"""M3R-CR preprocessing (paper section V-A, public loader) and the land-cover class tables."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import numpy as np

from m3rcr.errors import DataError, DataWarning

#: Optical reflectance is stored as reflectance x 10000; values are clipped to [0, 10000].
OPTICAL_SCALE = 10000.0
#: Band names of the 4-band PlanetScope product, in file order.
OPTICAL_BANDS = ("blue", "green", "red", "nir")
#: SAR bands in file order and their clip ranges in dB, mapped linearly to [0, 1].
SAR_BANDS = ("VV", "VH")
SAR_DB_RANGE = {"VV": (-25.0, 0.0), "VH": (-32.5, 0.0)}

#: ESA WorldCover 2020 codes, names and official colours.
WORLDCOVER = {
    10: ("Tree cover", "#006400"),
    20: ("Shrubland", "#ffbb22"),
    30: ("Grassland", "#ffff4c"),
    40: ("Cropland", "#f096ff"),
    50: ("Built-up", "#fa0000"),
    60: ("Bare / sparse vegetation", "#b4b4b4"),
    70: ("Snow and ice", "#f0f0f0"),
    80: ("Permanent water bodies", "#0064c8"),
    90: ("Herbaceous wetland", "#0096a0"),
    95: ("Mangroves", "#00cf75"),
    100: ("Moss and lichen", "#fae6a0"),
}
#: WorldCover's no-data code.
WORLDCOVER_NODATA = 0
#: Level-1 (DeepGlobe) classes by id, with the colour used in figures.
LEVEL1_CLASSES = ("forest", "rangeland", "agriculture", "urban", "barren", "water", "unknown")
LEVEL1_COLORS = ("#006400", "#ffbb22", "#f096ff", "#fa0000", "#b4b4b4", "#0064c8", "#f0f0f0")
#: Level-1 id of each WorldCover code (the public loader's mapping).
LEVEL1_OF_CODE = {10: 0, 20: 1, 30: 1, 40: 2, 50: 3, 60: 4, 70: 6, 80: 5, 90: 5, 95: 6, 100: 6}
#: Level-1 id of the ``unknown`` class; WorldCover no-data also maps here.
LEVEL1_UNKNOWN = 6
#: Level 2 keeps the 11 WorldCover classes as ids 0..10 in code order; no-data becomes this id.
LEVEL2_NODATA = 255

NanFill = Literal["image", "band"]


_LEVELS = {
    1: (LEVEL1_CLASSES, LEVEL1_COLORS),
    2: (tuple(name for name, _ in WORLDCOVER.values()), tuple(color for _, color in WORLDCOVER.values())),
}


def _level(level: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if level not in _LEVELS:
        raise ValueError(f"land-cover level must be 1 or 2, got {level}")
    return _LEVELS[level]


def class_names(level: int) -> tuple[str, ...]:
    """Names of the land-cover ids of a level (1: DeepGlobe classes, 2: WorldCover classes)."""
    return _level(level)[0]


def class_colors(level: int) -> tuple[str, ...]:
    """Colours of the land-cover ids of a level, in id order."""
    return _level(level)[1]


def fill_nan(image: np.ndarray, where: str | Path, mode: NanFill = "image",
             file_image: np.ndarray | None = None) -> np.ndarray:
    """Replace NaN values of a (bands, H, W) image with the image's mean (the public loader's rule) or each band's.

    ``mode="image"`` is what the authors do: one mean over every band and pixel. A warning says how
    many values (and pixels) were filled, counted in ``file_image`` if given (the array as stored in
    the file, when ``image`` is a resampled version of it); an image with no valid value is an error.
    """
    if image.dtype.kind != "f":
        return image
    nan = np.isnan(image)
    if not nan.any():
        return image
    counted = nan if file_image is None else np.isnan(file_image)
    count, pixels = int(counted.sum()), int(counted.any(axis=0).sum())
    if nan.all() or (mode == "band" and nan.reshape(len(image), -1).all(axis=1).any()):
        raise DataError(where, "has no valid (non-NaN) pixels" + (" in a band" if mode == "band" else ""))
    image = image.copy()
    if mode == "image":
        image[nan] = np.nanmean(image)
    elif mode == "band":
        means = np.nanmean(image.reshape(len(image), -1), axis=1)
        image[nan] = np.broadcast_to(means[:, None, None], image.shape)[nan]
    else:
        raise ValueError(f"nan_fill must be 'image' or 'band', got {mode!r}")
    warnings.warn(f"{where}: filled {count} NaN value(s) in {pixels} pixel(s) with the {mode} mean", DataWarning,
                  stacklevel=2)
    return image


def normalize_optical(raw: np.ndarray) -> np.ndarray:
    """Reflectance x 10000 -> [0, 1]: clip every band to [0, 10000] and divide by 10000 (float32)."""
    return (np.clip(raw.astype(np.float64), 0.0, OPTICAL_SCALE) / OPTICAL_SCALE).astype(np.float32)


def normalize_sar(raw_db: np.ndarray) -> np.ndarray:
    """SAR in dB -> [0, 1]: clip VV to [-25, 0] and VH to [-32.5, 0], then rescale each linearly."""
    if raw_db.shape[0] != len(SAR_BANDS):
        raise ValueError(f"SAR must have {len(SAR_BANDS)} bands (VV, VH), got {raw_db.shape[0]}")
    lo = np.array([SAR_DB_RANGE[b][0] for b in SAR_BANDS])[:, None, None]
    hi = np.array([SAR_DB_RANGE[b][1] for b in SAR_BANDS])[:, None, None]
    return ((np.clip(raw_db.astype(np.float64), lo, hi) - lo) / (hi - lo)).astype(np.float32)


def denormalize_optical(x: np.ndarray) -> np.ndarray:
    """[0, 1] -> reflectance x 10000 (float64; round and cast as the output format needs)."""
    return np.asarray(x, dtype=np.float64) * OPTICAL_SCALE


def _lookup_table(level: int) -> np.ndarray:
    lut = np.full(256, -1, dtype=np.int64)
    if level == 1:
        for code, cid in LEVEL1_OF_CODE.items():
            lut[code] = cid
        lut[WORLDCOVER_NODATA] = LEVEL1_UNKNOWN
    elif level == 2:
        for cid, code in enumerate(WORLDCOVER):
            lut[code] = cid
        lut[WORLDCOVER_NODATA] = LEVEL2_NODATA
    else:
        raise ValueError(f"land-cover level must be 1 or 2, got {level}")
    return lut


_LUTS = {level: _lookup_table(level) for level in (1, 2)}


def landcover_ids(codes: np.ndarray, level: int, where: str | Path) -> np.ndarray:
    """WorldCover codes -> class ids (int64) of level 1 (0..6) or level 2 (0..10)."""
    if level not in _LUTS:
        raise ValueError(f"land-cover level must be 1 or 2, got {level}")
    if codes.dtype.kind == "f":
        if np.isnan(codes).any():
            raise DataError(where, "land cover has NaN pixels; expected WorldCover class codes")
        if (codes != np.round(codes)).any():
            raise DataError(where, "land cover has non-integer values; expected WorldCover class codes")
    codes_i = codes.astype(np.int64)
    out_of_range = (codes_i < 0) | (codes_i > 255)
    ids = _LUTS[level][np.clip(codes_i, 0, 255)]
    bad = out_of_range | (ids < 0)
    if bad.any():
        values = ", ".join(str(v) for v in np.unique(codes_i[bad])[:8])
        raise DataError(where, f"land cover has values that are not WorldCover codes: {values}")
    return ids


def cloud_cover(mask: np.ndarray) -> float:
    """Fraction of cloudy pixels of a 0/1 mask."""
    return float(np.count_nonzero(mask)) / mask.size if mask.size else 0.0


#: Cloud-cover bins of the evaluation protocol: [0, 20 %), ..., [80 %, 100 %].
CLOUD_COVER_BINS = ("0-20", "20-40", "40-60", "60-80", "80-100")


def cloud_cover_bin(fraction: float) -> int:
    """Index (0..4) of the cloud-cover bin of a fraction in [0, 1]; 1.0 belongs to the last bin."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"cloud cover must be in [0, 1], got {fraction}")
    return min(int(fraction * 5), 4)


def cover_bin(cover: float) -> int:
    """:func:`cloud_cover_bin` of a measured cover, clamped to [0, 1] first (rounding may step outside)."""
    return cloud_cover_bin(min(max(float(cover), 0.0), 1.0))


def cover_bin_label(cover: float) -> str:
    """The label (``"0-20"`` ... ``"80-100"``) of the bin of a measured cover."""
    return CLOUD_COVER_BINS[cover_bin(cover)]
