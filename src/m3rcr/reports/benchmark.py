"""The benchmark report's own table (Table V, complexity) and its HTML page; the report itself is assembled
by :mod:`m3rcr.benchmark.report`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from m3rcr.reports.evaluation import PROTOCOL_COLUMNS
from m3rcr.reports.html import (
    Figure,
    evaluation_provenance,
    per_image_table,
    table_from_files,
    write_html_report,
)
from m3rcr.reports.tables import cell
from m3rcr.utils.provenance import environment

#: The paper's Table V (thop counts on an RTX 3090), for comparison.
PAPER_TABLE_V = {"dsen2cr": ("18.91 M", "483.77 G", "228.7 ms"), "glfcr": ("14.68 M", "95.13 G", "318.9 ms"),
                 "aligncr": ("43.53 M", "174.94 G", "309.4 ms")}
COMPLEXITY_TITLE = ("Complexity (Table V)\n\nParameters and MACs counted with PyTorch's flop counter (deformable "
                    "convolutions and attention matmuls included); latency: median forward time at batch 1. The "
                    "paper's figures come from thop on an RTX 3090.")


def table_complexity(entries: dict[str, dict[str, Any]], paper: Mapping[str, Sequence[str]] | None = PAPER_TABLE_V
                     ) -> tuple[list[str], list[list[str]]]:
    """Table V: parameters, MACs, latency per method, beside the ``paper``'s figures (None: no such column, e.g.
    on SEN12MS-CR, where the M3R-CR paper's figures do not apply)."""
    header = ["Method", "Parameters", "GMACs", "FLOPs (G)", "Latency (ms)", "Device"]
    header += [] if paper is None else ["Paper: params / FLOPs / time"]
    rows = []
    for method, c in entries.items():
        row = [method, f"{c['parameters']:,}", f"{c['macs'] / 1e9:.2f}", f"{c['flops'] / 1e9:.2f}",
               "-" if c.get("latency_ms") is None else f"{c['latency_ms']:.1f}",
               f"{c['device']}, {c['dtype']}, {c['threads']} threads, {c['input_size'][0]}x{c['input_size'][1]}"]
        if paper is not None:
            figures = paper.get(c.get("registry_name") or "")
            row.append(" / ".join(figures) if figures else "-")
        rows.append(row)
    return header, rows


#: protocol metric -> its key in a benchmark's ``published`` rows (None: not published)
PUBLISHED_KEYS = {"rmse": None, "psnr": "PSNR", "mae": "MAE", "sam": "SAM", "ssim": "SSIM"}


def table_vs_published(ours: Mapping[str, Mapping[str, Any]], published: Sequence[Mapping[str, Any]],
                       ours_label: str = "ours (this run)", published_label: str = "published (not run here)"
                       ) -> tuple[list[str], list[list[str]]]:
    """Our overall scores under a per-image protocol (SEN12MS-CR's; mean ± std over seeds) and, below them, the
    ``published`` rows (method, MAE, SAM, PSNR, SSIM, source; no RMSE), the first column saying which block a
    row belongs to. Published values keep the decimals of our columns."""
    header = ["Rows", "Method", "Images", *(title for _, title, _, _ in PROTOCOL_COLUMNS), "Source"]
    rows = [[ours_label, method, str(summary["overall"].get("images", 0)),
             *(cell(summary, ("overall", k), s, d) for k, _, s, d in PROTOCOL_COLUMNS), "this run"]
            for method, summary in ours.items()]
    for row in published:
        values = []
        for k, _, scale, decimals in PROTOCOL_COLUMNS:
            key = PUBLISHED_KEYS.get(k)
            values.append("-" if key is None or row.get(key) is None else f"{row[key] * scale:.{decimals}f}")
        rows.append([published_label, str(row["method"]), "-", *values, str(row["source"])])
    return header, rows


def write_benchmark_html(out: Path, stems: Sequence[str], figures: Sequence[Figure],
                         groups: Mapping[str, Sequence[Path]], notes: Sequence[str], config: Mapping[str, Any],
                         timings: Mapping[str, float]) -> None:
    """OUT/report/report.html: the tables ``stems`` written in ``out``, ``figures``, the per-image rows of the
    evaluations ``groups`` (method -> folders), the benchmark ``config`` and provenance, and step ``timings``."""
    tables = [t for t in (table_from_files(out, s) for s in stems) if t is not None]
    eval_config, eval_env = evaluation_provenance(groups)
    sections = {"Benchmark configuration (benchmark_config.yaml)": config, **eval_config}
    env = {"This report": environment(), **eval_env}
    if timings:
        env["Step times in seconds (benchmark_state.json)"] = {k: round(v, 1) for k, v in timings.items()}
    write_html_report(out / "report.html", "Benchmark report", tables, figures,
                      per_image_table(groups) if groups else None, sections, env, notes=notes)
