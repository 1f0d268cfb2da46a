"""Evaluate a method on a split: its scores as plain results and files, and (optionally) georeferenced
predictions. Rendering them (tables, figures) is :mod:`m3rcr.reports`' job; :func:`m3rcr.workflows.evaluate`
does both into one folder.

The dataset's spec names the metric protocol (``spec.protocol``), and one :class:`Scorer` per protocol
collects the scores: :class:`M3RCRScorer` (the M3R-CR benchmark: per image, per land-cover class, per
cloud-cover bin, NDVI, cloud-removal checks) or :class:`ProtocolScorer` (a protocol of
:mod:`m3rcr.evaluation.protocols` with per-image metrics and NaN-skipping means, e.g. SEN12MS-CR's on
reflectance in [0, 1] over all the bands the dataset carries, no cloud mask).

The files written here::

    metrics.json            settings, and ``overall`` / ``per_class`` / ``per_bin`` results (SEN12MS-CR:
                            ``overall``, ``per_bin``, ``unbinned`` and ``per_image``)
    metrics.csv             one row per image
    ndvi_histogram.npy      (M3R-CR) the joint histogram of predicted and reference NDVI (Fig. 8)
    predictions/NAME.tif    (with save_predictions) uint16 reflectance x 10000 on the input's grid (0 = no-data),
                            one band per optical band of the dataset, named in the band descriptions
"""

from __future__ import annotations

import csv
import datetime
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import rasterio
import torch
from torch.utils.data import DataLoader

from m3rcr.data import CloudRemovalDataset, DatasetSpec, M3RCRDataset, Sampling, tensor_to_affine
from m3rcr.data.io import GeoTiffLayout, read_bands, write_geotiff
from m3rcr.data.preprocess import CLOUD_COVER_BINS, OPTICAL_BANDS, cover_bin, cover_bin_label
from m3rcr.evaluation.metrics import MetricAccumulator, finite_or_none
from m3rcr.evaluation.protocols import MeanResult, Protocol, protocol
from m3rcr.inference.predictors import Predictor
from m3rcr.utils.files import atomic_path
from m3rcr.utils.progress import progress as progress_bar

T = TypeVar("T")

#: metrics.csv columns of the M3R-CR protocol
M3RCR_CSV_FIELDS = ("name", "cloud_cover", "cloud_cover_bin", "mae", "psnr", "ssim", "sam", "mae_cloudy",
                    "mae_clear", "ndvi_rmse")
#: bin key of images without a cloud cover (SEN12MS-CR without cloud masks): they go into no bin
NO_BIN = -1


@dataclass(frozen=True)
class EvalOptions:
    """How to evaluate a method on a split (the options of ``m3rcr evaluate``).

    ``clip`` clips predictions to [0, 1] reflectance before scoring (the authors do not). ``save_predictions``
    writes ``predictions/NAME.tif``. The qualitative figure shows ``figure_names``, else ``figure_count`` images
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
    recorded settings, the NDVI histogram, and the samples (with predictions) kept for the qualitative figure.

    ``records`` are :class:`~m3rcr.evaluation.metrics.ImageRecord` (M3R-CR) or plain dicts (other protocols);
    ``protocol`` names the metric protocol and ``csv_fields`` the columns of metrics.csv."""

    method: str
    summary: dict[str, Any]
    records: list[Any]
    info: dict[str, Any]
    ndvi_hist: np.ndarray | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)
    predictions: list[torch.Tensor] = field(default_factory=list)
    protocol: str = "m3rcr"
    csv_fields: tuple[str, ...] = M3RCR_CSV_FIELDS


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


def write_prediction(path: Path, prediction: torch.Tensor, crs: str, transform: torch.Tensor,
                     bands: Sequence[str] = OPTICAL_BANDS, reflectance_per_unit: float = 1.0) -> None:
    """A (C, H, W) prediction as a uint16 GeoTIFF of reflectance x 10000 (Sentinel-2 L1C DN; 0 is no-data, so
    values are >= 1), one band per name of ``bands`` (its description). The prediction holds the dataset's
    units: ``reflectance_per_unit`` (0.2 for SEN12MS-CR's ``resnet`` scaling) converts them."""
    data = np.clip(np.round(prediction.detach().cpu().double().numpy() * reflectance_per_unit * 10000), 1,
                   65535).astype(np.uint16)
    if data.shape[0] != len(bands):
        raise ValueError(f"prediction has {data.shape[0]} bands, the dataset {len(bands)} ({', '.join(bands)})")
    layout = GeoTiffLayout(compress="deflate", tiled=data.shape[1] >= 256 and data.shape[2] >= 256,
                           area_or_point=None)
    write_geotiff(path, data, crs or None, tensor_to_affine(transform), 0, layout, descriptions=bands)


def read_prediction(path: Path) -> torch.Tensor:
    """A prediction written by :func:`write_prediction`, back on the [0, 1] reflectance scale."""
    with rasterio.open(path) as src:
        return torch.from_numpy(read_bands(src, where=path).astype(np.float32) / 10000.0)


def _bin_of(cover: float) -> int:
    """The cloud-cover bin of an image, :data:`NO_BIN` for an unknown (NaN) cover."""
    return NO_BIN if math.isnan(float(cover)) else cover_bin(cover)


def _bin_label(cover: float) -> str:
    """The bin label of an image ("" for an unknown cover: it goes into no bin)."""
    return "" if math.isnan(float(cover)) else cover_bin_label(cover)


def spread_over_bins(images: Sequence[tuple[str, float]], count: int) -> list[str]:
    """Names of ``count`` images, taken from the cloud-cover bins in turn, from (name, cloud cover) pairs
    (images of unknown cover, NaN, form one group of their own)."""
    by_bin: dict[int, list[str]] = {}
    for name, cover in images:
        by_bin.setdefault(_bin_of(cover), []).append(name)
    picked: list[str] = []
    while len(picked) < count and any(by_bin.values()):
        for b in sorted(by_bin):
            if by_bin[b] and len(picked) < count:
                picked.append(by_bin[b].pop(0))
    return picked


def _csv_row(record: Any) -> dict[str, Any]:
    if is_dataclass(record):
        row = asdict(record)
        row["cloud_cover_bin"] = cover_bin_label(record.cloud_cover)
        return row
    return dict(record)


def write_results(out: Path, result: EvalResult) -> None:
    """metrics.json, metrics.csv and (with NDVI) ndvi_histogram.npy of one evaluation."""
    out.mkdir(parents=True, exist_ok=True)
    payload = {"method": result.method, **result.info, **result.summary}
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(_json_safe(payload), indent=1))
    with atomic_path(out / "metrics.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, list(result.csv_fields), lineterminator="\n")
        writer.writeheader()
        for r in result.records:
            writer.writerow(_csv_row(r))
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
        """Keep ``make()`` for item ``name`` of cloud cover ``cover`` (NaN: unknown) if the figure may show it."""
        b = _bin_of(cover)
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


class Scorer(ABC):
    """Collects one metric protocol's scores over a split, batch by batch, for :func:`evaluate_into`."""

    #: the protocol's name (``spec.protocol`` of the datasets it scores)
    protocol: str
    #: metrics.csv columns
    csv_fields: tuple[str, ...]
    #: optical band names (prediction files' band descriptions) and reflectance of one unit of the data
    bands: tuple[str, ...] = OPTICAL_BANDS
    reflectance_per_unit: float = 1.0

    def check(self, dataset: CloudRemovalDataset) -> None:
        """Raise ValueError when ``dataset`` cannot be scored by this protocol."""

    @abstractmethod
    def update(self, pred: torch.Tensor, batch: Mapping[str, Any]) -> None:
        """Score a batch of predictions (B, C, H, W, in the dataset's units) against its references."""

    @abstractmethod
    def settings(self, dataset: CloudRemovalDataset) -> dict[str, Any]:
        """What metrics.json records of the dataset and the protocol (after split, data root and image count)."""

    @abstractmethod
    def summary(self) -> dict[str, Any]:
        """The results as plain dicts (what metrics.json holds besides the settings)."""

    @property
    @abstractmethod
    def records(self) -> list[Any]:
        """Per-image records, in evaluation order."""

    def ndvi_hist(self) -> np.ndarray | None:
        """The NDVI joint histogram (None when the protocol has no NDVI measure)."""
        return None

    def clip(self, pred: torch.Tensor) -> torch.Tensor:
        """``pred`` clipped to reflectance [0, 1], in the dataset's units."""
        return pred.clamp(0, 1 / self.reflectance_per_unit)


class M3RCRScorer(Scorer):
    """The M3R-CR benchmark protocol (:class:`~m3rcr.evaluation.metrics.MetricAccumulator`): per image, per
    level-1 land-cover class, per cloud-cover bin, NDVI and the cloud-removal checks."""

    protocol = "m3rcr"
    csv_fields = M3RCR_CSV_FIELDS

    def __init__(self) -> None:
        self.acc = MetricAccumulator()

    def check(self, dataset: CloudRemovalDataset) -> None:
        if getattr(dataset, "landcover_level", None) != 1 or getattr(dataset, "landcover_mode", None) == "native":
            raise ValueError("evaluation needs level-1 land cover on the optical grid")

    def clip(self, pred: torch.Tensor) -> torch.Tensor:
        return pred.clamp(0, 1)

    def update(self, pred: torch.Tensor, batch: Mapping[str, Any]) -> None:
        self.acc.update(pred, batch["cloudfree"], batch["landcover"], batch["cloudmask"],
                        [float(c) for c in batch["cloud_cover"]], batch["name"], cloudy=batch["cloudy"])

    def settings(self, dataset: CloudRemovalDataset) -> dict[str, Any]:
        crop = dataset.sampling.crop_size
        return {"crop_size": list(crop) if crop else None, "sar_mode": getattr(dataset, "sar_mode", None)}

    def summary(self) -> dict[str, Any]:
        return self.acc.summary()

    @property
    def records(self) -> list[Any]:
        return self.acc.records

    def ndvi_hist(self) -> np.ndarray | None:
        return self.acc.ndvi_hist.cpu().numpy() if self.acc.ndvi_hist is not None else None


def _means(proto: Protocol, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per metric the mean over ``records`` of its finite values, the image count, and per metric how many NaN
    (``skipped_nan``) and inf (``skipped_inf``, e.g. PSNR of a perfect image) values the mean left out."""
    means: dict[str, MeanResult] = proto.aggregate(records)
    out: dict[str, Any] = {m: r.mean for m, r in means.items()}
    out["images"] = len(records)
    out["skipped_nan"] = {m: r.nan for m, r in means.items()}
    out["skipped_inf"] = {m: r.inf for m, r in means.items()}
    return out


class ProtocolScorer(Scorer):
    """A protocol of :mod:`m3rcr.evaluation.protocols` (SEN12MS-CR's): its per-image metrics on reflectance in
    [0, 1] (the dataset's values x ``spec.reflectance_per_unit``) over every band the dataset carries and every
    pixel, no cloud mask; data-set and per-bin scores are means over images skipping NaN and inf
    (:func:`~m3rcr.evaluation.protocols.nan_mean`). Images of unknown cloud cover (NaN: cloud masks off) go into
    no bin. No NDVI, no per-class table (SEN12MS-CR has no land cover)."""

    def __init__(self, spec: DatasetSpec) -> None:
        self.proto = protocol(spec.protocol)
        self.protocol = self.proto.name
        self.csv_fields = ("name", "cloud_cover", "cloud_cover_bin", *self.proto.metrics, "sam_zero_norm_pixels")
        self.spec = spec
        self.bands = tuple(spec.optical_bands)
        self.reflectance_per_unit = float(spec.reflectance_per_unit)
        self._records: list[dict[str, Any]] = []

    def update(self, pred: torch.Tensor, batch: Mapping[str, Any]) -> None:
        # float64 before scaling: resnet's 0.2 must not round the values the metrics see
        scale = self.reflectance_per_unit
        rows = self.proto.image_metrics(pred.double() * scale, batch["cloudfree"].to(pred.device).double() * scale)
        for name, cover, row in zip(batch["name"], batch["cloud_cover"], rows):
            cover = float(cover)
            self._records.append({"name": str(name), "cloud_cover": cover, "cloud_cover_bin": _bin_label(cover),
                                  **{m: row[m] for m in self.proto.metrics},
                                  "sam_zero_norm_pixels": int(row.get("sam_zero_norm_pixels", 0))})

    def settings(self, dataset: CloudRemovalDataset) -> dict[str, Any]:
        crop = dataset.sampling.crop_size
        masks = getattr(dataset, "cloud_masks", None)
        return {
            "dataset": self.spec.name, "preprocessing": getattr(dataset, "preprocessing", None),
            "bands": list(self.bands), "layout": _layout_of(dataset),
            "reference_compatible": getattr(dataset, "reference_compatible", None), "cloud_masks": masks,
            "crop_size": list(crop) if crop else None,
            "protocol": {"name": self.proto.name, "description": self.proto.description,
                         "metrics": list(self.proto.metrics), "reflectance_per_unit": self.reflectance_per_unit,
                         "cloud_cover_bins": "none: no cloud masks, every image goes into no bin" if masks == "none"
                         else "from the s2cloudless mask of the scored window",
                         "ndvi": "not computed (not part of this protocol)"},
        }

    def summary(self) -> dict[str, Any]:
        bins: dict[str, list[dict[str, Any]]] = {b: [] for b in CLOUD_COVER_BINS}
        unbinned = 0
        for r in self._records:
            if r["cloud_cover_bin"]:
                bins[r["cloud_cover_bin"]].append(r)
            else:
                unbinned += 1
        return {
            "overall": {**_means(self.proto, self._records),
                        "sam_zero_norm_pixels": sum(r["sam_zero_norm_pixels"] for r in self._records)},
            "per_bin": {b: _means(self.proto, rs) for b, rs in bins.items()},
            "unbinned": {"images": unbinned, "why": "no cloud cover (cloud masks off)" if unbinned else None},
            "per_image": list(self._records),
        }

    @property
    def records(self) -> list[Any]:
        return self._records


def _layout_of(dataset: CloudRemovalDataset) -> str | None:
    """The folder layout a SEN12MS-CR dataset was read in (given, or detected from its root)."""
    layout = getattr(dataset, "layout", None)
    if layout is None and getattr(dataset, "spec", None) is not None and dataset.spec.name == "sen12mscr":
        from m3rcr.data.sen12mscr.layout import detect_layout

        layout = detect_layout(dataset.root)
    return layout


def scorer_for(dataset: CloudRemovalDataset) -> Scorer:
    """The scorer of the dataset's metric protocol (``dataset.spec.protocol``)."""
    spec = dataset.spec
    return M3RCRScorer() if spec.protocol == "m3rcr" else ProtocolScorer(spec)


def _check_names(dataset: CloudRemovalDataset, options: EvalOptions) -> None:
    if options.figure_names:
        try:
            dataset.select(names=options.figure_names)
        except ValueError as exc:
            raise ValueError(f"--samples: {exc}") from None


def evaluate_into(predict: Predictor, dataset: CloudRemovalDataset, out: str | Path, method: str,
                  options: EvalOptions | None = None) -> EvalResult:
    """Score ``predict`` on every sample of ``dataset`` under its protocol (:func:`scorer_for`); write
    metrics.json, metrics.csv, the NDVI histogram (M3R-CR) and (``options.save_predictions``) the predictions
    into the folder ``out``; return the results.

    Images are binned by the cloud cover of what is scored (the crop, with a crop).
    """
    options = options or EvalOptions()
    out = Path(out)
    device = torch.device(options.device)
    scorer = scorer_for(dataset)
    scorer.check(dataset)
    _check_names(dataset, options)
    loader = DataLoader(dataset, batch_size=options.batch_size, shuffle=False, num_workers=options.num_workers)
    keep: FigureSamples[tuple[dict[str, Any], torch.Tensor]] = FigureSamples(options.figure_names,
                                                                            options.figure_count)
    for batch in progress_bar(loader, desc=f"evaluate {method}", unit="batch", enabled=options.progress):
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) and k != "transform" else v for k, v in batch.items()}
        pred = predict(batch).float()
        if options.clip:
            pred = scorer.clip(pred)
        scorer.update(pred, batch)
        for i, name in enumerate(batch["name"]):
            if options.save_predictions:
                write_prediction(out / "predictions" / f"{name}.tif", pred[i], batch["crs"][i], batch["transform"][i],
                                 scorer.bands, scorer.reflectance_per_unit)
            # offer() calls the maker at once, while batch and pred are this iteration's
            keep.offer(name, float(batch["cloud_cover"][i]), lambda i=i: (_item(batch, i), pred[i].cpu()))  # noqa: B023
    info = {
        "split": dataset.split, "data": str(dataset.root), "images": len(scorer.records), **scorer.settings(dataset),
        "clip": options.clip, "evaluated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **(options.settings or {}),
    }
    picked = keep.picked()
    result = EvalResult(method, scorer.summary(), list(scorer.records), info, scorer.ndvi_hist(),
                        [sample for sample, _ in picked], [pred for _, pred in picked], scorer.protocol,
                        scorer.csv_fields)
    write_results(out, result)
    return result
