"""SEN12MS-CR value conventions: the three published ways of scaling S2 DN and S1 dB to network inputs.

* ``default`` (UnCRtainTS): S2 clipped to [0, 10000] / 10000; S1 VV and VH clipped to [-25, 0] dB, to [0, 1].
* ``resnet`` (DSen2-CR): S2 clipped to [0, 10000] / 2000, i.e. [0, 5]; VV [-25, 0] dB and VH [-32.5, 0] dB,
  each to [0, 2].
* ``glfcr`` (GLF-CR, and M3R-CR's convention): S2 clipped to [0, 10000] / 10000; VV [-25, 0], VH [-32.5, 0],
  each to [0, 1].

NaN becomes 0 after scaling in every convention (the default's rule; the others do not say, and a NaN must not
reach a network). The metric protocol works on reflectance in [0, 1]: :attr:`Convention.reflectance_per_unit`
converts a network's output back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Sentinel-2 L1C bands in file order.
S2_BANDS: tuple[str, ...] = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
#: Sentinel-1 bands in file order.
S1_BANDS: tuple[str, ...] = ("VV", "VH")
#: L1C DN per unit of top-of-atmosphere reflectance.
S2_DN_SCALE = 10000.0
#: Band sets worth a name (``bands: rgbn`` in a configuration).
BAND_SETS: dict[str, tuple[str, ...]] = {"all": S2_BANDS, "rgbn": ("B2", "B3", "B4", "B8"), "rgb": ("B2", "B3", "B4")}


@dataclass(frozen=True)
class Convention:
    """One scaling convention: the S2 divisor, the S1 dB range of VV and VH, and the S1 output maximum."""

    name: str
    s2_divisor: float
    s1_db_range: tuple[tuple[float, float], tuple[float, float]]
    s1_max: float

    @property
    def reflectance_per_unit(self) -> float:
        """Reflectance of one unit of a scaled S2 value (0.2 for ``resnet``, 1 otherwise)."""
        return self.s2_divisor / S2_DN_SCALE

    def scale_s2(self, dn: np.ndarray) -> np.ndarray:
        """Raw L1C DN (bands, H, W) to network values (float32)."""
        out = np.clip(dn.astype(np.float32), 0.0, S2_DN_SCALE) / np.float32(self.s2_divisor)
        return np.nan_to_num(out, nan=0.0).astype(np.float32, copy=False)

    def scale_s1(self, db: np.ndarray) -> np.ndarray:
        """Sentinel-1 sigma0 in dB (2, H, W: VV, VH) to network values (float32)."""
        out = np.empty(db.shape, dtype=np.float32)
        for band, (lo, hi) in enumerate(self.s1_db_range):
            clipped = np.clip(db[band].astype(np.float32), lo, hi)
            out[band] = (clipped - lo) / (hi - lo) * self.s1_max
        return np.nan_to_num(out, nan=0.0)

    def to_dn(self, values: np.ndarray) -> np.ndarray:
        """Network S2 values back to L1C DN (float64, unclipped)."""
        return values.astype(np.float64) * self.s2_divisor


CONVENTIONS: dict[str, Convention] = {
    "default": Convention("default", 10000.0, ((-25.0, 0.0), (-25.0, 0.0)), 1.0),
    "resnet": Convention("resnet", 2000.0, ((-25.0, 0.0), (-32.5, 0.0)), 2.0),
    "glfcr": Convention("glfcr", 10000.0, ((-25.0, 0.0), (-32.5, 0.0)), 1.0),
}


def convention(name: str) -> Convention:
    """The convention called ``name``; an unknown name is a ValueError listing the known ones."""
    try:
        return CONVENTIONS[name]
    except KeyError:
        raise ValueError(f"unknown SEN12MS-CR preprocessing {name!r} (choose from {', '.join(CONVENTIONS)})") from None


def band_indices(bands: str | tuple[str, ...] | list[str] | None) -> tuple[int, ...]:
    """Positions in :data:`S2_BANDS` of a band selection: None or ``all`` (13 bands), a named set of
    :data:`BAND_SETS`, or band names such as ``["B2", "B3", "B4", "B8"]`` (any order, each once)."""
    if bands is None:
        bands = "all"
    if isinstance(bands, str):
        if bands.lower() not in BAND_SETS:
            raise ValueError(f"unknown band set {bands!r} (choose from {', '.join(BAND_SETS)}, or list band names)")
        bands = BAND_SETS[bands.lower()]
    names = [str(b).upper() for b in bands]
    unknown = [b for b in names if b not in S2_BANDS]
    if unknown or not names or len(set(names)) != len(names):
        problem = f"unknown band(s) {', '.join(unknown)}" if unknown else "each band once, at least one"
        raise ValueError(f"bands: {problem}; Sentinel-2 L1C bands are {', '.join(S2_BANDS)}")
    return tuple(S2_BANDS.index(b) for b in names)
