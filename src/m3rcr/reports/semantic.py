"""Semantic recovery's tables and figures (Table III, Fig. 6, Fig. 7) from the results of
:mod:`m3rcr.evaluation.semantic`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from m3rcr.data.plot import rgb_composite, stretch_limits
from m3rcr.data.preprocess import CLOUD_COVER_BINS, LEVEL1_CLASSES, LEVEL1_COLORS
from m3rcr.reports.figures import (
    bin_counts,
    grid_columns,
    outside_legend,
    per_bin_lines,
    sample_title,
    save_figure,
    set_bin_axis,
)
from m3rcr.reports.tables import cell, write_table


def table_semantic(results: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Table III: mIoU and PA (%) overall and per cloud-cover bin; one row per source."""
    header = ["Images", "mIoU", "PA"] + [f"{m} {b} %" for b in CLOUD_COVER_BINS for m in ("mIoU", "PA")]
    rows = []
    for source, r in results.items():  # mean ± std for sources aggregated over seeds
        row = [source, cell(r, ("overall", "miou")), cell(r, ("overall", "pa"))]
        for b in CLOUD_COVER_BINS:
            row += [cell(r, ("per_bin", b, "miou")), cell(r, ("per_bin", b, "pa"))]
        rows.append(row)
    return header, rows


def write_semantic_tables(out: Path, results: Mapping[str, Mapping[str, Any]]) -> None:
    """table_semantic.md/.csv (Table III) and, with a 'Cloud-free' source, the gap figure (Fig. 6)."""
    out.mkdir(parents=True, exist_ok=True)
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
    fig.legend(handles=[Patch(facecolor=c, edgecolor="k", linewidth=0.3, label=n)
                        for n, c in zip(LEVEL1_CLASSES, LEVEL1_COLORS)],
               loc="outside lower center", ncol=len(LEVEL1_CLASSES), fontsize=8, frameon=False,
               title="level-1 land cover", title_fontsize=8)
    return fig
