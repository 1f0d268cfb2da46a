"""The benchmark report (OUT/report): every table (Markdown, CSV, JSON) and figure of the paper's evaluation in
one folder, from whatever steps of a benchmark have finished."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from m3rcr.benchmark.config import semantic_source, slug, step_name
from m3rcr.evaluation.aggregate import aggregate
from m3rcr.evaluation.semantic import write_semantic_json
from m3rcr.reports.benchmark import COMPLEXITY_TITLE, table_complexity, write_benchmark_html
from m3rcr.reports.html import COMPARE_TABLES, Figure, compare_figures
from m3rcr.reports.semantic import write_semantic_tables
from m3rcr.reports.tables import write_table
from m3rcr.utils.files import atomic_path
from m3rcr.workflows.compare import compare_into


class BenchmarkState(Protocol):
    """What the report reads of a benchmark run (:class:`m3rcr.benchmark.Benchmark`)."""

    out: Path
    root: Path
    split: str
    crop: int | None
    figure_count: int
    config: dict[str, Any]
    done: dict[str, str]
    fingerprints: dict[str, str]
    timings: dict[str, float]

    def seeds(self, method: dict[str, Any]) -> list[int | None]: ...

    def eval_dir(self, method: dict[str, Any], seed: int | None) -> Path: ...


@dataclass
class _Report:
    """The report as it is assembled: results.json, report.md's lines, and report.html's tables and figures."""

    out: Path
    results: dict[str, Any]
    sections: list[str]
    tables: list[str] = field(default_factory=list)  # table stems of the finished sections, in order
    figures: list[Figure] = field(default_factory=list)


def _current(bench: BenchmarkState, step: str) -> bool:
    """Whether ``step`` finished, with the inputs of this configuration."""
    return step in bench.fingerprints and bench.done.get(step) == bench.fingerprints[step]


def _image_section(report: _Report, groups: dict[str, list[Path]], figure_count: int) -> None:
    """Tables II and IV, Figs. 4, 5, 8 and 9 of the evaluated methods (report.html, written last, holds every
    section)."""
    out = report.out
    image = compare_into(list(groups.values()), out, names=list(groups), figure_count=figure_count, html=False)
    keep = ("overall", "per_class", "per_bin", "removal", "images", "runs", "std")
    report.results["image"] = {m: {k: image[m][k] for k in keep if k in image[m]} for m in groups}
    report.sections += [
        (out / "tables.md").read_text().replace("# Image reconstruction", "## Image reconstruction (Table II)"), "",
        "![Metrics per cloud-cover level (Fig. 5)](fig_metrics_by_cloud_cover.png)", "",
        "![Qualitative results (Fig. 4)](fig_qualitative.png)", "",
        "![NDVI per cloud-cover level (Fig. 9)](fig_ndvi_by_cloud_cover.png)", "",
        "![Predicted vs reference NDVI (Fig. 8)](fig_ndvi_density.png)", ""]
    report.tables += COMPARE_TABLES
    report.figures += compare_figures(out)


def _semantic_section(report: _Report, bench: BenchmarkState) -> None:
    """Table III and Figs. 6 and 7, with one row / line per method (its seeds aggregated)."""
    out, semantic = report.out, bench.out / "semantic"
    runs = json.loads((semantic / "semantic.json").read_text())
    per_method: dict[str, Any] = {k: aggregate([v]) for k, v in runs.items() if k in ("Cloud-free", "Cloudy")}
    for method in bench.config["methods"]:
        seeds = bench.seeds(method)
        names = [semantic_source(method["name"], k, len(seeds)) for k in seeds]
        if method["name"] not in per_method and all(n in runs for n in names):
            per_method[method["name"]] = aggregate([runs[n] for n in names])
    write_semantic_json(out, per_method)
    write_semantic_tables(out, per_method)
    if (semantic / "fig_landcover_maps.png").is_file():
        shutil.copyfile(semantic / "fig_landcover_maps.png", out / "fig_landcover_maps.png")
    report.results["semantic"] = per_method
    report.sections += [(out / "table_semantic.md").read_text().replace("# Semantic", "## Semantic"), "",
                        "![Gap to cloud-free segmentation (Fig. 6)](fig_semantic_gap.png)", "",
                        "![Land-cover maps (Fig. 7)](fig_landcover_maps.png)", ""]
    report.tables.append("table_semantic")
    report.figures += [Figure(out / "fig_semantic_gap.png", "Gap to cloud-free segmentation (Fig. 6)"),
                       Figure(out / "fig_landcover_maps.png", "Land-cover maps (Fig. 7)")]


def _complexity_section(report: _Report, bench: BenchmarkState) -> None:
    """Table V from the finished complexity steps."""
    for method in bench.config["methods"]:
        m = method["name"]
        if _current(bench, f"complexity:{slug(m)}"):
            report.results["complexity"][m] = json.loads((bench.out / "complexity" / f"{slug(m)}.json").read_text())
    if report.results["complexity"]:
        write_table(report.out, "table_complexity", COMPLEXITY_TITLE, *table_complexity(report.results["complexity"]))
        report.sections += ["#" + (report.out / "table_complexity.md").read_text(), ""]
        report.tables.append("table_complexity")


def write_report(bench: BenchmarkState) -> Path:
    """Write OUT/report from whatever steps of ``bench`` have finished."""
    out = bench.out / "report"
    out.mkdir(parents=True, exist_ok=True)
    methods = [m["name"] for m in bench.config["methods"]]
    seeds = {m["name"]: bench.seeds(m) for m in bench.config["methods"]}
    by_name = {m["name"]: m for m in bench.config["methods"]}
    # a method is in the tables once every one of its seeds is evaluated
    evaluated = [m for m in methods if all(_current(bench, step_name("evaluate", by_name[m], k)) for k in seeds[m])]
    groups = {m: [bench.eval_dir(by_name[m], k) for k in seeds[m]] for m in evaluated}
    crop = "whole tiles" if not bench.crop else f"centred {bench.crop} x {bench.crop} crops"
    report = _Report(out, {"methods": methods, "image": {}, "semantic": None, "complexity": {},
                           "seeds": {m: [k for k in seeds[m] if k is not None] for m in methods}},
                     ["# Benchmark report", "", f"Data: `{bench.root}`, split `{bench.split}`, {crop}.", ""])
    if evaluated:
        _image_section(report, groups, bench.figure_count)
    if _current(bench, "semantic"):
        _semantic_section(report, bench)
    _complexity_section(report, bench)
    sections = report.sections
    pending = [m for m in methods if m not in evaluated]
    trained = {m: len(seeds[m]) for m in methods if len(seeds[m]) > 1}
    if trained:
        sections.insert(4, "Seeds: " + ", ".join(f"{m} x {n}" for m, n in trained.items())
                        + " (tables: mean ± sample standard deviation over the seeds; figures: error bars).")
        sections.insert(5, "")
    if bench.config.get("segmentation") and not _current(bench, "semantic"):
        pending.append("semantic evaluation")
    if pending:
        sections += [f"_Not finished yet: {', '.join(pending)}._", ""]
    sections += [("Per-image results: `../eval/<method>/seed<k>/metrics.csv`; predictions: "
                 "`../eval/<method>/seed<k>/predictions/` (`../eval/cloudy/` for the cloudy floor)."), ""]
    with atomic_path(out / "results.json") as tmp:
        tmp.write_text(json.dumps(report.results, indent=1))
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(sections))
    notes = [sections[2], *(s for s in sections if s.startswith(("Seeds: ", "_Not finished yet")))]  # data, seeds
    write_benchmark_html(out, report.tables, report.figures, groups, [n.strip("_") for n in notes],
                         bench.config, bench.timings)
    return out
