"""An evaluation's (or a comparison's) tables and figures, from its results (:mod:`m3rcr.evaluation`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from m3rcr.reports.figures import (
    metrics_by_cloud_cover,
    ndvi_by_cloud_cover,
    ndvi_density,
    qualitative_grid,
    save_figure,
)
from m3rcr.reports.tables import (
    markdown_report,
    table_ndvi,
    table_per_bin,
    table_per_class,
    table_removal,
    write_table,
)
from m3rcr.utils.files import atomic_path


def write_tables(out: Path, results: Mapping[str, Mapping[str, Any]],
                 histograms: Mapping[str, np.ndarray] | None = None) -> None:
    """tables.md, the tables as CSV, and the per-bin figures for some methods; Fig. 8 from NDVI histograms."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "tables.md") as tmp:
        tmp.write_text(markdown_report(results))
    for stem, title, table in (
            ("table_per_class", "Table II (a): overall and per land-cover class", table_per_class(results)),
            ("table_per_bin", "Table II (b): per cloud-cover level", table_per_bin(results)),
            ("table_ndvi", "Table IV: NDVI agreement", table_ndvi(results)),
            ("table_removal", "Cloud-removal checks", table_removal(results))):
        write_table(out, stem, title, *table)
    figures = {"fig_metrics_by_cloud_cover.png": metrics_by_cloud_cover(results),
               "fig_ndvi_by_cloud_cover.png": ndvi_by_cloud_cover(results)}
    if histograms:
        figures["fig_ndvi_density.png"] = ndvi_density(histograms)
    for name, fig in figures.items():
        save_figure(fig, out / name)


def write_qualitative(out: Path, samples: Sequence[Mapping[str, Any]], predictions: Mapping[str, Sequence[Any]],
                      stretch: str = "percentile") -> None:
    """fig_qualitative.png (Fig. 4 layout) for ``samples`` and each method's ``predictions`` of them; nothing
    without samples."""
    if samples:
        save_figure(qualitative_grid(samples, predictions, stretch=stretch), out / "fig_qualitative.png")


def summary_text(method: str, summary: Mapping[str, Any], out: str | Path) -> str:
    """The lines a terminal shows of an evaluation's ``metrics.json`` summary: the overall image metrics and,
    where measured, the cloud-removal checks against the trivial baselines."""
    o = summary["overall"]
    lines = [f"{method}: {o['images']} images  MAE {100 * o['mae']:.2f} (x100)  PSNR {o['psnr']:.2f} dB  "
             f"SAM {o['sam']:.2f} deg  SSIM {o['ssim']:.3f}  -> {out}"]
    r = summary.get("removal")
    if r and r.get("mae_ratio") is not None:
        bias = ", ".join("n/a" if b is None else f"{100 * b:+.1f}" for b in r["band_bias"])
        grid = "n/a" if r["grid_ratio"] is None else f"{r['grid_ratio']:.2f}"
        clear = "n/a" if r["clear_change"] is None else f"{100 * r['clear_change']:.2f}"
        lines.append(f"  cloudy pixels: MAE {100 * r['mae_cloudy']:.2f} (x100) = {r['mae_ratio']:.2f} x the mean "
                     f"fill's; band bias (B, G, R, NIR) {bias} %; grid-artefact ratio {grid}; clear pixels changed "
                     f"by {clear} (x100)")
    return "\n".join(lines)
