"""Semantic recovery (spec section 4.2; Table III, Fig. 6, Fig. 7): a land-cover segmentation model
applied to the cloud-free images, the cloudy images and each method's predictions, scored against
the level-1 WorldCover labels.

mIoU and pixel accuracy come from one confusion matrix accumulated over all pixels of the set (or of
a cloud-cover bin), ``unknown`` ignored, classes absent from both labels and prediction left out.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from torch.utils.data import DataLoader

from m3rcr.data.dataset import M3RCRDataset
from m3rcr.data.plot import rgb_composite, stretch_limits
from m3rcr.data.preprocess import (
    CLOUD_COVER_BINS,
    LEVEL1_CLASSES,
    LEVEL1_COLORS,
    LEVEL1_UNKNOWN,
    cover_bin_label,
)
from m3rcr.evaluation.confusion import confusion_matrix, iou_per_class, miou, pixel_accuracy
from m3rcr.reports.figures import (
    bin_counts,
    grid_columns,
    outside_legend,
    per_bin_lines,
    sample_title,
    save_figure,
    set_bin_axis,
)
from m3rcr.reports.tables import write_table
from m3rcr.utils.files import atomic_path, check_output, refuse_replacing
from m3rcr.utils.progress import progress as progress_bar

#: An image source: takes a batch (on the device) and returns (B, 4, H, W) reflectance in [0, 1].
Source = Callable[[dict[str, Any]], torch.Tensor]
NUM_CLASSES = 6  # level-1 classes without 'unknown'


def predictions_source(folder: str | Path) -> Source:
    """Images from a folder of predicted GeoTIFFs (``NAME.tif``, as ``m3rcr evaluate --save-predictions`` writes)."""
    from m3rcr.evaluation.evaluate import read_prediction

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


def semantic_evaluate(
    segmenter: torch.nn.Module,
    dataset: M3RCRDataset,
    sources: Mapping[str, Source],
    out: str | Path,
    *,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    figure_names: Sequence[str] | None = None,
    figure_count: int = 3,
    progress: bool = True,
    figure_sources: Mapping[str, str] | None = None,
    overwrite: bool = False,
    stretch: str = "percentile",
) -> dict[str, Any]:
    """Segment every source's images, score them, and write the semantic evaluation folder ``out``.

    Images are binned by the cloud cover of what is scored. ``figure_sources`` ({source: label}) limits
    and renames the sources of the land-cover figure (default: all, by name). Returns ``{source:
    {overall, per_bin, per_class_iou}}``. An existing, non-empty ``out`` is refused unless ``overwrite``.
    ``stretch``: the RGB display stretch of the land-cover figure (:func:`m3rcr.data.plot.stretch_limits`).
    """
    out = check_output(out, overwrite, folder=True)
    # its own files only (an interrupted run leaves some of them, not yet semantic.json)
    refuse_replacing(out, [dataset.root], owned=lambda d: all(p.name.startswith(("semantic", "table_semantic", "fig_",
                                                                                   ".")) for p in d.iterdir()),
                     kind="semantic evaluation (semantic.json, table_semantic.*, fig_*.png)")
    device = torch.device(device)
    segmenter = segmenter.to(device).eval()
    cms = {s: {b: torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long) for b in ("all", *CLOUD_COVER_BINS)}
           for s in sources}
    unknown = sorted(set(figure_names or []) - set(dataset.names))
    if unknown:
        raise ValueError(f"no sample named {', '.join(unknown)} in split {dataset.split!r}")
    kept: list[dict[str, Any]] = []
    kept_per_bin: dict[str, int] = {}
    images_per_bin = dict.fromkeys(CLOUD_COVER_BINS, 0)  # for the n= of the figures
    for batch in progress_bar(DataLoader(dataset, batch_size=batch_size, shuffle=False), desc="semantic",
                              unit="batch", enabled=progress):
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) and k != "transform" else v for k, v in batch.items()}
        target = batch["landcover"]
        seg_maps = {}
        for name, source in sources.items():
            with torch.inference_mode():
                images = source(batch).float()
                pred = segmenter(images).argmax(1)
            seg_maps[name] = (images, pred)
            for i in range(len(target)):
                b = cover_bin_label(float(batch["cloud_cover"][i]))
                cm = confusion_matrix(pred[i], target[i], NUM_CLASSES, LEVEL1_UNKNOWN).cpu()
                cms[name]["all"] += cm
                cms[name][b] += cm
        for i, name in enumerate(batch["name"]):
            b = cover_bin_label(float(batch["cloud_cover"][i]))
            images_per_bin[b] += 1
            # without names: candidates from every cloud-cover bin, picked from below
            wanted = name in (figure_names or []) or (not figure_names and kept_per_bin.get(b, 0) < figure_count)
            if wanted:
                kept_per_bin[b] = kept_per_bin.get(b, 0) + 1
                kept.append({"name": name, "cloud_cover": float(batch["cloud_cover"][i]),
                             "landcover": target[i].cpu(), "cloudfree": batch["cloudfree"][i].cpu(),
                             "cloudy": batch["cloudy"][i].cpu(), "cloudmask": batch["cloudmask"][i].cpu(),
                             "sources": {(figure_sources or {}).get(s, s): (img[i].cpu(), p[i].cpu())
                                         for s, (img, p) in seg_maps.items()
                                         if figure_sources is None or s in figure_sources}})
    results = {
        s: {"overall": {"miou": miou(c["all"]), "pa": pixel_accuracy(c["all"]), "pixels": int(c["all"].sum())},
            "per_bin": {b: {"miou": miou(c[b]), "pa": pixel_accuracy(c[b]), "pixels": int(c[b].sum()),
                            "images": images_per_bin[b]} for b in CLOUD_COVER_BINS},
            "per_class_iou": dict(zip(LEVEL1_CLASSES[:NUM_CLASSES], iou_per_class(c["all"]))),
            "confusion_matrix": c["all"].tolist()}
        for s, c in cms.items()
    }
    write_semantic_outputs(out, results)
    if kept and not figure_names:  # spread over the bins: one per bin in turn, as Fig. 4 does
        from m3rcr.evaluation.evaluate import spread_over_bins

        by_name = {k["name"]: k for k in kept}
        kept = [by_name[n] for n in spread_over_bins([(k["name"], k["cloud_cover"]) for k in kept], figure_count)]
    if kept:
        save_figure(landcover_maps(kept, stretch=stretch), out / "fig_landcover_maps.png")
    return results


def table_semantic(results: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Table III: mIoU and PA (%) overall and per cloud-cover bin; one row per source."""
    header = ["Images", "mIoU", "PA"] + [f"{m} {b} %" for b in CLOUD_COVER_BINS for m in ("mIoU", "PA")]

    from m3rcr.reports.tables import cell

    rows = []
    for source, r in results.items():  # mean ± std for sources aggregated over seeds
        row = [source, cell(r, ("overall", "miou")), cell(r, ("overall", "pa"))]
        for b in CLOUD_COVER_BINS:
            row += [cell(r, ("per_bin", b, "miou")), cell(r, ("per_bin", b, "pa"))]
        rows.append(row)
    return header, rows


def write_semantic_outputs(out: Path, results: Mapping[str, Mapping[str, Any]]) -> None:
    """semantic.json, table_semantic.md/.csv and the gap figure (Fig. 6) for some sources."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "semantic.json") as tmp:
        tmp.write_text(json.dumps(results, indent=1))
    write_table(out, "table_semantic", "Semantic recovery (Table III)\n\nDeepLabv3+ land-cover segmentation of each "
                "image source against the level-1 WorldCover labels ('unknown' ignored); mIoU and pixel accuracy "
                "in percent from one confusion matrix per set or bin.", *table_semantic(results))
    if "Cloud-free" in results:
        save_figure(semantic_gap(results), out / "fig_semantic_gap.png")


def semantic_gap(results: Mapping[str, Mapping[str, Any]], reference: str = "Cloud-free") -> Figure:
    """Fig. 6 layout: each source's mIoU and PA gap to the cloud-free images, per cloud-cover bin (error
    bars: ± one standard deviation over seeds)."""
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    axes = fig.subplots(1, 2)
    ref = results[reference]["per_bin"]
    # the gap of every source, in the per-bin layout of the image metrics (one value per bin and source)
    gaps = {source: {"per_bin": {b: {k: None if r["per_bin"][b][k] is None or ref[b][k] is None
                                     else ref[b][k] - r["per_bin"][b][k] for k in ("miou", "pa")}
                                 for b in CLOUD_COVER_BINS},
                     **({"std": r["std"]} if "std" in r else {})}
            for source, r in results.items() if source != reference}
    counts = bin_counts({reference: results[reference]})
    if counts.count("?") == len(counts):  # results from before images were counted: pixels say the same
        counts = [f"{ref[b]['pixels'] / 1e3:.0f}k px" if ref[b].get("pixels") else "0" for b in CLOUD_COVER_BINS]
    bars = False
    for ax, key, title in ((axes[0], "miou", "mIoU"), (axes[1], "pa", "pixel accuracy")):
        bars |= per_bin_lines(ax, gaps, key, 1.0)
        ax.axhline(0, color="k", lw=0.6)
        set_bin_axis(ax, counts)
        ax.set_ylabel(f"{title} gap to cloud-free (% points)", fontsize=9)
        ax.set_title(f"{title}: cloud-free minus source", fontsize=10)
    outside_legend(fig, axes[-1], "source (error bars: ± 1 std over seeds)" if bars else "source")
    return fig


def landcover_maps(samples: Sequence[Mapping[str, Any]], stretch: str = "percentile") -> Figure:
    """Fig. 7 layout: per sample, its cloud mask above the WorldCover labels, then for every source its
    image above its segmentation, wrapped into rows that fit the page width.

    The RGB panels of a sample share one stretch, set by its cloudy image at its clear pixels and its
    cloud-free image (:func:`m3rcr.data.plot.stretch_limits`).
    """
    sources = list(samples[0]["sources"])
    order = [s for s in ("Cloudy", "Cloud-free") if s in sources] + [s for s in sources
                                                                     if s not in ("Cloudy", "Cloud-free")]
    panel = 1.7
    slots = 1 + len(order)  # each slot is an image above a map
    cols = grid_columns(slots, panel)
    chunks = [list(range(i, min(i + cols, slots))) for i in range(0, slots, cols)]
    fig = Figure(figsize=(panel * cols + 0.6, (2 * panel + 0.7) * len(chunks) * len(samples) + 0.4),
                 layout="constrained")
    subfigs = fig.subfigures(len(samples), 1, squeeze=False)[:, 0]
    cmap = ListedColormap(LEVEL1_COLORS)
    for s, sub in zip(samples, subfigs):
        cloudmask = s.get("cloudmask")
        limits = stretch_limits([(s["cloudy"], cloudmask), (s["cloudfree"], None)], stretch)
        axes = sub.subplots(2 * len(chunks), cols, squeeze=False)
        for ax in axes.ravel():
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_axis_off()
        for row, chunk in enumerate(chunks):
            for c, slot in enumerate(chunk):
                top, bottom = axes[2 * row, c], axes[2 * row + 1, c]
                top.set_axis_on()
                bottom.set_axis_on()
                if slot == 0:
                    if cloudmask is not None:
                        mask = np.asarray(cloudmask, dtype=float)
                        top.imshow(mask, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                        top.set_title(f"Cloud mask (white: {100 * float(mask.mean()):.0f} % cloudy)", fontsize=8)
                    else:
                        top.set_axis_off()
                    label, title = s["landcover"], "WorldCover\n(reference labels)"
                else:
                    name = order[slot - 1]
                    top.imshow(rgb_composite(s["sources"][name][0], limits), interpolation="nearest")
                    top.set_title(name, fontsize=8)
                    label, title = s["sources"][name][1], f"segmentation of\n{name}"
                bottom.imshow(np.asarray(label), cmap=cmap, vmin=-0.5, vmax=len(LEVEL1_COLORS) - 0.5,
                              interpolation="nearest")
                bottom.set_title(title, fontsize=8)
        sub.suptitle(sample_title(s), fontsize=10, x=0.01, ha="left")
    from matplotlib.patches import Patch

    fig.legend(handles=[Patch(facecolor=c, edgecolor="k", linewidth=0.3, label=n)
                        for n, c in zip(LEVEL1_CLASSES, LEVEL1_COLORS)],
               loc="outside lower center", ncol=len(LEVEL1_CLASSES), fontsize=8, frameon=False,
               title="level-1 land cover", title_fontsize=8)
    return fig
