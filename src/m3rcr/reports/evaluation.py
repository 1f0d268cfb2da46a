"""An evaluation's (or a comparison's) tables and figures, from its results (:mod:`m3rcr.evaluation`).

M3R-CR evaluations get the paper's layouts (Table II, IV, Figs. 4, 5, 8, 9); evaluations under another metric
protocol (SEN12MS-CR's) get an overall and a per-cloud-cover table of that protocol's metrics (no land-cover or
NDVI tables: SEN12MS-CR has no land cover), the metrics by cloud cover where images were binned, and the
qualitative figure in the dataset's true colour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from m3rcr.data.preprocess import CLOUD_COVER_BINS
from m3rcr.reports.figures import (
    metrics_by_cloud_cover,
    ndvi_by_cloud_cover,
    ndvi_density,
    qualitative_grid,
    save_figure,
)
from m3rcr.reports.tables import (
    cell,
    markdown_report,
    markdown_table,
    table_ndvi,
    table_per_bin,
    table_per_class,
    table_removal,
    write_table,
)
from m3rcr.utils.files import atomic_path

if TYPE_CHECKING:
    from m3rcr.evaluation.evaluate import EvalResult


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
                      stretch: str = "percentile", spec: Any | None = None) -> None:
    """fig_qualitative.png (Fig. 4 layout) for ``samples`` and each method's ``predictions`` of them; nothing
    without samples. ``spec``: the dataset's :class:`~m3rcr.data.DatasetSpec` where its images are not M3R-CR's
    4 bands (true colour from ``spec.rgb``, see :func:`~m3rcr.reports.figures.qualitative_grid`)."""
    if samples:
        save_figure(qualitative_grid(samples, predictions, stretch=stretch, spec=spec), out / "fig_qualitative.png")


#: columns of the protocol tables: (metric, title, scale, decimals), in the order published SEN12MS-CR tables use
PROTOCOL_COLUMNS = (("rmse", "RMSE", 1.0, 4), ("psnr", "PSNR (dB)", 1.0, 2), ("mae", "MAE", 1.0, 4),
                    ("sam", "SAM (deg)", 1.0, 3), ("ssim", "SSIM", 1.0, 3))


def _skipped(means: Mapping[str, Any]) -> str:
    """'psnr: 1 inf; sam: 2 NaN' for the values a mean left out ('-' when none)."""
    parts = []
    for kind, label in (("skipped_nan", "NaN"), ("skipped_inf", "inf")):
        parts += [f"{m}: {n} {label}" for m, n in (means.get(kind) or {}).items() if n]
    return "; ".join(parts) or "-"


def table_protocol(results: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Overall scores of a per-image protocol (SEN12MS-CR's): one row per method, means over images with the
    values each mean skipped (NaN, inf)."""
    header = ["Method", "Images", *(title for _, title, _, _ in PROTOCOL_COLUMNS), "Skipped"]
    rows = [[method, str(summary["overall"].get("images", 0)),
             *(cell(summary, ("overall", k), s, d) for k, _, s, d in PROTOCOL_COLUMNS),
             _skipped(summary["overall"])] for method, summary in results.items()]
    return header, rows


def table_protocol_per_bin(results: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """A per-image protocol's scores per cloud-cover bin; one row per method and bin."""
    header = ["Method", "Cloud cover (%)", "Images", *(title for _, title, _, _ in PROTOCOL_COLUMNS)]
    rows = []
    for method, summary in results.items():
        for b in CLOUD_COVER_BINS:
            rows.append([method, b, str(summary["per_bin"][b].get("images", 0)),
                         *(cell(summary, ("per_bin", b, k), s, d) for k, _, s, d in PROTOCOL_COLUMNS)])
    return header, rows


def write_protocol_tables(out: Path, results: Mapping[str, Mapping[str, Any]], protocol: str) -> None:
    """tables.md, table_overall and table_per_bin (.md, .csv, .json) of evaluations under a per-image protocol
    (``protocol``, e.g. ``sen12mscr``), and the metrics by cloud cover when some image has a bin."""
    out.mkdir(parents=True, exist_ok=True)
    overall, per_bin = table_protocol(results), table_protocol_per_bin(results)
    unbinned = {m: int((r.get("unbinned") or {}).get("images") or 0) for m, r in results.items()}
    note = "".join(f"\n{m}: {n} image(s) without a cloud cover (cloud masks off) are in no bin.\n"
                   for m, n in unbinned.items() if n)
    text = (f"# Image reconstruction ({protocol} protocol)\n\nPer image over all bands and pixels on the [0, 1] "
            f"reflectance scale, no cloud mask: RMSE, PSNR = 20 log10(1 / RMSE), MAE, SAM (degrees), SSIM (11 x 11 "
            f"Gaussian window, sigma 1.5); each score is the mean over images of its finite values (Skipped: the "
            f"NaN and inf values left out).\n\n## Overall\n\n{markdown_table(*overall)}\n"
            f"## Per cloud-cover level (s2cloudless)\n\n{markdown_table(*per_bin)}{note}")
    with atomic_path(out / "tables.md") as tmp:
        tmp.write_text(text)
    write_table(out, "table_overall", f"Overall ({protocol} protocol)", *overall)
    write_table(out, "table_per_bin", f"Per cloud-cover level ({protocol} protocol)", *per_bin)
    binned = any((r["per_bin"][b].get("images") or 0) > 0 for r in results.values() for b in CLOUD_COVER_BINS)
    if binned:
        save_figure(metrics_by_cloud_cover(results), out / "fig_metrics_by_cloud_cover.png")


def write_report(out: Path, result: EvalResult, stretch: str = "percentile", spec: Any | None = None) -> None:
    """The tables and figures of one evaluation, by its metric protocol (``result.protocol``): M3R-CR's
    (:func:`write_tables`, :func:`write_qualitative`) or a per-image protocol's (:func:`write_protocol_tables`,
    the qualitative figure in the true colour of the dataset ``spec``)."""
    method = result.method
    if result.protocol == "m3rcr":
        hist = {method: result.ndvi_hist} if result.ndvi_hist is not None else None
        write_tables(out, {method: result.summary}, hist)
        write_qualitative(out, result.samples, {method: result.predictions}, stretch)
        return
    write_protocol_tables(out, {method: result.summary}, result.protocol)
    write_qualitative(out, result.samples, {method: result.predictions}, stretch, spec=spec)


def summary_text(method: str, summary: Mapping[str, Any], out: str | Path) -> str:
    """The lines a terminal shows of an evaluation's ``metrics.json`` summary: the overall image metrics and,
    where measured, the cloud-removal checks against the trivial baselines."""
    o = summary["overall"]
    if "rmse" in o:  # a per-image protocol (SEN12MS-CR's)
        return _protocol_text(method, o, out)
    lines = [(f"{method}: {o['images']} images  MAE {100 * o['mae']:.2f} (x100)  PSNR {o['psnr']:.2f} dB  "
              f"SAM {o['sam']:.2f} deg  SSIM {o['ssim']:.3f}  -> {out}")]
    r = summary.get("removal")
    if r and r.get("mae_ratio") is not None:
        bias = ", ".join("n/a" if b is None else f"{100 * b:+.1f}" for b in r["band_bias"])
        grid = "n/a" if r["grid_ratio"] is None else f"{r['grid_ratio']:.2f}"
        clear = "n/a" if r["clear_change"] is None else f"{100 * r['clear_change']:.2f}"
        lines.append(f"  cloudy pixels: MAE {100 * r['mae_cloudy']:.2f} (x100) = {r['mae_ratio']:.2f} x the mean "
                     f"fill's; band bias (B, G, R, NIR) {bias} %; grid-artefact ratio {grid}; clear pixels changed "
                     f"by {clear} (x100)")
    return "\n".join(lines)


def _protocol_text(method: str, overall: Mapping[str, Any], out: str | Path) -> str:
    def f(key: str, fmt: str) -> str:
        v = overall.get(key)
        return "n/a" if v is None else format(v, fmt)

    skipped = sum(sum((overall.get(k) or {}).values()) for k in ("skipped_nan", "skipped_inf"))
    note = f"  ({skipped} NaN / inf value(s) skipped, see metrics.json)" if skipped else ""
    return (f"{method}: {overall['images']} images  RMSE {f('rmse', '.4f')}  PSNR {f('psnr', '.2f')} dB  "
            f"MAE {f('mae', '.4f')}  SAM {f('sam', '.2f')} deg  SSIM {f('ssim', '.3f')}{note}  -> {out}")
