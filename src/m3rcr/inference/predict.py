"""Cloud removal over whole georeferenced scenes.

:func:`predict_scene` reads the optical scene and the SAR window by window (the SAR warped onto the
optical grid from any CRS and resolution), runs a model over overlapping tiles in batches, blends
the overlaps with smooth weights and writes a cloud-optimized GeoTIFF on the optical grid. Memory
depends on the tile, the batch and the overlap band across the scene's width, not on its size.

What the model reads comes from its checkpoint's data record (``PredictOptions.data``): M3R-CR models
(and checkpoints without a record) read blue, green, red, NIR reflectance in [0, 1] and SAR scaled as in
M3R-CR; SEN12MS-CR models read their Sentinel-2 bands and S1 scaled by their preprocessing convention
(:mod:`m3rcr.data.sen12mscr.preprocess`), and their outputs are turned back into L1C values with it.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window
from torch import nn

from m3rcr.data.io import GeoTiffLayout, RasterSpec, geotiff_writer
from m3rcr.data.preprocess import OPTICAL_BANDS, OPTICAL_SCALE, normalize_sar
from m3rcr.data.scene import OpticalScene, SarLayer, SarUnits, bounded_block_cache, open_raster
from m3rcr.data.sen12mscr.preprocess import S2_BANDS, S2_DN_SCALE, convention
from m3rcr.errors import DataError
from m3rcr.inference.compiled import compile_backend
from m3rcr.inference.predictors import model_predictor
from m3rcr.inference.tiling import Blender, PredictionGrid, PredictionWindow
from m3rcr.models.base import CloudRemovalModel
from m3rcr.models.checkpoint import record_preprocessing
from m3rcr.models.precision import canonical_precision
from m3rcr.utils.files import atomic_path, check_output
from m3rcr.utils.provenance import environment
from m3rcr.utils.text import percent


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
    #: with ``compile``: what torch.compile cost in this scene (backend, seconds of the first calls per input
    #: shape, compiles; 0 when an earlier scene of the same model compiled it), else None
    compile: dict[str, Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def notes(self) -> list[str]:
        """What a user should know about the run's output, each line starting "note:" or "warning:"."""
        out = []
        if self.sar_covered_fraction is not None and self.sar_covered_fraction < 0.999:
            out.append(f"note: the SAR has data for {percent(self.sar_covered_fraction)} of the scene's valid "
                       "pixels; pixels without it (outside its footprint, NaN or no-data) are no-data")
        if self.nonfinite_tiles:
            out.append(f"warning: the model returned NaN or infinity in {self.nonfinite_tiles} tile(s); pixels no "
                       "tile predicted are no-data")
        if self.mask_covered_fraction is not None and self.mask_covered_fraction < 0.999:
            out.append(f"note: the cloud mask covers {percent(self.mask_covered_fraction)} of the scene's extent; "
                       "pixels outside it count as clear and keep their input values")
        if self.valid_fraction == 0:
            out.append("warning: no pixel has both optical data and SAR coverage; the output is all no-data")
        elif self.tiles_run == 0:
            out.append("warning: the model ran on no tile (no pixel has both optical data and SAR): nothing was "
                       "predicted; only the clear pixels the mask keeps have data")
        return out


@dataclass(frozen=True)
class PredictOptions:
    """How :func:`predict_scene` reads a scene and runs the model; every field has a default.

    Attributes:
        bands: 1-based band numbers of the bands the model reads, in its order: blue, green, red and NIR
            (``"2,3,4,8"``) for M3R-CR models; default: a raster with exactly that many bands, in file order
            (for a model trained on some of the 13 Sentinel-2 bands, also a 13-band L1C scene).
        scale, offset: reflectance = (value + offset) / scale (10000 and 0 for PlanetScope and
            Sentinel-2 L1C before 2022).
        sar_bands, sar_units, sar_resampling: SAR bands (VV, VH), units (``db`` or ``linear`` power)
            and resampling onto the optical grid (``nearest`` matches the training data).
        mask: optional raster on any grid; its non-zero pixels are the only ones replaced by the
            prediction (cloud-free pixels keep their input values).
        tile, overlap, batch_size: tile size and overlap in optical pixels, tiles per model call.
        device, precision: where and how the model runs (``float32``, ``bfloat16``, ``float16``; aliases
            such as ``bf16`` are accepted and recorded by their canonical name).
        compile: run the model through ``torch.compile`` (True: inductor, or a backend's name);
            :attr:`PredictStats.compile` says what compiling cost.
        data: the checkpoint's data record (``meta["data"]``, :func:`m3rcr.models.checkpoint.checkpoint_data`):
            band names and value convention; None: M3R-CR's (checkpoints saved before it was recorded).
    """

    bands: str | Sequence[int] | None = None
    scale: float = OPTICAL_SCALE
    offset: float = 0.0
    sar_bands: str | Sequence[int] = (1, 2)
    sar_units: SarUnits = "db"
    sar_resampling: str = "nearest"
    mask: str | Path | None = None
    tile: int = 256
    overlap: int = 32
    batch_size: int = 4
    device: str | torch.device = "cpu"
    precision: str = "float32"
    data: Mapping[str, Any] | None = None
    compile: bool | str = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", canonical_precision(self.precision))
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class ModelValues:
    """How a model's values relate to a scene's: the optical bands it reads (names, in its order), the
    reflectance of one unit of its optical values, and the scaling of SAR dB and back to reflectance."""

    names: tuple[str, ...]
    dataset: str
    reflectance_per_unit: float
    scale_sar: Callable[[np.ndarray], np.ndarray]
    to_reflectance: Callable[[np.ndarray], np.ndarray]

    @classmethod
    def of(cls, record: Mapping[str, Any] | None) -> ModelValues:
        """From a checkpoint's data record (None: M3R-CR, blue/green/red/NIR reflectance in [0, 1])."""
        preprocessing = record_preprocessing(record)
        if record is None or preprocessing is None:
            names = tuple(record["optical_bands"]) if record else OPTICAL_BANDS
            dataset = str(record.get("dataset", "m3rcr")) if record else "m3rcr"
            return cls(names, dataset, 1.0, normalize_sar, lambda y: y)
        conv = convention(str(preprocessing))

        def to_reflectance(y: np.ndarray) -> np.ndarray:
            return conv.to_dn(y) / S2_DN_SCALE  # L1C DN -> reflectance; the scene's scale and offset encode it

        return cls(tuple(record["optical_bands"]), str(record.get("dataset")), conv.reflectance_per_unit,
                   conv.scale_s1, to_reflectance)

    @property
    def described(self) -> str:
        """e.g. ``13 bands (B1, B2, ..., B12) of sen12mscr``."""
        return f"{len(self.names)} bands ({', '.join(self.names)}) of {self.dataset}"


def model_uses_sar(model: nn.Module) -> bool:
    """Whether a model reads its SAR input: what the spec of an m3rcr model says; any other module is given it."""
    return model.spec.uses_sar if isinstance(model, CloudRemovalModel) else True


def predict_scene(
    model: nn.Module,
    cloudy: str | Path,
    out: str | Path,
    sar: str | Path | None = None,
    options: PredictOptions | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    checkpoint: str | Path | None = None,
) -> PredictStats:
    """Remove clouds from a whole scene and write the result as a cloud-optimized GeoTIFF.

    Args:
        model: a cloud-removal model called as ``model(cloudy, sar)`` on (B, C, h, w) and (B, 2, h, w)
            tensors (any model of the registry); C and the values' scaling come from ``options.data``.
        cloudy: the optical scene (any GDAL raster with a CRS; GeoTIFF in practice).
        out: the output GeoTIFF; it appears only when complete.
        sar: Sentinel-1 VV/VH in any CRS, resolution and float dtype; needed by models that use SAR.
        options: bands, scaling, SAR reading, cloud mask, tiling and device (:class:`PredictOptions`;
            default: its defaults).
        overwrite: replace an existing output.
        progress: show a progress bar.
        checkpoint: where the model came from, recorded in the output's metadata.

    The output has the optical scene's CRS, transform and dtype, the picked bands (all the model writes)
    in the input's band order with their descriptions (else the band names the model was trained on), units,
    scales and offsets. Pixels that are no-data in the
    input, or without SAR (outside its footprint, NaN or no-data), are no-data in the output: marked
    with the input's no-data value if it declares one, else with an internal per-dataset mask (GDAL's
    way; no no-data value is invented, so an input pixel of value 0 stays valid). With a cloud mask,
    every clear pixel with input data keeps its input value bit for bit, SAR or not.

    SAR values that cannot be in ``options.sar_units`` (see :mod:`m3rcr.data.sar_units`) are a
    :class:`~m3rcr.errors.DataError` before any tile is run. A model that does not use SAR
    (``model.spec.uses_sar`` False) ignores ``sar``: see :func:`model_uses_sar`.
    """
    options = options or PredictOptions()
    out, cloudy = Path(out), Path(cloudy)
    _check_output_path(out, (cloudy, sar, options.mask), overwrite)
    uses_sar = model_uses_sar(model)
    if uses_sar and sar is None:
        raise ValueError("this model fuses SAR: give the Sentinel-1 scene (--sar)")
    values = ModelValues.of(options.data)
    _check_model_bands(model, values)
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        run = _open_run(stack, model, cloudy, sar if uses_sar else None, options, values)
        run.stats.settings = _settings(run, model, (cloudy, sar), options, checkpoint)
        run.write(out, progress, cloudy.name)
    return run.finish(time.perf_counter() - start)


def _check_output_path(out: Path, inputs: Sequence[str | Path | None], overwrite: bool) -> None:
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise ValueError(f"{out}: the output is a cloud-optimized GeoTIFF; give it a .tif name")
    check_output(out, overwrite)
    for path in inputs:
        if path is not None and Path(path).exists() and out.exists() and out.samefile(path):
            raise ValueError(f"{out}: the output would overwrite an input")


def _check_model_bands(model: nn.Module, values: ModelValues) -> None:
    """Refuse a model whose optical width is not that of the data record it is run with."""
    if not isinstance(model, CloudRemovalModel):
        return  # any other module: its output shape is checked per batch
    spec, n = model.spec, len(values.names)
    if spec.optical_in != n or spec.optical_out != n:
        raise ValueError(f"the model reads {spec.optical_in} and writes {spec.optical_out} optical bands, but its data "
                         f"record says {values.described}; pass the checkpoint's record as PredictOptions(data=...) "
                         "(m3rcr.models.checkpoint.checkpoint_data)")


def _scene_bands(cloudy: Path, bands: str | Sequence[int] | None, values: ModelValues
                 ) -> str | Sequence[int] | None:
    """The bands to pick when none are given: those of the model's names in a full 13-band Sentinel-2 scene;
    a scene with another band count than the model was trained on is a DataError naming both."""
    if bands is not None or values.names == OPTICAL_BANDS:
        return bands  # M3R-CR models: parse_bands's own rule and message
    with open_raster(cloudy, "optical scene") as src:
        count = src.count
    if count == len(values.names):
        return None  # the scene's bands in file order
    if count == len(S2_BANDS) and set(values.names) <= set(S2_BANDS):
        return [S2_BANDS.index(name) + 1 for name in values.names]
    raise DataError(cloudy, f"has {count} band(s), but the model was trained on {values.described}; give a scene "
                            f"with those bands (a {len(S2_BANDS)}-band Sentinel-2 L1C scene in band order "
                            f"{', '.join(S2_BANDS)} for SEN12MS-CR models), or say which bands they are with "
                            f"--bands ({len(values.names)} numbers)")


def _open_run(stack: contextlib.ExitStack, model: nn.Module, cloudy: Path, sar: str | Path | None,
              options: PredictOptions, values: ModelValues) -> _SceneRun:
    """Open the optical scene, the SAR (None: the model does not read it) and the cloud mask."""
    stack.enter_context(bounded_block_cache())
    bands = _scene_bands(cloudy, options.bands, values)
    optical = stack.enter_context(OpticalScene(cloudy, bands, scale=options.scale, offset=options.offset,
                                               names=values.names))
    sar_layer = stack.enter_context(SarLayer(sar, optical.grid, bands=options.sar_bands, units=options.sar_units,
                                             resampling=options.sar_resampling, scale=values.scale_sar)
                                    ) if sar is not None else None
    mask_layer, mask_covered = None, None
    if options.mask is not None:
        mask_layer, mask_covered = _open_mask(options.mask, optical.grid, stack)
    predictor = model_predictor(model, options.precision, options.compile)
    run = _SceneRun(optical, sar_layer, mask_layer, options, predictor, values)
    run.stats.mask_covered_fraction = mask_covered
    return run


def _settings(run: _SceneRun, model: nn.Module, inputs: tuple[Path, str | Path | None], options: PredictOptions,
              checkpoint: str | Path | None) -> dict[str, Any]:
    """The run's settings, as recorded in the output's metadata and the statistics."""
    (cloudy, sar_path), sar = inputs, run.sar_layer
    return dict(cloudy=str(cloudy), sar=str(sar_path) if sar else None, bands=list(run.optical.bands),
                band_names=list(run.optical.names), data=dict(options.data) if options.data else None,
                scale=options.scale, offset=options.offset, sar_units=options.sar_units,
                sar_bands=list(sar.bands) if sar else None, sar_resampling=options.sar_resampling,
                mask=str(options.mask) if options.mask else None, tile=options.tile, overlap=options.overlap,
                batch_size=options.batch_size, device=str(run.device), precision=options.precision,
                compile=compile_backend(options.compile),
                model=getattr(model, "registry_name", type(model).__name__),
                checkpoint=str(checkpoint) if checkpoint else None)


class _SceneRun:
    """One scene prediction: the open inputs, the tile grid, the output and the running counts."""

    def __init__(self, optical: OpticalScene, sar_layer: SarLayer | None, mask_layer: Any,
                 options: PredictOptions, predict: Any, values: ModelValues | None = None) -> None:
        self.optical, self.sar_layer, self.mask_layer = optical, sar_layer, mask_layer
        self.options, self.predict = options, predict
        # compiled for an earlier scene already: this scene's statistics count only what it compiles
        compiled = getattr(predict, "compiled", None)
        self.compile_before = compiled.report if compiled is not None else None
        self.values = values or ModelValues.of(None)
        self.n_bands = len(optical.bands)
        self.device = torch.device(options.device)
        self.grid = optical.grid
        self.tiles = PredictionGrid(self.grid.height, self.grid.width, options.tile, options.overlap)
        self.stats = PredictStats(tiles=len(self.tiles))
        # pixels of the scene with output data; with optical data; and of those, with SAR too
        # (each counted in the one tile that owns it)
        self.valid_pixels = self.optical_pixels = self.sar_pixels = 0
        self.own_rows = _own_spans(self.tiles.rows, self.grid.height)
        self.own_cols = _own_spans(self.tiles.cols, self.grid.width)
        self.use_mask = optical.out_nodata is None  # no no-data value to mark invalid pixels with: GDAL's mask
        self.batch: list[tuple[PredictionWindow, np.ndarray, np.ndarray, np.ndarray]] = []
        self.dst: Any = None
        self.blender: Blender | None = None
        self.bar: Any = None

    def write(self, path: Path, progress: bool, name: str) -> None:
        """Predict every tile and write the cloud-optimized GeoTIFF ``path`` (it appears only when complete)."""
        optical, src = self.optical, self.optical.src
        spec = RasterSpec(self.n_bands, src.height, src.width, optical.dtype.name, src.crs, src.transform,
                          optical.out_nodata)
        # compression happens once, in the COG copy; floating-point or horizontal-difference predictor
        layout = GeoTiffLayout(cog=True, compress="deflate", predictor=3 if optical.dtype.kind == "f" else 2,
                               blocksize=512, area_or_point=None)
        with geotiff_writer(path, spec, layout) as self.dst:
            _copy_band_metadata(optical, self.dst)
            self.dst.update_tags(M3RCR_PREDICT=json.dumps({**self.stats.settings, **environment()}))
            self.blender = Blender(self.tiles, self.n_bands, self._write_cells)
            self.bar = _progress(len(self.tiles), progress, name)
            self._run_tiles()
            self.bar.close()
            if not self.blender.finished():  # pragma: no cover - a bookkeeping bug, never bad input
                raise RuntimeError("tile blending left cells unwritten")

    def finish(self, seconds: float) -> PredictStats:
        """The statistics, once the output is written."""
        stats = self.stats
        stats.valid_fraction = self.valid_pixels / (self.grid.height * self.grid.width)
        if self.sar_layer is not None:
            stats.sar_covered_fraction = self.sar_pixels / self.optical_pixels if self.optical_pixels else 0.0
        stats.seconds = seconds
        compiled = getattr(self.predict, "compiled", None)
        if compiled is not None:
            stats.compile = compiled.report.since(self.compile_before).as_dict()
        return stats

    def _run_tiles(self) -> None:
        for t in self.tiles:
            x, ok = self.optical.read(t.window)
            own = (slice(*self.own_rows[t.row]), slice(*self.own_cols[t.col]))  # this tile's share of the scene
            self.optical_pixels += int(ok[own].sum())
            if self.sar_layer is not None and ok.any():
                s, sar_ok = self.sar_layer.read(t.window)
                ok &= sar_ok
                self.sar_pixels += int(ok[own].sum())
            else:
                s = np.zeros((2, *ok.shape), np.float32)
            if not ok.any():
                # nothing to predict, but the tile still closes its cells (in any order)
                self.blender.add(t, None, ok)
                self.bar.update(1)
                continue
            self.batch.append((t, x, s, ok))
            if len(self.batch) == self.options.batch_size:
                self._run_batch()
        if self.batch:
            self._run_batch()

    def _run_batch(self) -> None:
        batch, stats = self.batch, self.stats
        unit = self.values.reflectance_per_unit  # reflectance -> the model's optical values (1 but for resnet)
        x = torch.from_numpy(np.stack([b[1] for b in batch]) / np.float32(unit)).to(self.device)
        s = torch.from_numpy(np.stack([b[2] for b in batch])).to(self.device) if self.sar_layer else None
        y = self.predict({"cloudy": x, "sar": s}).detach().to("cpu", torch.float64).numpy()
        if y.shape != (len(batch), self.n_bands, *batch[0][1].shape[-2:]):
            raise ValueError(f"the model returned shape {tuple(y.shape)} for input {tuple(x.shape)}")
        y = self.values.to_reflectance(y)
        for (t, _, _, ok), values in zip(batch, y):
            if not np.isfinite(values).all():
                stats.nonfinite_tiles += 1  # the blender drops those pixels
            self.blender.add(t, values, ok)
        stats.batches += 1
        stats.tiles_run += len(batch)
        stats.peak_pending_bytes = max(stats.peak_pending_bytes, self.blender.pending_bytes)
        self.bar.update(len(batch))
        batch.clear()

    def _write_cells(self, window: Window, values: np.ndarray, valid: np.ndarray) -> None:
        """Encode finished blended cells into the work file (the blender's callback)."""
        optical = self.optical
        encoded = optical.encode(np.maximum(values, 0.0), valid)
        if self.mask_layer is not None:
            # clear pixels with input data keep their input values exactly (even without SAR);
            # outside the mask raster is "clear"
            cloud, _ = self.mask_layer.read(window)
            raw = optical.read_raw(window)
            clear = (np.nan_to_num(cloud[0], nan=0.0) == 0) & optical.read_valid(window, raw)
            encoded[:, clear] = raw[:, clear]
            valid = valid | clear
        self.valid_pixels += int(valid.sum())
        self.dst.write(encoded, window=window)
        if self.use_mask:
            self.dst.write_mask(np.where(valid, 255, 0).astype(np.uint8), window=window)


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


def _copy_band_metadata(optical: OpticalScene, dst: Any) -> None:
    src = optical.src
    order = [optical.bands[i] for i in optical.file_order]
    dst.descriptions = tuple(src.descriptions[b - 1] or optical.names[optical.bands.index(b)] for b in order)
    dst.units = tuple(src.units[b - 1] or "" for b in order)
    dst.scales = tuple(src.scales[b - 1] for b in order)
    dst.offsets = tuple(src.offsets[b - 1] for b in order)
    tags = src.tags()
    dst.update_tags(**{**tags, "AREA_OR_POINT": tags.get("AREA_OR_POINT", "Area")},
                    M3RCR_BANDS=",".join(map(str, order)))


def write_stats(path: str | Path, stats: PredictStats) -> None:
    """The run's statistics and settings as JSON (written atomically)."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(asdict(stats), indent=1))


def _progress(total: int, enabled: bool, name: str) -> Any:
    from m3rcr.utils.progress import progress

    return progress(total=total, enabled=enabled, desc=f"predict {name}", unit="tile")
