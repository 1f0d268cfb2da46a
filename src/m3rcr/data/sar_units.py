"""Is this SAR raster really in the units it is declared in? One check for every place SAR is read.

Sentinel-1 sigma0 of land and water spans roughly -50 to +20 dB, i.e. linear power 1e-5 to 100, and
linear power is never negative. The two units are told apart by robust statistics of the finite,
non-no-data values (exact zeros are ignored: they are blackfill, not backscatter):

* dB: the median lies in [-50, +20] and at most 90 % of the values are positive (on land VV is
  mostly -20 to -5 dB and VH lower still; a tile of bright city or foreshortened slopes reaches
  half positive VV values, never 90 % of VV and VH together);
* linear power: the median lies in [1e-5, 1] (0 dB; VV and VH pooled) and at most 5 % of the values
  are negative (noise-floor corrections may leave a few).

A violation is a :class:`~m3rcr.errors.DataError` naming the file, the statistic seen and the flag
that declares the other unit; without it, linear SAR read as dB clips to a constant 0 dB and dB read
as linear power is almost all invalid (negative power).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from m3rcr.data.io import sample_bands
from m3rcr.errors import DataError

SarUnits = Literal["db", "linear"]
#: Plausible median backscatter of land and water in each unit.
DB_RANGE = (-50.0, 20.0)
LINEAR_RANGE = (1e-5, 1.0)
#: Largest share of positive values dB SAR may have (above it, it looks like linear power).
DB_MAX_POSITIVE = 0.9
#: Largest share of negative values linear power may have.
LINEAR_MAX_NEGATIVE = 0.05
#: Largest share of values beyond the physical range (below -50 dB, above linear power 100) a real image has.
MAX_FILL = 0.01
#: Fewer usable values than this say nothing reliable about the units: no verdict.
MIN_VALUES = 16
#: What to do about it, by the units the data look like (the command-line flag by default).
CLI_ADVICE: Mapping[str, str] = {"linear": "if it holds linear power, pass --sar-units linear",
                                 "db": "if it holds dB, pass --sar-units db (the default)"}


@dataclass(frozen=True)
class SarValueStats:
    """Robust statistics of SAR values (finite, not no-data, not exactly zero), all bands pooled."""

    count: int
    median: float
    positive: float  #: share of values > 0
    negative: float  #: share of values < 0
    unit_interval: float  #: share of values in (0, 1]
    below_db_floor: float = 0.0  #: share below -50 (as dB: no backscatter is that dark; a fill value?)
    above_linear_ceiling: float = 0.0  #: share above 100 (as linear power: +20 dB; a fill value?)
    minimum: float = math.nan
    maximum: float = math.nan

    def describe(self) -> str:
        """e.g. ``median 0.031, 99.0% in (0, 1], 0.0% negative`` (of the finite, non-zero values)."""
        return f"median {self.median:.3g}, {self.unit_interval:.1%} in (0, 1], {self.negative:.1%} negative"


def sar_value_stats(values: np.ndarray, nodata: float | None = None) -> SarValueStats | None:
    """Statistics of the usable values, or None when fewer than :data:`MIN_VALUES` remain."""
    v = np.asarray(values, dtype=np.float64).ravel()
    keep = np.isfinite(v) & (v != 0)
    if nodata is not None and not math.isnan(nodata):
        keep &= v != nodata
    v = v[keep]
    if v.size < MIN_VALUES:
        return None
    return SarValueStats(count=int(v.size), median=float(np.median(v)), positive=float(np.mean(v > 0)),
                         negative=float(np.mean(v < 0)), unit_interval=float(np.mean(v <= 1.0) - np.mean(v <= 0)),
                         below_db_floor=float(np.mean(v < DB_RANGE[0])),
                         above_linear_ceiling=float(np.mean(v > 10 ** (DB_RANGE[1] / 10))),
                         minimum=float(v.min()), maximum=float(v.max()))


def sar_units_problem(stats: SarValueStats, units: SarUnits, fill: bool = True
                      ) -> tuple[str, SarUnits | None] | None:
    """Why values with ``stats`` cannot be in ``units``, and the units they look like (None: neither); None if fine.

    ``fill``: also refuse more than :data:`MAX_FILL` of values beyond the physical range (an undeclared fill).
    """
    if units == "db":
        lo, hi = DB_RANGE
        if stats.positive > DB_MAX_POSITIVE:
            return (f"declared as dB looks like linear power: {stats.positive:.1%} of its values are positive "
                    f"({stats.describe()}), but dB backscatter of land and water is mostly negative"), "linear"
        if not lo <= stats.median <= hi:
            return (f"declared as dB has a median of {stats.median:.3g} dB, outside the plausible backscatter "
                    f"range of land and water ({lo:g} to +{hi:g} dB; {stats.describe()})"), None
        if fill and stats.below_db_floor > MAX_FILL:
            return (f"has {stats.below_db_floor:.1%} of its values below {lo:g} dB (down to {stats.minimum:.6g}), "
                    "darker than any backscatter: an undeclared fill value? Declare it as no-data (e.g. "
                    f"gdal_edit.py -a_nodata {stats.minimum:.6g} FILE)"), None
        return None
    if units == "linear":
        lo, hi = LINEAR_RANGE
        if stats.negative > 0.5:
            return (f"declared as linear power looks like dB: {stats.negative:.1%} of its values are negative "
                    f"({stats.describe()}), but power is never negative"), "db"
        if stats.negative > LINEAR_MAX_NEGATIVE:
            return (f"declared as linear power has {stats.negative:.1%} negative values ({stats.describe()}), "
                    "but power is never negative"), None
        if not lo <= stats.median <= hi:
            return (f"declared as linear power has a median of {stats.median:.3g}, outside the plausible range "
                    f"of sigma0 ({lo:g} to {hi:g}, i.e. -50 to 0 dB; {stats.describe()})"), None
        if fill and stats.above_linear_ceiling > MAX_FILL:
            return (f"has {stats.above_linear_ceiling:.1%} of its values above linear power 100 (+20 dB; up to "
                    f"{stats.maximum:.6g}), brighter than any backscatter of land and water: an undeclared fill "
                    f"value? Declare it as no-data (e.g. gdal_edit.py -a_nodata {stats.maximum:.6g} FILE)"), None
        return None
    raise ValueError(f"SAR units must be 'db' or 'linear', got {units!r}")


def check_sar_units(values: np.ndarray, units: SarUnits, where: str | Path, *, nodata: float | None = None,
                    advice: Mapping[str, str] = CLI_ADVICE, what: str = "SAR", fill: bool = True
                    ) -> SarValueStats | None:
    """Raise a :class:`DataError` naming ``where`` if ``values`` cannot be backscatter in ``units``.

    ``values`` are SAR values as stored (any shape; NaN, ``nodata`` and exact zeros are ignored).
    ``advice`` maps the units the data look like to what the user should do (by default the
    ``--sar-units`` flag). Returns the statistics (None when too few values to judge).
    """
    stats = sar_value_stats(values, nodata)
    if stats is None:
        return None
    found = sar_units_problem(stats, units, fill)
    if found is not None:
        problem, looks = found
        hint = advice.get(looks) if looks else None
        hint = hint or "check that it holds calibrated Sentinel-1 sigma0 (VV, VH)"
        raise DataError(where, f"{what} {problem}; {hint}")
    return stats


def check_sar_raster(src: Any, bands: Sequence[int], units: SarUnits, *, advice: Mapping[str, str] = CLI_ADVICE,
                     what: str = "SAR", window: Any = None) -> SarValueStats | None:
    """:func:`check_sar_units` on a subsample of an open raster (of ``window`` if given, e.g. the part
    under a scene; see :func:`m3rcr.data.io.sample_bands`): it runs before any tile is processed, in
    bounded memory."""
    values = sample_bands(src, bands, window=window)
    return check_sar_units(values, units, src.name, nodata=None, advice=advice, what=what)
