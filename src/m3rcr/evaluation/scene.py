"""Score a cloud-removed scene against its cloud-free reference with the measures of
:mod:`m3rcr.evaluation.removal`, strip by strip (a scene is never read whole)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from m3rcr.data.io import read_bands
from m3rcr.data.preprocess import OPTICAL_SCALE
from m3rcr.data.scene import OpticalScene, bounded_block_cache, check_cloud_mask, open_raster
from m3rcr.errors import DataError
from m3rcr.evaluation.removal import RemovalAccumulator, RemovalMeasures
from m3rcr.utils.files import atomic_path


def _same_grid(a: Any, b: Any, what: str, path: str | Path) -> None:
    if (a.height, a.width) != (b.height, b.width):
        differs = f"{b.width}x{b.height} pixels, the cloudy scene {a.width}x{a.height}"
    elif a.crs != b.crs:
        differs = f"CRS {b.crs.to_string() if b.crs else None}, the cloudy scene's {a.crs.to_string() if a.crs else None}"
    elif not a.transform.almost_equals(b.transform):
        differs = (f"origin ({b.transform.c:.10g}, {b.transform.f:.10g}) and pixel size ({b.transform.a:.6g}, "
                   f"{b.transform.e:.6g}); the cloudy scene's ({a.transform.c:.10g}, {a.transform.f:.10g}) and "
                   f"({a.transform.a:.6g}, {a.transform.e:.6g})")
    else:
        return
    raise DataError(path, f"{what} is not on the cloudy scene's grid (its {differs}); score on one grid "
                          "(e.g. gdalwarp -te/-tr/-t_srs to the cloudy scene's)")


def result_bands(src: Any, input_bands: tuple[int, ...], path: str | Path) -> tuple[int, ...]:
    """Bands of a result raster holding blue, green, red, NIR: from the ``M3RCR_BANDS`` tag that
    ``m3rcr predict`` writes (the input's band numbers in file order), else 1..4 of a 4-band raster."""
    tag = src.tags().get("M3RCR_BANDS")
    if tag:
        order = [int(b) for b in tag.split(",")]
        if sorted(order) != sorted(input_bands):
            raise DataError(path, f"holds input bands {tag}, but the scored bands are "
                                  f"{','.join(map(str, input_bands))}; pass the same --bands as to predict")
        return tuple(order.index(b) + 1 for b in input_bands)
    if src.count != 4:
        raise DataError(path, f"has {src.count} bands; a result holds blue, green, red, NIR (4 bands)")
    return (1, 2, 3, 4)


def score_scene(result: str | Path, cloudy: str | Path, reference: str | Path, mask: str | Path, *,
                bands: str | tuple[int, ...] | None = None, scale: float = OPTICAL_SCALE, offset: float = 0.0,
                strip: int = 512) -> RemovalMeasures:
    """The removal measures of a result scene: its cloudy input, the cloud-free reference (same bands
    and grid), and the cloud mask (non-zero = cloudy) on that grid.

    Pixels count where the result, the input and the reference all have data. The mean fill is the
    scene's clear-sky mean (clear, valid pixels of the cloudy input).
    """
    if strip < 2:
        raise ValueError("strip must be at least 2 rows")
    with contextlib.ExitStack() as stack:
        stack.enter_context(bounded_block_cache())
        inp = stack.enter_context(OpticalScene(cloudy, bands, scale=scale, offset=offset, what="cloudy scene"))
        ref = stack.enter_context(OpticalScene(reference, inp.bands, scale=scale, offset=offset,
                                               what="reference scene"))
        res_src = stack.enter_context(open_raster(result, "result"))
        mask_src = stack.enter_context(open_raster(mask, "cloud mask"))
        check_cloud_mask(mask_src, mask)
        for src, what, path in ((ref.src, "the reference", reference), (res_src, "the result", result),
                                (mask_src, "the cloud mask", mask)):
            _same_grid(inp.src, src, what, path)
        rb = list(result_bands(res_src, inp.bands, result))
        h, w = inp.grid.shape

        def read(row0: int, rows: int) -> tuple[np.ndarray, ...]:
            win = Window(0, row0, w, rows)

            def raw(src: Any, b: list[int], path: str | Path) -> tuple[np.ndarray, np.ndarray]:
                # GDAL's masks: a result of m3rcr predict marks its no-data with the input's no-data value
                # or, when the input declares none, with an internal mask (its zeros may be data)
                values = read_bands(src, b, window=win, where=path).astype(np.float64)
                ok = (read_bands(src, b, window=win, where=path, masks=True) > 0).all(axis=0)
                ok &= np.isfinite(values).all(axis=0)
                return (np.nan_to_num(values) + offset) / scale, ok

            x, ok_x = raw(inp.src, list(inp.bands), cloudy)
            y, ok_y = raw(ref.src, list(inp.bands), reference)
            p, ok_p = raw(res_src, rb, result)
            cloud = np.nan_to_num(read_bands(mask_src, 1, window=win, where=mask).astype(np.float64)) != 0
            return x, y, p, cloud, ok_x & ok_y & ok_p

        # pass 1: the scene's clear-sky mean; pass 2: everything else, strips overlapping by one row
        total, count = np.zeros(len(inp.bands)), 0
        for r0 in range(0, h, strip):
            x, _, _, cloud, ok = read(r0, min(strip, h - r0))
            clear = ~cloud & ok
            total += x[:, clear].sum(axis=1)
            count += int(clear.sum())
        fill = total / count if count else None
        acc = RemovalAccumulator()
        for r0 in range(0, h, strip):
            top = max(r0 - 1, 0)
            x, y, p, cloud, ok = read(top, min(strip, h - r0) + (r0 - top))
            o = r0 - top  # the previous strip's last row, read again for the windows that straddle both
            acc.update(p[:, o:], y[:, o:], x[:, o:], cloud[o:], ok[o:], fill=fill)
            if o:
                acc.add_grid(p[:, :2], y[:, :2], (cloud & ok)[:2])
        return acc.measures()


def write_measures(path: str | Path, measures: RemovalMeasures, settings: dict[str, Any]) -> None:
    """The measures and what was scored, as JSON (written atomically)."""
    payload = {**settings, **measures.as_dict(), "checks": measures.checks()}
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(payload, indent=1))
