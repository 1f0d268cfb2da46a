"""Markdown and CSV tables laid out like the paper's Table II (a) per land-cover class, (b) per cloud-cover bin."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from m3rcr.data.preprocess import CLOUD_COVER_BINS, LEVEL1_CLASSES
from m3rcr.evaluation.aggregate import spread, value

CLASS_TITLES = {"forest": "Forest", "rangeland": "Rangeland", "agriculture": "Agriculture", "urban": "Urban",
                "barren": "Barren", "water": "Water"}
# (key, column title, scale, decimals): MAE is printed x 100 as in the paper
OVERALL = (("mae", "MAE (x100)", 100.0, 2), ("psnr", "PSNR (dB)", 1.0, 2), ("sam", "SAM (deg)", 1.0, 2),
           ("ssim", "SSIM", 1.0, 3))


def _fmt(value: float | None, scale: float, decimals: int) -> str:
    return "-" if value is None else f"{value * scale:.{decimals}f}"


def cell(summary: Mapping[str, Any], path: tuple[str | int, ...], scale: float = 1.0, decimals: int = 2) -> str:
    """The value at ``path``, as ``mean ± std`` when the summary aggregates several seeds."""
    v = value(summary, *path)
    s = spread(summary, *path)
    if v is None:
        return "-"
    return _fmt(v, scale, decimals) + ("" if s is None else f" ± {s * scale:.{decimals}f}")


def _md(text: str) -> str:
    """A table cell's text with Markdown's table and HTML syntax escaped (a method may be named ``A|B``)."""
    return (str(text).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
            .replace("\n", " "))


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(map(_md, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(_md, r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def table_per_class(results: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Table II (a): per level-1 class MAE (x100) and SAM, then the overall metrics; one row per method."""
    classes = [c for c in LEVEL1_CLASSES[:6]]
    header = ["Method"] + [f"{CLASS_TITLES[c]} {m}" for c in classes for m in ("MAE", "SAM")]
    header += [title for _, title, _, _ in OVERALL]
    rows = []
    for method, summary in results.items():
        row = [method]
        for c in classes:
            row += [cell(summary, ("per_class", c, "mae"), 100, 2), cell(summary, ("per_class", c, "sam"), 1, 2)]
        row += [cell(summary, ("overall", k), s, d) for k, _, s, d in OVERALL]
        rows.append(row)
    return header, rows


def table_per_bin(results: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Table II (b): every metric per cloud-cover bin; one row per method and bin."""
    header = ["Method", "Cloud cover (%)", "Images"] + [title for _, title, _, _ in OVERALL]
    rows = []
    for method, summary in results.items():
        for b in CLOUD_COVER_BINS:
            m = summary["per_bin"][b]
            rows.append([method, b, str(m.get("images", 0))] + [cell(summary, ("per_bin", b, k), s, d)
                                                                 for k, _, s, d in OVERALL])
    return header, rows


def table_ndvi(results: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Table IV: NDVI RMSE and NDVI-level mIoU (%), overall and per cloud-cover bin; one row per method."""
    header = ["Method", "NDVI RMSE", "NDVI mIoU (%)"]
    header += [f"{m} {b} %" for b in CLOUD_COVER_BINS for m in ("RMSE", "mIoU")]
    rows = []
    for method, summary in results.items():
        row = [method, cell(summary, ("overall", "ndvi_rmse"), 1, 4), cell(summary, ("overall", "ndvi_miou"), 1, 2)]
        for b in CLOUD_COVER_BINS:
            row += [cell(summary, ("per_bin", b, "ndvi_rmse"), 1, 4), cell(summary, ("per_bin", b, "ndvi_miou"), 1, 2)]
        rows.append(row)
    return header, rows


def table_removal(results: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Cloud-removal checks (:mod:`m3rcr.evaluation.removal`): error on cloudy pixels against the
    constant mean fill, band bias under clouds, grid-artefact ratio, clear-pixel change."""
    header = ["Method", "MAE cloudy (x100)", "Mean fill (x100)", "vs mean fill", "Bias B / G / R / NIR (%)",
              "Grid ratio", "Clear change (x100)", "Clear changed (%)"]
    rows = []
    for method, summary in results.items():
        r = summary.get("removal")
        if not r:
            continue
        bias = " / ".join("-" if b is None else f"{100 * b:+.1f}" for b in r.get("band_bias") or []) or "-"
        rows.append([method, cell(summary, ("removal", "mae_cloudy"), 100, 2),
                     cell(summary, ("removal", "mae_mean_fill"), 100, 2), cell(summary, ("removal", "mae_ratio"), 1, 3),
                     bias, cell(summary, ("removal", "grid_ratio"), 1, 2),
                     cell(summary, ("removal", "clear_change"), 100, 3),
                     cell(summary, ("removal", "clear_changed_fraction"), 100, 1)])
    return header, rows


def markdown_report(results: Mapping[str, Mapping[str, Any]], title: str = "Image reconstruction") -> str:
    """Table II (a), (b), Table IV and the cloud-removal checks as one Markdown document."""
    a, b, c, d = table_per_class(results), table_per_bin(results), table_ndvi(results), table_removal(results)
    runs = {m: int(r.get("runs", 1)) for m, r in results.items()}
    seeds = ""
    if any(n > 1 for n in runs.values()):
        seeds = ("Methods trained with several seeds show the mean ± the sample standard deviation over their runs ("
                 + ", ".join(f"{m}: {n}" for m, n in runs.items() if n > 1) + ").\n\n")
    return (f"# {title}\n\n{seeds}## (a) Overall and per land-cover class\n\nMAE on the [0, 1] scale x 100, SAM in "
            f"degrees; per-class values pool all pixels of the class over the whole set.\n\n{markdown_table(*a)}\n"
            f"## (b) Per cloud-cover level\n\n{markdown_table(*b)}\n"
            f"## NDVI agreement (Table IV)\n\nRMSE between predicted and reference NDVI over all pixels; mIoU of "
            f"the five NDVI levels (< -0.1, -0.1-0.1, 0.1-0.4, 0.4-0.8, >= 0.8), in percent.\n\n{markdown_table(*c)}"
            + (f"\n## Cloud-removal checks\n\nOn cloudy pixels only: MAE of the method and of filling every cloudy "
               f"pixel with its image's mean clear-sky reflectance (per band), their ratio (below 1 beats the "
               f"constant fill), relative bias of each band's mean, the grid-artefact ratio (2x2 checkerboard and "
               f"stripe energy inside cloudy areas relative to the reference's; far above 1 means a grid texture), "
               f"and how much clear pixels differ from the cloudy input.\n\n{markdown_table(*d)}" if d[1] else ""))


def csv_text(header: list[str], rows: list[list[str]]) -> str:
    """A table as CSV text."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def write_table(out: Path, stem: str, title: str, header: list[str], rows: list[list[str]]) -> None:
    """One table as ``stem.md`` (with a title), ``stem.csv`` and ``stem.json`` (a list of row objects)."""
    import json

    from m3rcr.utils.files import atomic_path

    for suffix, text in ((".md", f"# {title}\n\n{markdown_table(header, rows)}"), (".csv", csv_text(header, rows)),
                         (".json", json.dumps([dict(zip(header, r)) for r in rows], indent=1))):
        with atomic_path(out / f"{stem}{suffix}") as tmp:
            tmp.write_text(text)
