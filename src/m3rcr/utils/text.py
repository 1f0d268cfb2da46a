"""Numbers for people: formatting that never says more (or less) than the data."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable


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


def did_you_mean(key: str, allowed: Iterable[str]) -> str:
    """`` (did you mean 'sar_mode'?)`` with the allowed spelling closest to ``key``; empty when none is close."""
    close = difflib.get_close_matches(str(key), list(allowed), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def spelled(key: str, allowed: Iterable[str]) -> str:
    """``key`` quoted, with the closest allowed spelling when there is one: ``'sar_mod' (did you mean 'sar_mode'?)``."""
    return f"{key!r}{did_you_mean(key, allowed)}"
