"""Numbers for people: formatting that never says more (or less) than the data."""

from __future__ import annotations

import math


def percent(fraction: float, decimals: int = 1) -> str:
    """``fraction`` as a percentage that never rounds a partial value to 0 % or 100 %.

    ``percent(0.9996)`` is ``"99.96 %"``, not ``"100.0 %"``: a scene with 0.04 % no-data is not complete.
    """
    value = 100.0 * float(fraction)
    if math.isnan(value):
        return "n/a"
    for places in range(decimals, 5):
        text = f"{value:.{places}f}"
        if (0.0 < value < 100.0 and float(text) in (0.0, 100.0)):
            continue
        return f"{text} %"
    return "< 0.0001 %" if value < 50 else "> 99.9999 %"
