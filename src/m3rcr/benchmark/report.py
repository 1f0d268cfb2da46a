"""The benchmark report (OUT/report): every table (Markdown, CSV, JSON) and figure of the paper's evaluation in
one folder, from whatever steps of a benchmark have finished.

On SEN12MS-CR the report holds that dataset's protocol (RMSE, PSNR, MAE, SAM, SSIM overall and per cloud-cover
bin), the ``published`` rows of the configuration beside ours, labelled as not run here, and what makes our
numbers not comparable with them (synthetic data, another split rule, crop, split or bands)."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from m3rcr.benchmark.config import semantic_source, slug, step_name
from m3rcr.data.sen12mscr.layout import detect_layout, list_triplets
from m3rcr.data.sen12mscr.splits import split_table
from m3rcr.errors import DataError
from m3rcr.evaluation.aggregate import aggregate
from m3rcr.evaluation.compare import load_comparison
from m3rcr.evaluation.evaluate import read_prediction, spread_over_bins
from m3rcr.evaluation.semantic import write_semantic_json
from m3rcr.reports.benchmark import (
    COMPLEXITY_TITLE,
    table_complexity,
    table_vs_published,
    write_benchmark_html,
)
from m3rcr.reports.evaluation import write_protocol_tables, write_qualitative
from m3rcr.reports.html import COMPARE_TABLES, Figure, compare_figures
from m3rcr.reports.semantic import write_semantic_tables
from m3rcr.reports.tables import markdown_table, write_table
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
    dataset: str
    dataset_options: dict[str, Any]

    def seeds(self, method: dict[str, Any]) -> list[int | None]: ...

    def eval_dir(self, method: dict[str, Any], seed: int | None) -> Path: ...

    def scored_dataset(self, record: dict[str, Any] | None = None) -> Any: ...

    def bands(self) -> list[str]: ...


@dataclass
class _Report:
    """The report as it is assembled: results.json, report.md's lines, and report.html's tables and figures."""

    out: Path
    results: dict[str, Any]
    sections: list[str]
    tables: list[str] = field(default_factory=list)  # table stems of the finished sections, in order
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # report.html's notes beyond the data and seeds lines


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


DATASET_TITLES = {"sen12mscr": "SEN12MS-CR", "m3rcr": "M3R-CR"}
#: the first cell of our rows and of the published rows in the table that shows them together
OUR_ROWS, PUBLISHED_ROWS = "ours (this run)", "published (not run here)"
#: what the published rows were computed on, when a row does not say (spec section 6)
PUBLISHED_SPLIT = "test split of the published ROI lists (sen12mscr_splits.tsv)"


def published_label(rows: list[dict[str, Any]]) -> str:
    """The block label of the published rows: 'published (SOURCE; SPLIT; not run here)'."""
    sources = list(dict.fromkeys(str(r["source"]) for r in rows))
    splits = list(dict.fromkeys(str(r.get("split") or PUBLISHED_SPLIT) for r in rows))
    return f"published ({'; '.join(sources)}; {'; '.join(splits)}; not run here)"


def _split_csv(bench: BenchmarkState) -> Path | None:
    """The flat layout's split CSV that picks our split, as the dataset finds it (None: the published split)."""
    try:
        listing = list_triplets(bench.root, bench.dataset_options.get("layout"))
    except DataError:  # no dataset there yet
        return None
    return listing.csv_file if listing.csv_splits else None


def split_rule(bench: BenchmarkState) -> str:
    """Which rule picked the images of our split (SEN12MS-CR)."""
    csv_file = _split_csv(bench)
    if csv_file is not None:
        return f"the flat layout's split CSV {csv_file}"
    if bench.dataset_options.get("reference_compatible"):
        return ("the reference loader's substring rule (reference_compatible: true), as the published rows; it also "
                "puts patches of 6 of the 10 test ROIs into train")
    return "the published ROI lists matched exactly (reference_compatible: false)"


def comparability(bench: BenchmarkState) -> tuple[list[str], bool]:
    """Notes on what separates our SEN12MS-CR numbers from the published ones, and whether they compare at all
    (real data, the whole published test split, whole patches, all 13 bands)."""
    notes, comparable = [], True
    if (bench.root / "synthetic.json").is_file():
        comparable = False
        notes.append(f"Our numbers are on synthetic SEN12MS-CR ({bench.root / 'synthetic.json'}): they do not "
                     "compare with the published rows, which are on the real data.")
    if bench.split != "test":
        comparable = False
        notes.append(f"We scored split {bench.split!r}; the published rows are on the test split.")
    csv_file = _split_csv(bench)
    if csv_file is not None:
        comparable = False
        notes.append(f"Our split comes from the flat layout's CSV {csv_file}, not from the published ROI lists.")
    elif bench.split == "test":
        wanted = set(split_table()["test"])
        present = {t.roi_folder for t in bench.scored_dataset().samples} & wanted
        if present != wanted:
            comparable = False
            notes.append(f"Our test split holds patches of {len(present)} of the {len(wanted)} published test ROIs; "
                         "the published rows are on all of them.")
    if bench.crop:
        comparable = False
        notes.append(f"We scored centred {bench.crop} x {bench.crop} crops; the published rows whole 256 x 256 patches.")
    if len(bench.bands()) != 13:
        comparable = False
        notes.append(f"We scored {len(bench.bands())} bands; the published rows all 13.")
    rule = split_rule(bench)
    if bench.dataset_options.get("reference_compatible") or csv_file is not None:
        notes.append(f"Split rule of our numbers: {rule}.")
    else:
        notes.append(f"Split rule of our numbers: {rule}. The published rows come from the reference loader, whose "
                     "substring rule also trains on patches of 6 of the 10 test ROIs; our models never saw them, so "
                     "a gap to the published rows is not the methods' alone (reference_compatible: true reproduces "
                     "that rule).")
    return notes, comparable


def _protocol_figure(report: _Report, bench: BenchmarkState, groups: dict[str, list[Path]]) -> None:
    """The qualitative figure in true colour: samples spread over the cloud-cover bins that every method with
    saved predictions predicted, read again (reflectance scale) with the benchmark's data options."""
    preds = {m: Path(f[0]) / "predictions" for m, f in groups.items() if (Path(f[0]) / "predictions").is_dir()}
    if not preds or bench.figure_count <= 0:
        return
    with open(next(iter(preds.values())).parent / "metrics.csv", newline="") as fh:
        covers = [(row["name"], float(row["cloud_cover"] or "nan")) for row in csv.DictReader(fh)]
    common = [(n, c) for n, c in covers if all((p / f"{n}.tif").is_file() for p in preds.values())]
    ds = bench.scored_dataset(  # the files hold reflectance
        {"dataset": "sen12mscr", "preprocessing": "default", "optical_bands": bench.bands()})
    index = {n: i for i, n in enumerate(ds.names)}
    picked = [n for n in spread_over_bins(common, bench.figure_count) if n in index]
    predictions = {m: [read_prediction(p / f"{n}.tif") for n in picked] for m, p in preds.items()}
    write_qualitative(report.out, [ds[index[n]] for n in picked], predictions, spec=ds.spec)
    if (report.out / "fig_qualitative.png").is_file():
        report.sections += ["![Qualitative results (true colour B4, B3, B2)](fig_qualitative.png)", ""]
        report.figures.append(Figure(report.out / "fig_qualitative.png", "Qualitative results (true colour B4, B3, "
                                                                         "B2)"))


def _protocol_section(report: _Report, groups: dict[str, list[Path]], bench: BenchmarkState) -> None:
    """SEN12MS-CR: our overall scores beside the published rows, the per-cloud-cover table and figure (when images
    have a cloud cover), the qualitative figure."""
    out = report.out
    results = load_comparison(list(groups.values()), names=list(groups)).results
    write_protocol_tables(out, results, bench.dataset)
    keep = ("overall", "per_bin", "unbinned", "images", "runs", "std")
    report.results["image"] = {m: {k: results[m][k] for k in keep if k in results[m]} for m in groups}
    notes, comparable = comparability(bench)
    published = bench.config.get("published") or []
    report.results.update(published=published, comparable=comparable, comparability=notes)
    report.notes += [("Our rows compare with the published rows in data and protocol." if comparable else
                      "Our rows are NOT comparable with the published rows (see why below)."), *notes]
    title = DATASET_TITLES.get(bench.dataset, bench.dataset)
    report.sections += [f"## Image reconstruction ({title} protocol)", "",
                        ("Per image over all bands and pixels on the [0, 1] reflectance scale, no cloud mask: RMSE, "
                         "PSNR = 20 log10(1 / RMSE), MAE, SAM (degrees), SSIM (11 x 11 Gaussian window, sigma 1.5); "
                         "each score is the mean over images of its finite values."), ""]
    if published:
        label = published_label(published)
        write_table(out, "table_vs_published", f"Ours beside the published numbers\n\nRows '{PUBLISHED_ROWS}': "
                    f"{label}", *table_vs_published(results, published, OUR_ROWS, PUBLISHED_ROWS))
        report.tables.append("table_vs_published")
        verdict = ("**Comparable in data and protocol**" if comparable else
                   "**Not comparable: our rows and the published rows are not scored on the same images**")
        report.sections += ["### Ours beside the published numbers", "",
                            (f"Rows '{OUR_ROWS}': computed by this benchmark. Rows '{PUBLISHED_ROWS}': {label}, "
                             "copied from the configuration's `published` section (no RMSE published)."), "",
                            f"{verdict}:", "", *(f"- {n}" for n in notes), "",
                            markdown_table(*_table_rows(out / "table_vs_published.json"))]
        report.notes.append(f"Rows '{PUBLISHED_ROWS}' of the published-numbers table: {label}.")
    else:
        report.sections += [*(f"- {n}" for n in notes), ""]
    report.sections += ["### Overall (with the values each mean skipped)", "",
                        markdown_table(*_table_rows(out / "table_overall.json"))]
    report.tables.append("table_overall")
    binned = any((r["per_bin"][b].get("images") or 0) > 0 for r in results.values() for b in r["per_bin"])
    if binned:
        report.sections += ["### Per cloud-cover level (s2cloudless)", "",
                            markdown_table(*_table_rows(out / "table_per_bin.json")),
                            "![Metrics per cloud-cover level](fig_metrics_by_cloud_cover.png)", ""]
        report.tables.append("table_per_bin")
        report.figures.append(Figure(out / "fig_metrics_by_cloud_cover.png", "Metrics per cloud-cover level"))
    else:
        report.sections += ["_No cloud-cover bins: cloud masks are off (data.cloud_masks: none)._", ""]
    _protocol_figure(report, bench, groups)


def _table_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """A table written by :func:`~m3rcr.reports.tables.write_table`, back from its JSON (header, rows)."""
    rows = json.loads(path.read_text())
    header = list(rows[0]) if rows else []
    return header, [[r[h] for h in header] for r in rows]


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
    """Table V from the finished complexity steps (on another dataset than M3R-CR: without the paper's figures)."""
    for method in bench.config["methods"]:
        m = method["name"]
        if _current(bench, f"complexity:{slug(m)}"):
            report.results["complexity"][m] = json.loads((bench.out / "complexity" / f"{slug(m)}.json").read_text())
    if report.results["complexity"]:
        if bench.dataset == "m3rcr":
            title, table = COMPLEXITY_TITLE, table_complexity(report.results["complexity"])
        else:
            title = (f"Complexity\n\nParameters and MACs counted with PyTorch's flop counter (deformable convolutions "
                     f"and attention matmuls included) on {DATASET_TITLES.get(bench.dataset, bench.dataset)} inputs "
                     f"({len(bench.bands())} optical bands); latency: median forward time at batch 1.")
            table = table_complexity(report.results["complexity"], paper=None)
        write_table(report.out, "table_complexity", title, *table)
        report.sections += ["#" + (report.out / "table_complexity.md").read_text(), ""]
        report.tables.append("table_complexity")


def _data_line(bench: BenchmarkState) -> str:
    """The report's first line: which data, split and window were scored."""
    if bench.dataset == "m3rcr":
        crop = "whole tiles" if not bench.crop else f"centred {bench.crop} x {bench.crop} crops"
        return f"Data: `{bench.root}`, split `{bench.split}`, {crop}."
    crop = "whole patches" if not bench.crop else f"centred {bench.crop} x {bench.crop} crops"
    options = bench.dataset_options
    layout = _layout(bench)
    what = [w for w in ("synthetic" if (bench.root / "synthetic.json").is_file() else "",
                        f"{layout} layout" if layout else "") if w]
    rule = ("reference-compatible" if options.get("reference_compatible") else
            "split CSV" if _split_csv(bench) is not None else "exact ROI matching")
    described = f" ({', '.join(what)})" if what else ""
    return (f"Data: {DATASET_TITLES.get(bench.dataset, bench.dataset)} `{bench.root}`{described}, "
            f"split `{bench.split}` ({rule}), {crop}, "
            f"{len(bench.bands())} bands, cloud masks {options.get('cloud_masks', 's2cloudless')}.")


def _layout(bench: BenchmarkState) -> str | None:
    """SEN12MS-CR's folder layout: given, else detected (None where the root holds no dataset yet)."""
    try:
        return bench.dataset_options.get("layout") or detect_layout(bench.root)
    except DataError:
        return None


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
    report = _Report(out, {"methods": methods, "image": {}, "semantic": None, "complexity": {},
                           "seeds": {m: [k for k in seeds[m] if k is not None] for m in methods}},
                     ["# Benchmark report", "", _data_line(bench), ""])
    if evaluated and bench.dataset == "m3rcr":
        _image_section(report, groups, bench.figure_count)
    elif evaluated:
        report.results["dataset"] = bench.dataset
        _protocol_section(report, groups, bench)
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
    notes = [sections[2], *(s for s in sections if s.startswith("Seeds: ")), *report.notes,
             *(s for s in sections if s.startswith("_Not finished yet"))]  # data, seeds, comparability
    write_benchmark_html(out, report.tables, report.figures, groups, [n.strip("_") for n in notes],
                         bench.config, bench.timings)
    return out
