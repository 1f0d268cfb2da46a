"""Markdown and CSV tables laid out like the paper's Table II (a) per land-cover class, (b) per cloud-cover bin."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from m3rcr.data.preprocess import CLOUD_COVER_BINS, LEVEL1_CLASSES

CLASS_TITLES = {"forest": "Forest", "rangeland": "Rangeland", "agriculture": "Agriculture", "urban": "Urban",
                "barren": "Barren", "water": "Water"}
# (key, column title, scale, decimals): MAE is printed x 100 as in the paper
OVERALL = (("mae", "MAE (x100)", 100.0, 2), ("psnr", "PSNR (dB)", 1.0, 2), ("sam", "SAM (deg)", 1.0, 2),
           ("ssim", "SSIM", 1.0, 3))


def _fmt(value: float | None, scale: float, decimals: int) -> str:
    return "-" if value is None else f"{value * scale:.{decimals}f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def table_per_class(results: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Table II (a): per level-1 class MAE (x100) and SAM, then the overall metrics; one row per method."""
    classes = [c for c in LEVEL1_CLASSES[:6]]
    header = ["Method"] + [f"{CLASS_TITLES[c]} {m}" for c in classes for m in ("MAE", "SAM")]
    header += [title for _, title, _, _ in OVERALL]
    rows = []
    for method, summary in results.items():
        per_class = summary.get("per_class", {})
        row = [method]
        for c in classes:
            row += [_fmt(per_class.get(c, {}).get("mae"), 100, 2), _fmt(per_class.get(c, {}).get("sam"), 1, 2)]
        row += [_fmt(summary["overall"].get(k), s, d) for k, _, s, d in OVERALL]
        rows.append(row)
    return header, rows


def table_per_bin(results: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Table II (b): every metric per cloud-cover bin; one row per method and bin."""
    header = ["Method", "Cloud cover (%)", "Images"] + [title for _, title, _, _ in OVERALL]
    rows = []
    for method, summary in results.items():
        for b in CLOUD_COVER_BINS:
            m = summary["per_bin"][b]
            rows.append([method, b, str(m.get("images", 0))] + [_fmt(m.get(k), s, d) for k, _, s, d in OVERALL])
    return header, rows


def table_ndvi(results: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Table IV: NDVI RMSE and NDVI-level mIoU (%), overall and per cloud-cover bin; one row per method."""
    header = ["Method", "NDVI RMSE", "NDVI mIoU (%)"]
    header += [f"{m} {b} %" for b in CLOUD_COVER_BINS for m in ("RMSE", "mIoU")]
    rows = []
    for method, summary in results.items():
        o = summary["overall"]
        row = [method, _fmt(o.get("ndvi_rmse"), 1, 4), _fmt(o.get("ndvi_miou"), 1, 2)]
        for b in CLOUD_COVER_BINS:
            m = summary["per_bin"][b]
            row += [_fmt(m.get("ndvi_rmse"), 1, 4), _fmt(m.get("ndvi_miou"), 1, 2)]
        rows.append(row)
    return header, rows


def markdown_report(results: Mapping[str, Mapping[str, Any]], title: str = "Image reconstruction") -> str:
    """Table II (a), (b) and Table IV as one Markdown document."""
    a, b, c = table_per_class(results), table_per_bin(results), table_ndvi(results)
    return (f"# {title}\n\n## (a) Overall and per land-cover class\n\nMAE on the [0, 1] scale x 100, SAM in "
            f"degrees; per-class values pool all pixels of the class over the whole set.\n\n{markdown_table(*a)}\n"
            f"## (b) Per cloud-cover level\n\n{markdown_table(*b)}\n"
            f"## NDVI agreement (Table IV)\n\nRMSE between predicted and reference NDVI over all pixels; mIoU of "
            f"the five NDVI levels (< -0.1, -0.1-0.1, 0.1-0.4, 0.4-0.8, >= 0.8), in percent.\n\n{markdown_table(*c)}")


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
