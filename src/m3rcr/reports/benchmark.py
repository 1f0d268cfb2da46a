"""The benchmark report: every table (Markdown, CSV, JSON) and figure of the paper's evaluation in one folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    from m3rcr.benchmark import slug
    from m3rcr.evaluation.evaluate import compare

    out = bench.out / "report"
    out.mkdir(parents=True, exist_ok=True)
    def current(step: str) -> bool:  # finished, with the inputs of this configuration
        return step in bench.fingerprints and bench.done.get(step) == bench.fingerprints[step]

    methods = [m["name"] for m in bench.config["methods"]]
    evaluated = [m for m in methods if current(f"evaluate:{slug(m)}")]
    results: dict[str, Any] = {"methods": methods, "image": {}, "semantic": None, "complexity": {}}
    sections = ["# Benchmark report", "", f"Data: `{bench.root}`, split `{bench.split}`, "
                f"{'whole tiles' if not bench.crop else f'centred {bench.crop} x {bench.crop} crops'}.", ""]
    if evaluated:
        image = compare([bench.out / "eval" / slug(m) for m in evaluated], out, names=evaluated,
                        figure_count=bench.figure_count)
        results["image"] = {m: {k: image[m][k] for k in ("overall", "per_class", "per_bin", "images")}
                            for m in evaluated}
        sections += [(out / "tables.md").read_text().replace("# Image reconstruction", "## Image reconstruction (Table II)"),
                     "", "![Metrics per cloud-cover level (Fig. 5)](fig_metrics_by_cloud_cover.png)", "",
                     "![Qualitative results (Fig. 4)](fig_qualitative.png)", "",
                     "![NDVI per cloud-cover level (Fig. 9)](fig_ndvi_by_cloud_cover.png)", "",
                     "![Predicted vs reference NDVI (Fig. 8)](fig_ndvi_density.png)", ""]
    semantic = bench.out / "semantic"
    if current("semantic"):
        for name in ("semantic.json", "table_semantic.md", "table_semantic.csv", "table_semantic.json",
                     "fig_semantic_gap.png", "fig_landcover_maps.png"):
            if (semantic / name).is_file():
                shutil.copyfile(semantic / name, out / name)
        results["semantic"] = json.loads((semantic / "semantic.json").read_text())
        sections += [(semantic / "table_semantic.md").read_text().replace("# Semantic", "## Semantic"), "",
                     "![Gap to cloud-free segmentation (Fig. 6)](fig_semantic_gap.png)", "",
                     "![Land-cover maps (Fig. 7)](fig_landcover_maps.png)", ""]
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
    pending = [m for m in methods if m not in evaluated]
    if bench.config.get("segmentation") and not current("semantic"):
        pending.append("semantic evaluation")
    if pending:
        sections += [f"_Not finished yet: {', '.join(pending)}._", ""]
    sections += ["Per-image results: `../eval/<method>/metrics.csv`; predictions: `../eval/<method>/predictions/`.", ""]
    with atomic_path(out / "results.json") as tmp:
        tmp.write_text(json.dumps(results, indent=1))
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(sections))
    return out
