"""Are these optical values surface reflectance once scaled? One check for every place optical scenes are read.

Surface reflectance of land, water, snow and cloud lies in about [0, 1] (the brightest cloud and snow
reach 1.0-1.3; atmospheric correction leaves a few slightly negative values). After ``reflectance = (value +
offset) / scale`` a real image therefore has

* almost no values above 1.5 (else the scale or offset is wrong: Landsat's ``DN x 0.0000275 - 0.2``
  given as ``--scale 0.0000275 --offset -0.2`` puts every pixel near 10^4),
* almost no values below -0.05 (an offset applied twice),
* some values above 0.5 % (a whole image darker than that is reflectance already in [0, 1] read with
  the default scale of 10000), and
* a data type that can hold reflectance 0.3 at all (8-bit display products, e.g. PlanetScope
  "visual", hold at most 255 / 10000).

Bands tagged as alpha (transparency) are refused too; a file whose tags say red, green, blue where blue,
green, red are read gets a warning (tags are not always right).
A violation is a :class:`~m3rcr.errors.DataError` naming the file, the statistic seen and what to pass.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.enums import ColorInterp

from m3rcr.data.io import sample_bands
from m3rcr.errors import DataError, DataWarning

#: Largest share of valid values above :data:`HIGH` or below :data:`LOW` a real image has.
MAX_OUTSIDE = 0.05
HIGH = 1.5
LOW = -0.05
#: A real image has values above this reflectance (its 99th percentile is higher).
DARKEST_P99 = 0.005
#: The brightest reflectance the data type must be able to hold.
MIN_REPRESENTABLE = 0.3
#: Fewer values than this say nothing reliable: no verdict.
MIN_VALUES = 64


@dataclass(frozen=True)
class ReflectanceStats:
    """Statistics of the valid values of an optical image after scaling, all picked bands pooled."""

    count: int
    median: float
    p99: float
    above: float  #: share above :data:`HIGH`
    below: float  #: share below :data:`LOW`
    raw_median: float  #: the median as stored

    def describe(self) -> str:
        """e.g. ``median value 812 -> reflectance 0.0812; 99th percentile 0.31``."""
        return (f"median value {self.raw_median:.6g} -> reflectance {self.median:.4g}; 99th percentile "
                f"{self.p99:.4g}; {self.above:.1%} above {HIGH:g}, {self.below:.1%} below {LOW:g}")


def reflectance_stats(values: np.ndarray, scale: float, offset: float) -> ReflectanceStats | None:
    """Statistics of the finite values (no-data already NaN), or None when too few remain."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size < MIN_VALUES:
        return None
    refl = (v + offset) / scale
    return ReflectanceStats(count=int(v.size), median=float(np.median(refl)), p99=float(np.percentile(refl, 99)),
                            above=float(np.mean(refl > HIGH)), below=float(np.mean(refl < LOW)),
                            raw_median=float(np.median(v)))


def reflectance_problem(stats: ReflectanceStats, scale: float, offset: float) -> tuple[str, str] | None:
    """Why values with ``stats`` cannot be reflectance x ``scale`` - ``offset``, and what to pass instead
    (command-line flags); None if they can."""
    conv = f"reflectance = (value + offset) / scale with scale {scale:g}, offset {offset:g}"
    if stats.above > MAX_OUTSIDE:
        problem = (f"{stats.above:.1%} of the valid pixels are above reflectance {HIGH:g} ({stats.describe()}; "
                   f"{conv}): the scale or offset does not fit the file")
        return problem, ("for a product documented as 'reflectance = DN x a + b' pass --scale 1/a --offset b/a "
                         "(Landsat Collection 2: --scale 36363.64 --offset -7272.73)")
    if stats.below > MAX_OUTSIDE:
        problem = (f"{stats.below:.1%} of the valid pixels are below reflectance {LOW:g} ({stats.describe()}; "
                   f"{conv}): the offset does not fit the file")
        return problem, "check --offset (applied twice?)"
    if stats.p99 < DARKEST_P99:
        hint = ("it looks like reflectance already in [0, 1]: pass --scale 1" if 0 < stats.raw_median <= 1.5
                else "check --scale and --offset")
        problem = (f"99 % of the valid pixels are darker than reflectance {DARKEST_P99:g} ({stats.describe()}; "
                   f"{conv}), which no real image is")
        return problem, hint
    return None


def _tagged(src: Any, bands: Sequence[int]) -> list[ColorInterp]:
    try:
        interp = list(src.colorinterp)
    except Exception:
        return [ColorInterp.undefined] * len(bands)
    return [interp[b - 1] if b - 1 < len(interp) else ColorInterp.undefined for b in bands]


@dataclass(frozen=True)
class OpticalAdvice:
    """What :func:`check_optical_raster` tells the user to change, in the words of the caller's interface."""

    flags: str = "--bands / --scale / --offset"  #: the settings of bands, scale and offset
    fix: str | None = None  #: replaces the advice on the scale (for commands without ``--scale``)


def check_optical_raster(src: Any, bands: Sequence[int], scale: float, offset: float, *, what: str = "optical image",
                         where: str | Path | None = None, advice: OpticalAdvice | None = None,
                         window: Any = None) -> ReflectanceStats | None:
    """Raise a :class:`DataError` if the picked ``bands`` (blue, green, red, NIR) of an open raster cannot be
    reflectance x ``scale`` - ``offset``; checked on a subsample, before any pixel is processed.

    ``advice`` says which settings to change (default: ``--bands / --scale / --offset``).
    """
    advice = advice or OpticalAdvice()
    flags, fix = advice.flags, advice.fix
    where = where if where is not None else src.name
    tags = _tagged(src, bands)
    for role, band, tag in zip(("blue", "green", "red", "NIR"), bands, tags):
        if tag == ColorInterp.alpha:
            raise DataError(where, f"{what}: band {band}, taken as {role}, is an alpha (transparency) band, not "
                                   f"data; pick the blue, green, red and NIR bands with {flags.split(' /')[0]}")
    if len(tags) >= 3 and tags[0] == ColorInterp.red and tags[2] == ColorInterp.blue:
        # a warning: some writers tag every 3+ band file as RGB whatever it holds (PHOTOMETRIC=RGB)
        warnings.warn(f"{where}: {what}: band {bands[0]}, taken as blue, is tagged red and band {bands[2]}, taken "
                      f"as red, is tagged blue; if the tags are right, pass {flags.split(' /')[0]} in the order "
                      "blue, green, red, NIR", DataWarning, stacklevel=2)
    dtype = np.dtype(src.dtypes[bands[0] - 1])
    if dtype.kind in "ui":
        brightest = (np.iinfo(dtype).max + offset) / scale
        if brightest < MIN_REPRESENTABLE:
            raise DataError(where, f"{what} is {dtype.name}: with scale {scale:g} and offset {offset:g} its values "
                                   f"reach reflectance {brightest:.3g} at most, so it cannot hold reflectance "
                                   "(an 8-bit display product, e.g. a 'visual' image?); use the surface "
                                   f"reflectance product{'' if fix else f', or give {flags} matching the file'}")
    # 256 x 256 x 4 values fix the percentiles well enough, in a few MB whatever the scene's size
    stats = reflectance_stats(sample_bands(src, bands, max_side=256, window=window), scale, offset)
    if stats is not None:
        found = reflectance_problem(stats, scale, offset)
        if found is not None:
            problem, hint = found
            raise DataError(where, f"{what}: {problem}; {fix or hint}")
    return stats
