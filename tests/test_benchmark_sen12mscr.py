"""m3rcr benchmark on SEN12MS-CR: a tiny benchmark (cloudy, mean fill and one trained model on a 64 px synthetic
SEN12MS-CR) end to end with the published rows in its report, resuming, and the configuration checks."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from paths import CONFIGS, SHARED, require_shared

from m3rcr.benchmark import Benchmark, load_benchmark_config
from m3rcr.cli import main
from m3rcr.errors import DataError
from m3rcr.evaluation.evaluate import read_prediction
from m3rcr.training.config import ConfigError

TINY_DSEN2CR = ["model.config={features: 8, blocks: 1}"]
FAST = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "data.crop_size=32",
        "data.eval_crop_size=null", "data.batch_size=2"]
PUBLISHED_LABEL = ("published (ECRformer README table (secondary source, not checked against each paper); test "
                   "split of the published ROI lists (sen12mscr_splits.tsv); not run here)")


@pytest.fixture(scope="module")
def synth12(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic SEN12MS-CR, 4 seasons x 1 ROI x 2 patches of 64 px (train 4, val 2, test 2 patches)."""
    from m3rcr.data.synthetic.sen12mscr import Sen12mscrSynthConfig, generate_sen12mscr

    return generate_sen12mscr(tmp_path_factory.mktemp("s12") / "data",
                              Sen12mscrSynthConfig(size=64, rois_per_season=1, patches_per_roi=2), seed=0)


def tiny_config(folder: Path, root: Path) -> Path:
    """configs/benchmark_sen12mscr_demo.yaml cut down: cloudy, mean fill and a tiny DSen2-CR (its resnet
    scaling) for two steps, cloud masks off."""
    config = yaml.safe_load((CONFIGS / "benchmark_sen12mscr_demo.yaml").read_text())
    config["data"] = {"dataset": "sen12mscr", "root": str(root), "split": "test", "crop": None, "cloud_masks": "none"}
    config["seeds"] = [0]
    config["overrides"] = [*config["overrides"], *FAST]
    methods = {m["name"]: m for m in config["methods"]}
    config["methods"] = [methods["Cloudy"], methods["Mean fill"], {**methods["DSen2-CR"], "overrides": TINY_DSEN2CR}]
    config["complexity"] = {"size": 64, "repeats": 0, "device": "cpu"}
    config["evaluation"] = {"batch_size": 2, "device": "cpu", "figure_count": 2}
    path = folder / "benchmark.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def bench_out(synth12: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny benchmark, run once through the command line: (its configuration, its output folder)."""
    folder = tmp_path_factory.mktemp("bench")
    config = tiny_config(folder, synth12)
    out = folder / "out"
    with warnings.catch_warnings():  # the tiny training's (few steps, small loaders)
        warnings.simplefilter("ignore")
        assert main(["benchmark", "--config", str(config), "--out", str(out)]) == 0
    return config, out


def test_tiny_benchmark_writes_our_rows_beside_the_published_ones(bench_out: tuple[Path, Path]) -> None:
    _, out = bench_out
    report = out / "report"
    for name in ("report.md", "report.html", "results.json", "fig_qualitative.png",
                 *(f"table_{t}.{ext}" for t in ("vs_published", "overall", "complexity") for ext in ("md", "csv",
                                                                                                     "json"))):
        assert (report / name).is_file(), name
    assert not (report / "table_semantic.md").exists() and not (out / "semantic").exists()  # no land cover
    assert not (report / "fig_metrics_by_cloud_cover.png").exists()  # masks off: no cloud-cover bins
    results = json.loads((report / "results.json").read_text())
    assert results["dataset"] == "sen12mscr" and set(results["image"]) == {"Cloudy", "Mean fill", "DSen2-CR"}
    assert results["comparable"] is False and len(results["published"]) == 7
    rows = json.loads((report / "table_vs_published.json").read_text())
    ours = [r for r in rows if r["Rows"] == "ours (this run)"]
    published = [r for r in rows if r["Rows"] == "published (not run here)"]
    assert [r["Method"] for r in ours] == ["Cloudy", "Mean fill", "DSen2-CR"] and len(published) == 7
    dsen = next(r for r in published if r["Method"] == "DSen2-CR (ISPRS 2020)")
    assert (dsen["MAE"], dsen["SAM (deg)"], dsen["PSNR (dB)"], dsen["SSIM"], dsen["RMSE"]) == \
        ("0.0313", "9.472", "27.76", "0.874", "-")
    md = (report / "report.md").read_text()
    assert f"Rows 'published (not run here)': {PUBLISHED_LABEL}, copied from" in md
    assert "**Not comparable" in md and "synthetic SEN12MS-CR" in md
    assert "exact ROI matching" in md and "matched exactly (reference_compatible: false)" in md
    assert "No cloud-cover bins" in md and "Paper:" not in (report / "table_complexity.md").read_text()
    html = (report / "report.html").read_text()
    assert "not run here" in html and "NOT comparable with the published rows" in html
    complexity = json.loads((out / "complexity" / "dsen2-cr.json").read_text())
    assert complexity["input_size"] == [64, 64] and complexity["registry_name"] == "dsen2cr"


def test_each_method_is_scored_with_its_own_preprocessing_on_reflectance(bench_out: tuple[Path, Path],
                                                                         synth12: Path) -> None:
    """DSen2-CR trains with resnet scaling (S2 / 2000): it is read that way, and its scores and predictions are
    on reflectance, as the cloudy row's (default scaling)."""
    from m3rcr.data.datasets.sen12mscr import SEN12MSCRDataset

    _, out = bench_out
    dsen = json.loads((out / "eval" / "dsen2-cr" / "seed0" / "metrics.json").read_text())
    cloudy = json.loads((out / "eval" / "cloudy" / "metrics.json").read_text())
    assert dsen["preprocessing"] == "resnet" and cloudy["preprocessing"] == "default"
    assert dsen["protocol"]["reflectance_per_unit"] == 0.2 and len(dsen["bands"]) == 13
    ds = SEN12MSCRDataset(synth12, "test", cloud_masks="none")
    maes = []
    for i, name in enumerate(ds.names):
        pred = read_prediction(out / "eval" / "dsen2-cr" / "seed0" / "predictions" / f"{name}.tif").numpy()
        maes.append(np.abs(pred.astype(np.float64) - ds[i]["cloudfree"].numpy()).mean())
    assert dsen["overall"]["mae"] == pytest.approx(np.mean(maes), abs=2e-4)  # predictions are stored x 10000
    assert 0 < cloudy["overall"]["mae"] < 1 and dsen["images"] == cloudy["images"] == 2


def test_resumed_benchmark_skips_finished_steps(bench_out: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    config_path, out = bench_out
    calls: list[str] = []
    for name in ("make_data", "train_method", "evaluate_method", "complexity"):
        monkeypatch.setattr(Benchmark, name, lambda self, *a, name=name, **k: calls.append(name))
    lines: list[str] = []
    Benchmark(load_benchmark_config(config_path), out, progress=lines.append).run()
    assert calls == [] and sum("done earlier, skipped" in line for line in lines) == 6
    assert (out / "report" / "table_vs_published.md").is_file()
    # the data options are inputs: masks on changes every training and evaluation, not only the report
    config = load_benchmark_config(config_path)
    before = {name: fp for name, fp, _ in Benchmark(config, out, progress=lambda s: None).plan()}
    config["data"]["cloud_masks"] = "s2cloudless"
    after = {name: fp for name, fp, _ in Benchmark(config, out, progress=lambda s: None).plan()}
    assert {n for n in before if before[n] != after[n]} == set(before)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


BASE = "data: {dataset: sen12mscr, root: x}\nmethods: [{name: A, kind: cloudy}]\n"
GOOD_ROW = "{method: M, MAE: 0.03, SAM: 9.4, PSNR: 27.7, SSIM: 0.87, source: S}"


@pytest.mark.parametrize("published,message", [
    ("[{method: M, MAE: 0.03, SAM: 9.4, PSNR: 27.7, SSIM: 0.87}]", "source must be a non-empty text"),
    ("[{method: M, MAE: '0.03', SAM: 9.4, PSNR: 27.7, SSIM: 0.87, source: S}]", "MAE must be a number"),
    ("[{method: M, MAE: 0.03, SAM: 9.4, PSNR: 277, SSIM: 0.87, source: S}]", r"PSNR 277 is outside \[0.0, 100.0\]"),
    ("[{method: M, MAE: 3.1, SAM: 9.4, PSNR: 27.7, SSIM: 0.87, source: S}]", "MAE 3.1 is outside"),
    ("[{method: M, MAE: 0.03, SAM: 9.4, psnr: 27.7, SSIM: 0.87, source: S}]", r"'psnr' \(did you mean 'PSNR'\?\)"),
    (f"[{GOOD_ROW}, {GOOD_ROW}]", "'M': listed twice"),
    ("[{method: '', MAE: 0.03, SAM: 9.4, PSNR: 27.7, SSIM: 0.87, source: S}]", "method must be a non-empty text"),
    ("{method: M}", "must be a list of rows"),
    ("[]", "must be a list of rows"),
])
def test_bad_published_section_is_refused(tmp_path: Path, published: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_benchmark_config(_write(tmp_path / "b.yaml", BASE + f"published: {published}\n"))
    assert load_benchmark_config(_write(tmp_path / "ok.yaml", BASE + f"published: [{GOOD_ROW}]\n"))["published"]


@pytest.mark.parametrize("text,message", [
    (BASE + "segmentation: {config: configs/segmentation.yaml}\n", "sen12mscr has no land-cover maps"),
    (f"data: {{root: x}}\nmethods: [{{name: A, kind: cloudy}}]\npublished: [{GOOD_ROW}]\n",
     "published rows are SEN12MS-CR's"),
    ("data: {root: x, layout: official}\nmethods: [{name: A, kind: cloudy}]\n", "unknown key 'layout'"),
    ("data: {dataset: sen12mscr, root: x, cloud_mask: none}\nmethods: [{name: A, kind: cloudy}]\n",
     r"'cloud_mask' \(did you mean 'cloud_masks'\?\)"),
    ("data: {dataset: sen12mcr, root: x}\nmethods: [{name: A, kind: cloudy}]\n", "did you mean 'sen12mscr'"),
    ("data: {dataset: sen12mscr, root: x, synth: {size: 4}}\nmethods: [{name: A, kind: cloudy}]\n",
     "data.synth: size must be >= 16"),
    ("data: {dataset: sen12mscr, root: x, synth: {sise: 64}}\nmethods: [{name: A, kind: cloudy}]\n",
     "data.synth: .*sise"),
    ("data: {dataset: sen12mscr, root: x, reference_compatible: 1}\nmethods: [{name: A, kind: cloudy}]\n",
     "reference_compatible must be true or false"),
    ("data: {dataset: sen12mscr, root: x}\nmethods: [{name: A, kind: median}]\n", "'cloudy', 'mean' or 'train'"),
    # the dataset's own options are checked by its constructor before any step runs
    ("data: {dataset: sen12mscr, root: x, layout: bogus}\nmethods: [{name: A, kind: cloudy}]\n",
     "layout must be one of"),
    ("data: {dataset: sen12mscr, root: x, bands: [B2, B13]}\nmethods: [{name: A, kind: cloudy}]\n",
     "unknown band.*B13"),
    ("data: {dataset: sen12mscr, root: x, mask_cache: 5}\nmethods: [{name: A, kind: cloudy}]\n",
     "mask_cache must be"),
    ("data: {dataset: sen12mscr, root: x, crop: -3}\nmethods: [{name: A, kind: cloudy}]\n",
     "data.crop must be a positive"),
])
def test_bad_benchmark_configuration_is_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_benchmark_config(_write(tmp_path / "b.yaml", text))


def test_a_method_on_other_data_is_refused_before_it_trains(tmp_path: Path, synth12: Path) -> None:
    """An M3R-CR training configuration in a SEN12MS-CR benchmark, and a checkpoint of another band layout."""
    from m3rcr.models import create_model
    from m3rcr.models.checkpoint import save_checkpoint

    config = load_benchmark_config(_write(tmp_path / "b.yaml", (
        f"data: {{dataset: sen12mscr, root: {synth12}, cloud_masks: none}}\n"
        f"methods: [{{name: A, config: {CONFIGS / 'dsen2cr.yaml'}}}]\n")))
    with pytest.raises(ConfigError, match="trains on dataset 'm3rcr', but the benchmark runs on 'sen12mscr'"):
        Benchmark(config, tmp_path / "out", progress=lambda s: None).plan()
    ckpt = save_checkpoint(create_model("dsen2cr", features=8, blocks=1), tmp_path / "m3rcr.ckpt")  # 4 bands
    config["methods"] = [{"name": "A", "checkpoint": str(ckpt)}]
    with pytest.raises(DataError, match="trained on M3R-CR"):
        Benchmark(config, tmp_path / "out", progress=lambda s: None).evaluate_method(config["methods"][0])


def test_shipped_sen12mscr_benchmarks_load_with_every_method() -> None:
    full = load_benchmark_config(CONFIGS / "benchmark_sen12mscr.yaml")
    demo = load_benchmark_config(CONFIGS / "benchmark_sen12mscr_demo.yaml")
    for config in (full, demo):
        assert config["data"]["dataset"] == "sen12mscr" and "segmentation" not in config
        kinds = [m.get("kind", "train") for m in config["methods"]]
        assert kinds.count("cloudy") == kinds.count("mean") == 1 and kinds.count("train") == 8
        assert all("/sen12mscr/" in m["config"] for m in config["methods"] if m.get("config"))
        assert config["published"] == full["published"]
    assert full["data"]["root"] == "data/sen12mscr" and full["seeds"] == [0] and full["data"]["crop"] is None
    assert demo["data"].get("synth")


def test_published_rows_are_those_of_the_spec() -> None:
    """configs/benchmark_sen12mscr.yaml's published rows are spec section 6's table, number for number."""
    spec = require_shared(SHARED / "specs" / "sen12mscr.md").read_text()
    section = spec.split("## 6.", 1)[1].split("\n## ", 1)[0]
    table = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()
             if re.match(r"\| [A-Z]", line) and not line.startswith("| method")]
    rows = load_benchmark_config(CONFIGS / "benchmark_sen12mscr.yaml")["published"]
    assert [(r["method"], r["MAE"], r["SAM"], r["PSNR"], r["SSIM"]) for r in rows] == \
        [(m, float(mae), float(sam), float(psnr), float(ssim)) for m, mae, sam, psnr, ssim in table]


def test_real_sample_rows_say_why_they_do_not_compare(tmp_path: Path) -> None:
    """On the real test patch (official layout) the trivial baselines are scored; the report names the split rule
    and says the rows do not compare with the published ones: 1 patch of 1 of the 10 test ROIs is not the test
    split."""
    root = require_shared(SHARED / "data" / "sen12mscr-official")
    config = load_benchmark_config(_write(tmp_path / "b.yaml", (
        f"data: {{dataset: sen12mscr, root: {root}, cloud_masks: none}}\n"
        "methods: [{name: Cloudy, kind: cloudy}, {name: Mean fill, kind: mean}]\n"
        f"published: [{GOOD_ROW}]\nevaluation: {{device: cpu, figure_count: 1}}\n")))
    out = Benchmark(config, tmp_path / "out", progress=lambda s: None).run()
    results = json.loads((out / "report" / "results.json").read_text())
    assert results["comparable"] is False and results["image"]["Cloudy"]["overall"]["images"] == 1
    md = (out / "report" / "report.md").read_text()
    assert "**Not comparable" in md and "(official layout)" in md
    assert "patches of 1 of the 10 published test ROIs" in md
    assert "published ROI lists matched exactly" in md and "synthetic" not in md