"""Which split every AOI goes to."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from m3rcr.data.build.manifest import SceneSet, Split
from m3rcr.errors import DataError


def assign_splits(scenes: Sequence[SceneSet], test_fraction: float = 0.2, seed: int = 0) -> dict[str, Split]:
    """The split of every AOI name, so that no AOI is in both splits.

    An AOI is identified by its ``aoi`` name alone, whatever the season: the same place seen in two
    seasons must not be trained on and tested on. AOIs with an explicit ``split`` keep it; the others
    are shuffled with ``seed`` and ``round(test_fraction * k)`` of them go to test, clamped so that,
    with two or more of them and a positive fraction, each split gets at least one.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test fraction must be in [0, 1), got {test_fraction} (put scene sets in test with "
                         "'split: test' instead)")
    fixed: dict[str, tuple[Split, str]] = {}
    for s in scenes:
        if s.split is None:
            continue
        if s.aoi in fixed and fixed[s.aoi][0] != s.split:
            other_split, other = fixed[s.aoi]
            where = s.source or s.cloudy
            raise DataError(where, f"AOI {s.aoi!r} is put in {s.split} here but in {other_split} by "
                                   f"{other or 'another scene set'}; an AOI must stay in one split")
        fixed[s.aoi] = (s.split, s.source)
    out: dict[str, Split] = {aoi: split for aoi, (split, _) in fixed.items()}
    free = sorted({s.aoi for s in scenes} - set(fixed))
    k = len(free)
    n_test = round(test_fraction * k)
    if k >= 2 and test_fraction > 0:
        n_test = min(max(n_test, 1), k - 1)
    order = np.random.default_rng([seed, 0x5EED]).permutation(k)
    for rank, i in enumerate(order):
        out[free[i]] = "test" if rank < n_test else "train"
    return out
