"""Evaluate a method on a split: its scores as plain results and files, and (optionally) georeferenced
predictions. Rendering them (tables, figures) is :mod:`m3rcr.reports`' job; :func:`m3rcr.workflows.evaluate`
does both into one folder.

The files written here::

    metrics.json            settings, and ``overall`` / ``per_class`` / ``per_bin`` results
    metrics.csv             one row per image
    ndvi_histogram.npy      the joint histogram of predicted and reference NDVI (Fig. 8)
    predictions/NAME.tif    (with save_predictions) uint16 reflectance x 10000 on the input's grid
"""

from __future__ import annotations

import csv
import datetime
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import rasterio
import torch
from torch.utils.data import DataLoader

from m3rcr.data import M3RCRDataset, Sampling, tensor_to_affine
from m3rcr.data.io import GeoTiffLayout, read_bands, write_geotiff
from m3rcr.data.preprocess import OPTICAL_BANDS, cover_bin, cover_bin_label
from m3rcr.evaluation.metrics import ImageRecord, MetricAccumulator, finite_or_none
from m3rcr.inference.predictors import Predictor
from m3rcr.utils.files import atomic_path
from m3rcr.utils.progress import progress as progress_bar

T = TypeVar("T")


@dataclass(frozen=True)
class EvalOptions:
    """How to evaluate a method on a split (the options of ``m3rcr evaluate``).

    ``clip`` clips predictions to [0, 1] before scoring (the authors do not). ``save_predictions`` writes
    ``predictions/NAME.tif``. The qualitative figure shows ``figure_names``, else ``figure_count`` images
    spread over the cloud-cover bins, under the RGB display ``stretch``
    (:func:`m3rcr.data.plot.stretch_limits`). ``settings`` are recorded in metrics.json (checkpoint,
    model, seed, ...).
    """

    batch_size: int = 4
    device: str | torch.device = "cpu"
    num_workers: int = 0
    clip: bool = False
    save_predictions: bool = False
    figure_names: Sequence[str] | None = None
    figure_count: int = 4
    settings: Mapping[str, Any] | None = None
    progress: bool = True
    stretch: str = "percentile"


@dataclass
class EvalResult:
    """One evaluation: its summary (what metrics.json holds besides the settings), per-image records, the
    recorded settings, the NDVI histogram, and the samples (with predictions) kept for the qualitative figure."""

    method: str
    summary: dict[str, Any]
    records: list[ImageRecord]
    info: dict[str, Any]
    ndvi_hist: np.ndarray | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)
    predictions: list[torch.Tensor] = field(default_factory=list)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float):
        return finite_or_none(obj)
    return obj


def evaluation_dataset(root: str | Path, split: str = "test", files: str | Path | None = None, *,
                       sar_mode: str = "nearest", sar_resampling: str = "nearest",
                       crop: int | tuple[int, int] | None = None) -> M3RCRDataset:
    """A split as the benchmark scores it: centred ``crop`` x ``crop`` crops (None: whole tiles) and the land cover
    on the optical grid, which the per-class metrics need (reprojected in ``geo`` mode, else resized)."""
    return M3RCRDataset(root, split, files, sar_mode=sar_mode, sar_resampling=sar_resampling,
                        landcover_mode="geo" if sar_mode == "geo" else "nearest",
                        sampling=Sampling(crop_size=crop, crop="center"))


def write_prediction(path: Path, prediction: torch.Tensor, crs: str, transform: torch.Tensor) -> None:
    """A (4, H, W) prediction on the [0, 1] scale as a uint16 GeoTIFF (x 10000; 0 is no-data, so >= 1)."""
    data = np.clip(np.round(prediction.detach().cpu().double().numpy() * 10000), 1, 65535).astype(np.uint16)
    layout = GeoTiffLayout(compress="deflate", tiled=data.shape[1] >= 256 and data.shape[2] >= 256,
                           area_or_point=None)
    write_geotiff(path, data, crs or None, tensor_to_affine(transform), 0, layout, descriptions=OPTICAL_BANDS)


def read_prediction(path: Path) -> torch.Tensor:
    """A prediction written by :func:`write_prediction`, back on the [0, 1] scale."""
    with rasterio.open(path) as src:
        return torch.from_numpy(read_bands(src, where=path).astype(np.float32) / 10000.0)


def spread_over_bins(images: Sequence[tuple[str, float]], count: int) -> list[str]:
    """Names of ``count`` images, taken from the cloud-cover bins in turn, from (name, cloud cover) pairs."""
    by_bin: dict[int, list[str]] = {}
    for name, cover in images:
        by_bin.setdefault(cover_bin(cover), []).append(name)
    picked: list[str] = []
    while len(picked) < count and any(by_bin.values()):
        for b in sorted(by_bin):
            if by_bin[b] and len(picked) < count:
                picked.append(by_bin[b].pop(0))
    return picked


def write_results(out: Path, result: EvalResult) -> None:
    """metrics.json, metrics.csv and (with NDVI) ndvi_histogram.npy of one evaluation."""
    out.mkdir(parents=True, exist_ok=True)
    payload = {"method": result.method, **result.info, **result.summary}
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(_json_safe(payload), indent=1))
    with atomic_path(out / "metrics.csv") as tmp, open(tmp, "w", newline="") as fh:
        fields = ["name", "cloud_cover", "cloud_cover_bin", "mae", "psnr", "ssim", "sam", "mae_cloudy", "mae_clear",
                  "ndvi_rmse"]
        writer = csv.DictWriter(fh, fields, lineterminator="\n")
        writer.writeheader()
        for r in result.records:
            row = asdict(r)
            row["cloud_cover_bin"] = cover_bin_label(r.cloud_cover)
            writer.writerow(row)
    if result.ndvi_hist is not None:
        with atomic_path(out / "ndvi_histogram.npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.asarray(result.ndvi_hist, dtype=np.int64), allow_pickle=False)


class FigureSamples(Generic[T]):
    """The items a qualitative figure shows: the named ones (in the order named), else ``count`` spread over the
    cloud-cover bins (:func:`spread_over_bins`). While a split streams past, only candidates are kept: the named
    items, or the first ``count`` of each bin (enough for any spread), not the whole set."""

    def __init__(self, names: Sequence[str] | None, count: int) -> None:
        self.names, self.count = list(names or []), count
        self.kept: dict[str, tuple[float, T]] = {}
        self.per_bin: dict[int, int] = {}

    def offer(self, name: str, cover: float, make: Callable[[], T]) -> None:
        """Keep ``make()`` for item ``name`` of cloud cover ``cover`` if the figure may show it."""
        b = cover_bin(cover)
        if name in self.names or (not self.names and self.per_bin.get(b, 0) < self.count):
            self.per_bin[b] = self.per_bin.get(b, 0) + 1
            self.kept[name] = (cover, make())

    def picked(self) -> list[T]:
        """The figure's items, in its order."""
        names = self.names or spread_over_bins([(n, c) for n, (c, _) in self.kept.items()], self.count)
        return [self.kept[n][1] for n in names if n in self.kept]


def _item(batch: Mapping[str, Any], i: int) -> dict[str, Any]:
    """Item ``i`` of a batch, on the CPU."""
    return {k: (v[i].cpu() if isinstance(v, torch.Tensor) else v[i]) for k, v in batch.items()}


def _check(dataset: M3RCRDataset, options: EvalOptions) -> None:
    if dataset.landcover_level != 1 or dataset.landcover_mode == "native":
        raise ValueError("evaluation needs level-1 land cover on the optical grid")
    if options.figure_names:
        try:
            dataset.select(names=options.figure_names)
        except ValueError as exc:
            raise ValueError(f"--samples: {exc}") from None


def evaluate_into(predict: Predictor, dataset: M3RCRDataset, out: str | Path, method: str,
                  options: EvalOptions | None = None) -> EvalResult:
    """Score ``predict`` on every sample of ``dataset``; write metrics.json, metrics.csv, the NDVI histogram and
    (``options.save_predictions``) the predictions into the folder ``out``; return the results.

    Images are binned by the cloud cover of what is scored (the crop, with a crop).
    """
    options = options or EvalOptions()
    out = Path(out)
    device = torch.device(options.device)
    _check(dataset, options)
    loader = DataLoader(dataset, batch_size=options.batch_size, shuffle=False, num_workers=options.num_workers)
    acc = MetricAccumulator()
    keep: FigureSamples[tuple[dict[str, Any], torch.Tensor]] = FigureSamples(options.figure_names,
                                                                            options.figure_count)
    for batch in progress_bar(loader, desc=f"evaluate {method}", unit="batch", enabled=options.progress):
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) and k != "transform" else v for k, v in batch.items()}
        pred = predict(batch).float()
        if options.clip:
            pred = pred.clamp(0, 1)
        acc.update(pred, batch["cloudfree"], batch["landcover"], batch["cloudmask"],
                   [float(c) for c in batch["cloud_cover"]], batch["name"], cloudy=batch["cloudy"])
        for i, name in enumerate(batch["name"]):
            if options.save_predictions:
                write_prediction(out / "predictions" / f"{name}.tif", pred[i], batch["crs"][i], batch["transform"][i])
            # offer() calls the maker at once, while batch and pred are this iteration's
            keep.offer(name, float(batch["cloud_cover"][i]), lambda i=i: (_item(batch, i), pred[i].cpu()))  # noqa: B023
    info = {
        "split": dataset.split, "data": str(dataset.root), "images": len(acc.records),
        "crop_size": list(crop) if (crop := dataset.sampling.crop_size) else None, "sar_mode": dataset.sar_mode,
        "clip": options.clip, "evaluated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **(options.settings or {}),
    }
    hist = acc.ndvi_hist.cpu().numpy() if acc.ndvi_hist is not None else None
    picked = keep.picked()
    result = EvalResult(method, acc.summary(), list(acc.records), info, hist,
                        [sample for sample, _ in picked], [pred for _, pred in picked])
    write_results(out, result)
    return result
