"""The benchmark report: every table (Markdown, CSV, JSON) and figure of the paper's evaluation in one folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from m3rcr.reports.html import (
    COMPARE_TABLES,
    Figure,
    compare_figures,
    evaluation_provenance,
    per_image_table,
    table_from_files,
    write_html_report,
)
from m3rcr.reports.tables import write_table
from m3rcr.utils.files import atomic_path

if TYPE_CHECKING:
    from m3rcr.benchmark import Benchmark

#: The paper's Table V (thop counts on an RTX 3090), for comparison.
PAPER_TABLE_V = {"dsen2cr": ("18.91 M", "483.77 G", "228.7 ms"), "glfcr": ("14.68 M", "95.13 G", "318.9 ms"),
                 "aligncr": ("43.53 M", "174.94 G", "309.4 ms")}


def table_complexity(entries: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Table V: parameters, MACs, latency per method, beside the paper's figures."""
    header = ["Method", "Parameters", "GMACs", "FLOPs (G)", "Latency (ms)", "Device", "Paper: params / FLOPs / time"]
    rows = []
    for method, c in entries.items():
        paper = PAPER_TABLE_V.get(c.get("registry_name") or "")
        rows.append([method, f"{c['parameters']:,}", f"{c['macs'] / 1e9:.2f}", f"{c['flops'] / 1e9:.2f}",
                     "-" if c.get("latency_ms") is None else f"{c['latency_ms']:.1f}",
                     f"{c['device']}, {c['dtype']}, {c['threads']} threads, {c['input_size'][0]}x{c['input_size'][1]}",
                     " / ".join(paper) if paper else "-"])
    return header, rows


def write_report(bench: Benchmark) -> Path:
    """Write OUT/report from whatever steps of ``bench`` have finished."""
    from m3rcr.benchmark import semantic_source, slug, step_name
    from m3rcr.evaluation.evaluate import compare_into

    out = bench.out / "report"
    out.mkdir(parents=True, exist_ok=True)
    def current(step: str) -> bool:  # finished, with the inputs of this configuration
        return step in bench.fingerprints and bench.done.get(step) == bench.fingerprints[step]

    methods = [m["name"] for m in bench.config["methods"]]
    by_name = {m["name"]: m for m in bench.config["methods"]}
    # a method is in the tables once every one of its seeds is evaluated
    evaluated = [m for m in methods
                 if all(current(step_name("evaluate", by_name[m], k)) for k in bench.seeds(by_name[m]))]
    results: dict[str, Any] = {"methods": methods, "image": {}, "semantic": None, "complexity": {},
                               "seeds": {m: [k for k in bench.seeds(by_name[m]) if k is not None] for m in methods}}
    sections = ["# Benchmark report", "", (f"Data: `{bench.root}`, split `{bench.split}`, "
                f"{'whole tiles' if not bench.crop else f'centred {bench.crop} x {bench.crop} crops'}."), ""]
    html_tables: list[str] = []  # report.html: table stems and figures of the finished sections, in order
    html_figures: list[Figure] = []
    if evaluated:
        groups = [[bench.eval_dir(by_name[m], k) for k in bench.seeds(by_name[m])] for m in evaluated]
        # report.html, written below, holds every section
        image = compare_into(groups, out, names=evaluated, figure_count=bench.figure_count, html=False)
        keep = ("overall", "per_class", "per_bin", "removal", "images", "runs", "std")
        results["image"] = {m: {k: image[m][k] for k in keep if k in image[m]} for m in evaluated}
        sections += [(out / "tables.md").read_text().replace("# Image reconstruction", "## Image reconstruction (Table II)"),
                     "", "![Metrics per cloud-cover level (Fig. 5)](fig_metrics_by_cloud_cover.png)", "",
                     "![Qualitative results (Fig. 4)](fig_qualitative.png)", "",
                     "![NDVI per cloud-cover level (Fig. 9)](fig_ndvi_by_cloud_cover.png)", "",
                     "![Predicted vs reference NDVI (Fig. 8)](fig_ndvi_density.png)", ""]
        html_tables += COMPARE_TABLES
        html_figures += compare_figures(out)
    semantic = bench.out / "semantic"
    if current("semantic"):
        from m3rcr.evaluation.aggregate import aggregate
        from m3rcr.evaluation.semantic import write_semantic_outputs

        runs = json.loads((semantic / "semantic.json").read_text())
        per_method: dict[str, Any] = {k: aggregate([v]) for k, v in runs.items() if k in ("Cloud-free", "Cloudy")}
        for m in methods:
            seeds = bench.seeds(by_name[m])
            names = [semantic_source(m, k, len(seeds)) for k in seeds]
            if m not in per_method and all(n in runs for n in names):
                per_method[m] = aggregate([runs[n] for n in names])
        write_semantic_outputs(out, per_method)  # Table III and Fig. 6 with one row / line per method
        if (semantic / "fig_landcover_maps.png").is_file():
            shutil.copyfile(semantic / "fig_landcover_maps.png", out / "fig_landcover_maps.png")
        results["semantic"] = per_method
        sections += [(out / "table_semantic.md").read_text().replace("# Semantic", "## Semantic"), "",
                     "![Gap to cloud-free segmentation (Fig. 6)](fig_semantic_gap.png)", "",
                     "![Land-cover maps (Fig. 7)](fig_landcover_maps.png)", ""]
        html_tables.append("table_semantic")
        html_figures += [Figure(out / "fig_semantic_gap.png", "Gap to cloud-free segmentation (Fig. 6)"),
                         Figure(out / "fig_landcover_maps.png", "Land-cover maps (Fig. 7)")]
    for m in methods:
        path = bench.out / "complexity" / f"{slug(m)}.json"
        if current(f"complexity:{slug(m)}"):
            results["complexity"][m] = json.loads(path.read_text())
    if results["complexity"]:
        header, rows = table_complexity(results["complexity"])
        title = ("Complexity (Table V)\n\nParameters and MACs counted with PyTorch's flop counter (deformable "
                 "convolutions and attention matmuls included); latency: median forward time at batch 1. The "
                 "paper's figures come from thop on an RTX 3090.")
        write_table(out, "table_complexity", title, header, rows)
        sections += ["#" + (out / "table_complexity.md").read_text(), ""]
        html_tables.append("table_complexity")
    pending = [m for m in methods if m not in evaluated]
    trained = {m: len(bench.seeds(by_name[m])) for m in methods if len(bench.seeds(by_name[m])) > 1}
    if trained:
        sections.insert(4, "Seeds: " + ", ".join(f"{m} x {n}" for m, n in trained.items())
                        + " (tables: mean ± sample standard deviation over the seeds; figures: error bars).")
        sections.insert(5, "")
    if bench.config.get("segmentation") and not current("semantic"):
        pending.append("semantic evaluation")
    if pending:
        sections += [f"_Not finished yet: {', '.join(pending)}._", ""]
    sections += [("Per-image results: `../eval/<method>/seed<k>/metrics.csv`; predictions: "
                 "`../eval/<method>/seed<k>/predictions/` (`../eval/cloudy/` for the cloudy floor)."), ""]
    with atomic_path(out / "results.json") as tmp:
        tmp.write_text(json.dumps(results, indent=1))
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(sections))
    notes = [sections[2], *(s for s in sections if s.startswith(("Seeds: ", "_Not finished yet")))]  # data, seeds
    _write_html(bench, out, html_tables, html_figures, {m: [bench.eval_dir(by_name[m], k) for k in
                                                            bench.seeds(by_name[m])] for m in evaluated}, notes)
    return out


def _write_html(bench: Benchmark, out: Path, stems: list[str], figures: list[Figure],
                groups: dict[str, list[Path]], notes: list[str]) -> None:
    """OUT/report/report.html: the finished sections, per-image rows, configuration and provenance."""
    from m3rcr.utils.provenance import environment

    tables = [t for t in (table_from_files(out, s) for s in stems) if t is not None]
    eval_config, eval_env = evaluation_provenance(groups)
    config = {"Benchmark configuration (benchmark_config.yaml)": bench.config, **eval_config}
    env = {"This report": environment(), **eval_env}
    if bench.timings:
        env["Step times in seconds (benchmark_state.json)"] = {k: round(v, 1) for k, v in bench.timings.items()}
    write_html_report(out / "report.html", "Benchmark report", tables, figures,
                      per_image_table(groups) if groups else None, config, env,
                      notes=[n.strip("_") for n in notes])
