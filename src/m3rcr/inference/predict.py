"""Cloud removal over whole georeferenced scenes.

:func:`predict_scene` reads the optical scene and the SAR window by window (the SAR warped onto the
optical grid from any CRS and resolution), runs a model over overlapping tiles in batches, blends
the overlaps with smooth weights and writes a cloud-optimized GeoTIFF on the optical grid. Memory
depends on the tile, the batch and the overlap band across the scene's width, not on its size.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
import torch
from rasterio.windows import Window
from torch import nn

from m3rcr.data.preprocess import OPTICAL_BANDS, OPTICAL_SCALE
from m3rcr.data.scene import OpticalScene, SarLayer, SarUnits, bounded_block_cache
from m3rcr.inference.tiling import Blender, Tile, TileGrid
from m3rcr.utils.files import atomic_path, check_output
from m3rcr.utils.provenance import environment


@dataclass
class PredictStats:
    """What a scene prediction did."""

    tiles: int = 0  #: tiles in the grid
    tiles_run: int = 0  #: tiles sent to the model (tiles without a valid pixel are skipped)
    batches: int = 0
    valid_fraction: float = 0.0  #: output pixels with data
    #: share of the optical scene's valid pixels where the SAR has data (inside its footprint, not NaN or
    #: no-data, positive linear power); None without SAR
    sar_covered_fraction: float | None = None
    #: share of the scene's bounding box inside the cloud mask's (outside it counts as clear); None without
    mask_covered_fraction: float | None = None
    seconds: float = 0.0
    peak_pending_bytes: int = 0  #: largest memory held by blending cells waiting for tiles
    nonfinite_tiles: int = 0  #: tiles where the model returned NaN or infinity (those pixels are no-data)
    settings: dict[str, Any] = field(default_factory=dict)


def model_uses_sar(model: nn.Module) -> bool:
    """Whether a cloud-removal model reads its SAR input."""
    return bool(getattr(model, "use_sar", True))


def predict_scene(
    model: nn.Module,
    cloudy: str | Path,
    out: str | Path,
    sar: str | Path | None = None,
    *,
    bands: str | Sequence[int] | None = None,
    scale: float = OPTICAL_SCALE,
    offset: float = 0.0,
    sar_bands: str | Sequence[int] = (1, 2),
    sar_units: SarUnits = "db",
    sar_resampling: str = "nearest",
    mask: str | Path | None = None,
    tile: int = 256,
    overlap: int = 32,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    precision: str = "float32",
    overwrite: bool = False,
    progress: bool = True,
    checkpoint: str | Path | None = None,
) -> PredictStats:
    """Remove clouds from a whole scene and write the result as a cloud-optimized GeoTIFF.

    Args:
        model: a cloud-removal model called as ``model(cloudy, sar)`` on (B, 4, h, w) and (B, 2, h, w)
            tensors in [0, 1] (any model of the registry).
        cloudy: the optical scene (any GDAL raster with a CRS; GeoTIFF in practice).
        out: the output GeoTIFF; it appears only when complete.
        sar: Sentinel-1 VV/VH in any CRS, resolution and float dtype; needed by models that use SAR.
        bands: 1-based band numbers of blue, green, red and NIR (``"2,3,4,8"``); default: the 4 bands of
            a 4-band raster.
        scale, offset: reflectance = (value + offset) / scale (10000 and 0 for PlanetScope and
            Sentinel-2 L1C before 2022).
        sar_bands, sar_units, sar_resampling: SAR bands (VV, VH), units (``db`` or ``linear`` power)
            and resampling onto the optical grid (``nearest`` matches the training data).
        mask: optional raster on any grid; its non-zero pixels are the only ones replaced by the
            prediction (cloud-free pixels keep their input values).
        tile, overlap, batch_size: tile size and overlap in optical pixels, tiles per model call.
        device, precision: where and how the model runs (``float32``, ``bfloat16``, ``float16``).
        overwrite: replace an existing output.
        progress: show a progress bar.
        checkpoint: where the model came from, recorded in the output's metadata.

    The output has the optical scene's CRS, transform and dtype, the 4 picked bands in the input's
    band order with their descriptions, units, scales and offsets. Pixels that are no-data in the
    input, or without SAR (outside its footprint, NaN or no-data), are no-data in the output: marked
    with the input's no-data value if it declares one, else with an internal per-dataset mask (GDAL's
    way; no no-data value is invented, so an input pixel of value 0 stays valid). With ``mask``, every
    clear pixel with input data keeps its input value bit for bit, SAR or not.

    SAR values that cannot be in ``sar_units`` (see :mod:`m3rcr.data.sar_units`) are a
    :class:`~m3rcr.errors.DataError` before any tile is run. A model that does not use SAR
    (``use_sar = False``) ignores ``sar``: see :func:`model_uses_sar`.
    """
    from m3rcr.evaluation.evaluate import model_predictor

    out, cloudy = Path(out), Path(cloudy)
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise ValueError(f"{out}: the output is a cloud-optimized GeoTIFF; give it a .tif name")
    check_output(out, overwrite)
    for path in (cloudy, sar, mask):
        if path is not None and Path(path).exists() and out.exists() and out.samefile(path):
            raise ValueError(f"{out}: the output would overwrite an input")
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    device = torch.device(device)
    uses_sar = model_uses_sar(model)
    if uses_sar and sar is None:
        raise ValueError("this model fuses SAR: give the Sentinel-1 scene (--sar)")
    start = time.perf_counter()
    stats = PredictStats()
    with contextlib.ExitStack() as stack:
        stack.enter_context(bounded_block_cache())
        optical = stack.enter_context(OpticalScene(cloudy, bands, scale=scale, offset=offset))
        grid = optical.grid
        sar_layer = stack.enter_context(SarLayer(sar, grid, bands=sar_bands, units=sar_units,
                                                 resampling=sar_resampling)) if uses_sar else None
        mask_layer = None
        if mask is not None:
            mask_layer, stats.mask_covered_fraction = _open_mask(mask, grid, stack)
        tiles = TileGrid(grid.height, grid.width, tile, overlap)
        stats.tiles = len(tiles)
        stats.settings = dict(cloudy=str(cloudy), sar=str(sar) if sar and uses_sar else None,
                              bands=list(optical.bands),
                              scale=scale, offset=offset, sar_units=sar_units,
                              sar_bands=list(sar_layer.bands) if sar_layer else None,
                              sar_resampling=sar_resampling, mask=str(mask) if mask else None, tile=tile,
                              overlap=overlap, batch_size=batch_size, device=str(device), precision=precision,
                              model=getattr(model, "registry_name", type(model).__name__),
                              checkpoint=str(checkpoint) if checkpoint else None)
        predict = model_predictor(model, precision)
        valid_pixels = 0
        # pixels of the scene with optical data, and those of them with SAR too (each counted in one tile)
        optical_pixels = sar_pixels = 0
        own_rows = _own_spans(tiles.rows, grid.height)
        own_cols = _own_spans(tiles.cols, grid.width)
        use_mask = optical.out_nodata is None  # no no-data value to mark invalid pixels with: GDAL's mask

        with atomic_path(out) as final_tmp:
            work = final_tmp.with_name(final_tmp.name.replace(".tmp", ".work"))
            try:
                # internal mask: the work file must stay one file (a .msk side-car would be left behind)
                stack.enter_context(rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True))
                dst = stack.enter_context(rasterio.open(work, "w", **_work_profile(optical)))
                _copy_band_metadata(optical, dst)
                dst.update_tags(M3RCR_PREDICT=json.dumps({**stats.settings, **environment()}))

                def write(window: Window, values: np.ndarray, valid: np.ndarray) -> None:
                    nonlocal valid_pixels
                    encoded = optical.encode(np.maximum(values, 0.0), valid)
                    if mask_layer is not None:
                        # clear pixels with input data keep their input values exactly (even without SAR);
                        # outside the mask raster is "clear"
                        cloud, _ = mask_layer.read(window)
                        raw = optical.read_raw(window)
                        clear = (np.nan_to_num(cloud[0], nan=0.0) == 0) & optical.read_valid(window, raw)
                        encoded[:, clear] = raw[:, clear]
                        valid = valid | clear
                    valid_pixels += int(valid.sum())
                    dst.write(encoded, window=window)
                    if use_mask:
                        dst.write_mask(np.where(valid, 255, 0).astype(np.uint8), window=window)

                blender = Blender(tiles, len(OPTICAL_BANDS), write)
                bar = _progress(len(tiles), progress, cloudy.name)
                batch: list[tuple[Tile, np.ndarray, np.ndarray, np.ndarray]] = []

                def run_batch() -> None:
                    x = torch.from_numpy(np.stack([b[1] for b in batch])).to(device)
                    s = torch.from_numpy(np.stack([b[2] for b in batch])).to(device) if uses_sar else None
                    y = predict({"cloudy": x, "sar": s}).detach().to("cpu", torch.float64).numpy()
                    if y.shape != (len(batch), 4, *batch[0][1].shape[-2:]):
                        raise ValueError(f"the model returned shape {tuple(y.shape)} for input {tuple(x.shape)}")
                    for (t, _, _, ok), values in zip(batch, y):
                        if not np.isfinite(values).all():
                            stats.nonfinite_tiles += 1  # the blender drops those pixels
                        blender.add(t, values, ok)
                    stats.batches += 1
                    stats.tiles_run += len(batch)
                    stats.peak_pending_bytes = max(stats.peak_pending_bytes, blender.pending_bytes)
                    bar.update(len(batch))
                    batch.clear()

                for t in tiles:
                    x, ok = optical.read(t.window)
                    own = (slice(*own_rows[t.row]), slice(*own_cols[t.col]))  # this tile's share of the scene
                    optical_pixels += int(ok[own].sum())
                    if sar_layer is not None and ok.any():
                        s, sar_ok = sar_layer.read(t.window)
                        ok &= sar_ok
                        sar_pixels += int(ok[own].sum())
                    else:
                        s = np.zeros((2, *ok.shape), np.float32)
                    if not ok.any():
                        # nothing to predict, but the tile still closes its cells (in any order)
                        blender.add(t, None, ok)
                        bar.update(1)
                        continue
                    batch.append((t, x, s, ok))
                    if len(batch) == batch_size:
                        run_batch()
                if batch:
                    run_batch()
                bar.close()
                if not blender.finished():  # pragma: no cover - a bookkeeping bug, never bad input
                    raise RuntimeError("tile blending left cells unwritten")
                dst.close()
                _to_cog(work, final_tmp, float_data=optical.dtype.kind == "f")
            finally:
                work.unlink(missing_ok=True)
                work.with_name(work.name + ".msk").unlink(missing_ok=True)
    stats.valid_fraction = valid_pixels / (grid.height * grid.width)
    if sar_layer is not None:
        stats.sar_covered_fraction = sar_pixels / optical_pixels if optical_pixels else 0.0
    stats.seconds = time.perf_counter() - start
    return stats


def _own_spans(starts: Sequence[int], length: int) -> list[tuple[int, int]]:
    """(start, stop) offsets, within each tile, of the pixels it alone counts: from its start to the next
    tile's (the last to the end), so overlapping tiles count every pixel once."""
    ends = [*starts[1:], length]
    return [(0, end - start) for start, end in zip(starts, ends)]


def _open_mask(path: str | Path, grid: Any, stack: contextlib.ExitStack) -> tuple[Any, float]:
    """The cloud mask warped onto ``grid``, and the share of the grid's bounding box it covers."""
    from m3rcr.data.scene import WarpedLayer, check_cloud_mask, open_raster, require_overlap

    src = stack.enter_context(open_raster(path, "cloud mask"))
    # a mask elsewhere would mark every pixel clear: the output would silently equal the input
    covered = require_overlap(src, grid, "cloud mask")
    check_cloud_mask(src, path)
    # 0 means clear even where a mask copied from an optical profile declares nodata=0
    layer = WarpedLayer(src, grid, (1,), resampling="nearest", dtype="float32", what="cloud mask",
                        use_source_nodata=False)
    stack.callback(layer.close)
    return layer, covered


def _work_profile(optical: OpticalScene) -> dict[str, Any]:
    """An uncompressed tiled GeoTIFF to write cells into (compression happens once, in the COG copy).

    It declares the input's no-data value, or none (invalid pixels are then marked by a mask).
    """
    src = optical.src
    nodata = optical.out_nodata
    return dict(driver="GTiff", width=src.width, height=src.height, count=4, dtype=optical.dtype.name,
                crs=src.crs, transform=src.transform, nodata=nodata, tiled=True, blockxsize=256, blockysize=256,
                BIGTIFF="IF_SAFER", interleave="pixel")


def _copy_band_metadata(optical: OpticalScene, dst: Any) -> None:
    src = optical.src
    order = [optical.bands[i] for i in optical.file_order]
    dst.descriptions = tuple(src.descriptions[b - 1] or OPTICAL_BANDS[optical.bands.index(b)] for b in order)
    dst.units = tuple(src.units[b - 1] or "" for b in order)
    dst.scales = tuple(src.scales[b - 1] for b in order)
    dst.offsets = tuple(src.offsets[b - 1] for b in order)
    tags = src.tags()
    dst.update_tags(**{**tags, "AREA_OR_POINT": tags.get("AREA_OR_POINT", "Area")},
                    M3RCR_BANDS=",".join(map(str, order)))


def _to_cog(work: Path, out: Path, float_data: bool) -> None:
    """Copy the finished work file to a compressed cloud-optimized GeoTIFF with overviews."""
    predictor = 3 if float_data else 2  # floating-point or horizontal-difference predictor
    rasterio.shutil.copy(work, out, driver="COG", COMPRESS="DEFLATE", PREDICTOR=predictor, BLOCKSIZE=512,
                         OVERVIEWS="AUTO", RESAMPLING="AVERAGE", BIGTIFF="IF_SAFER")


def write_stats(path: str | Path, stats: PredictStats) -> None:
    """The run's statistics and settings as JSON (written atomically)."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(asdict(stats), indent=1))


def _progress(total: int, enabled: bool, name: str) -> Any:
    from m3rcr.utils.progress import progress

    return progress(total=total, enabled=enabled, desc=f"predict {name}", unit="tile")
