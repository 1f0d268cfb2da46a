"""Semantic recovery (spec section 4.2; Table III, Fig. 6, Fig. 7): a land-cover segmentation model
applied to the cloud-free images, the cloudy images and each method's predictions, scored against
the level-1 WorldCover labels.

mIoU and pixel accuracy come from one confusion matrix accumulated over all pixels of the set (or of
a cloud-cover bin), ``unknown`` ignored, classes absent from both labels and prediction left out. The
tables and figures are drawn by :mod:`m3rcr.reports.semantic`; :func:`m3rcr.workflows.semantic_evaluate`
does both into one folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from m3rcr.data import M3RCRDataset
from m3rcr.data.preprocess import CLOUD_COVER_BINS, LEVEL1_CLASSES, LEVEL1_UNKNOWN, cover_bin_label
from m3rcr.evaluation.confusion import confusion_matrix, iou_per_class, miou, pixel_accuracy
from m3rcr.evaluation.evaluate import FigureSamples, read_prediction
from m3rcr.utils.files import atomic_path
from m3rcr.utils.progress import progress as progress_bar

#: An image source: takes a batch (on the device) and returns (B, 4, H, W) reflectance in [0, 1].
Source = Callable[[dict[str, Any]], torch.Tensor]
NUM_CLASSES = 6  # level-1 classes without 'unknown'


@dataclass(frozen=True)
class SemanticOptions:
    """How to run the semantic evaluation (the options of ``m3rcr seg evaluate``).

    The land-cover figure shows ``figure_names``, else ``figure_count`` images spread over the cloud-cover
    bins; ``figure_sources`` ({source: label}) limits and renames its sources (default: all, by name);
    ``stretch`` is its RGB display stretch (:func:`m3rcr.data.plot.stretch_limits`).
    """

    batch_size: int = 4
    device: str | torch.device = "cpu"
    figure_names: Sequence[str] | None = None
    figure_count: int = 3
    progress: bool = True
    figure_sources: Mapping[str, str] | None = None
    stretch: str = "percentile"


@dataclass
class SemanticResult:
    """``{source: {overall, per_bin, per_class_iou, confusion_matrix}}`` and the samples kept for the
    land-cover figure (each with its labels, images and every figure source's image and segmentation)."""

    results: dict[str, Any]
    samples: list[dict[str, Any]] = field(default_factory=list)


def reference_sources() -> dict[str, Source]:
    """The two rows every semantic evaluation has: the cloud-free image (the ceiling) and the cloudy input."""
    return {"Cloud-free": lambda b: b["cloudfree"], "Cloudy": lambda b: b["cloudy"]}


def predictions_source(folder: str | Path) -> Source:
    """Images from a folder of predicted GeoTIFFs (``NAME.tif``, as ``m3rcr evaluate --save-predictions`` writes)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: predictions folder not found")

    def source(batch: dict[str, Any]) -> torch.Tensor:
        images = []
        for name in batch["name"]:
            path = folder / f"{name}.tif"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no prediction for sample {name}")
            images.append(read_prediction(path))
        out = torch.stack(images).to(batch["cloudy"].device)
        if out.shape != batch["cloudy"].shape:
            raise ValueError(f"{folder}: predictions are {tuple(out.shape[-2:])} pixels but the evaluated images are "
                             f"{tuple(batch['cloudy'].shape[-2:])}; use the crop the predictions were made with")
        return out

    return source


class _Scores:
    """Confusion matrices per source and cloud-cover bin, image counts per bin, and the figure's samples."""

    def __init__(self, sources: Sequence[str], options: SemanticOptions) -> None:
        self.cms = {s: {b: torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long)
                        for b in ("all", *CLOUD_COVER_BINS)} for s in sources}
        self.images_per_bin = dict.fromkeys(CLOUD_COVER_BINS, 0)  # for the n= of the figures
        self.options = options
        self.figure: FigureSamples[dict[str, Any]] = FigureSamples(options.figure_names, options.figure_count)

    def add(self, batch: dict[str, Any], seg_maps: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        target = batch["landcover"]
        for name, (_, pred) in seg_maps.items():
            for i in range(len(target)):
                b = cover_bin_label(float(batch["cloud_cover"][i]))
                cm = confusion_matrix(pred[i], target[i], NUM_CLASSES, LEVEL1_UNKNOWN).cpu()
                self.cms[name]["all"] += cm
                self.cms[name][b] += cm
        for i, name in enumerate(batch["name"]):
            b = cover_bin_label(float(batch["cloud_cover"][i]))
            self.images_per_bin[b] += 1
            self.figure.offer(name, float(batch["cloud_cover"][i]), lambda i=i: self._sample(batch, seg_maps, i))

    def _sample(self, batch: dict[str, Any], seg_maps: Mapping[str, tuple[torch.Tensor, torch.Tensor]], i: int
                ) -> dict[str, Any]:
        """Sample ``i`` as the figure draws it: its images, land cover and each shown source's segmentation."""
        labels = self.options.figure_sources
        return {"name": batch["name"][i], "cloud_cover": float(batch["cloud_cover"][i]),
                "landcover": batch["landcover"][i].cpu(), "cloudfree": batch["cloudfree"][i].cpu(),
                "cloudy": batch["cloudy"][i].cpu(), "cloudmask": batch["cloudmask"][i].cpu(),
                "sources": {(labels or {}).get(s, s): (img[i].cpu(), p[i].cpu())
                            for s, (img, p) in seg_maps.items() if labels is None or s in labels}}

    def results(self) -> dict[str, Any]:
        return {
            s: {"overall": {"miou": miou(c["all"]), "pa": pixel_accuracy(c["all"]), "pixels": int(c["all"].sum())},
                "per_bin": {b: {"miou": miou(c[b]), "pa": pixel_accuracy(c[b]), "pixels": int(c[b].sum()),
                                "images": self.images_per_bin[b]} for b in CLOUD_COVER_BINS},
                "per_class_iou": dict(zip(LEVEL1_CLASSES[:NUM_CLASSES], iou_per_class(c["all"]))),
                "confusion_matrix": c["all"].tolist()}
            for s, c in self.cms.items()
        }

def semantic_scores(segmenter: torch.nn.Module, dataset: M3RCRDataset, sources: Mapping[str, Source],
                    options: SemanticOptions | None = None) -> SemanticResult:
    """Segment every source's images and score them; images are binned by the cloud cover of what is scored."""
    options = options or SemanticOptions()
    device = torch.device(options.device)
    segmenter = segmenter.to(device).eval()
    if options.figure_names:
        dataset.select(names=options.figure_names)  # an unknown name is an error before any image is scored
    scores = _Scores(list(sources), options)
    for batch in progress_bar(DataLoader(dataset, batch_size=options.batch_size, shuffle=False), desc="semantic",
                              unit="batch", enabled=options.progress):
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) and k != "transform" else v for k, v in batch.items()}
        seg_maps = {}
        for name, source in sources.items():
            with torch.inference_mode():
                images = source(batch).float()
                seg_maps[name] = (images, segmenter(images).argmax(1))
        scores.add(batch, seg_maps)
    return SemanticResult(scores.results(), scores.figure.picked())


def write_semantic_json(out: Path, results: Mapping[str, Mapping[str, Any]]) -> None:
    """semantic.json: the results of :func:`semantic_scores` (or their aggregate over seeds)."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "semantic.json") as tmp:
        tmp.write_text(json.dumps(results, indent=1))
