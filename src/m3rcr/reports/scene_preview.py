"""A before/after quicklook of a scene predicted by :func:`m3rcr.inference.predict_scene`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from m3rcr.data.plot import Stretch
from m3rcr.data.scene import read_quicklook
from m3rcr.reports.figures import save_figure, scene_before_after


def write_scene_preview(cloudy: str | Path, out: str | Path, bands: Sequence[int], png: str | Path, *,
                        mask: str | Path | None = None, stretch: Stretch = "percentile", scale: float = 10000.0,
                        offset: float = 0.0) -> Path:
    """Draw the cloudy scene and its prediction side by side into ``png``.

    Both panels share one stretch (from the input's pixels clear in ``mask`` when given; see
    :func:`m3rcr.reports.figures.scene_before_after`). ``bands`` are the input's 1-based blue, green, red and
    NIR bands, as recorded in the prediction's settings; ``scale`` and ``offset`` turn values into reflectance.
    """
    rgb_in = [bands[2], bands[1], bands[0]]
    order = sorted(bands)  # the output holds the picked bands in the input's order
    rgb_out = [order.index(b) + 1 for b in rgb_in]
    # reflectance, so that the fixed stretch means the same as for the dataset figures
    before = (read_quicklook(cloudy, rgb_in) + offset) / scale
    after = (read_quicklook(out, rgb_out) + offset) / scale
    cloudmask = read_quicklook(mask, [1], mask_onto=cloudy)[0] if mask else None
    fig = scene_before_after(before, after, suptitle=f"{Path(cloudy).name} -> {Path(out).name}",
                             cloudmask=cloudmask, stretch=stretch)
    return save_figure(fig, png)
