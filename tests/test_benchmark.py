"""m3rcr benchmark: a tiny version of configs/benchmark_demo.yaml end to end, and resuming a killed run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from paths import CONFIGS, REPO

from m3rcr.benchmark import Benchmark, load_benchmark_config
from m3rcr.cli import main
from m3rcr.training.config import ConfigError

TINY_ALIGNCR = ("model.config={features: 8, growth: 4, convs_per_block: 1, blocks: 1, num_heads: 2, war_blocks: 1, "
                "head_channels: 16, deformable_groups: 2}")
FAST = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "data.crop_size=48",
        "data.eval_crop_size=64"]


def tiny_demo(tmp_path: Path, synth_root: Path, methods: list[str] | None = None) -> Path:
    """configs/benchmark_demo.yaml with tiny models, a couple of steps each, and the shared synthetic set."""
    config = yaml.safe_load((CONFIGS / "benchmark_demo.yaml").read_text())
    assert config.pop("seeds") == [0, 1]  # one seed here; test_seeds_give_mean_and_spread_in_every_table has two
    config["data"] = {"root": str(synth_root), "split": "test", "crop": 96}
    config["overrides"] = [*config["overrides"], *FAST]
    tiny = {"McGAN": ["model.config={base_channels: 4}", "gan.discriminator_config={base_channels: 4}"],
            "SpA-GAN": ["model.config={channels: 4}", "gan.discriminator_config={base_channels: 4}"],
            "SAR-Opt-cGAN": ["model.config={base_channels: 4}", "gan.discriminator_config={base_channels: 4}"],
            "DSen2-CR": ["model.config={features: 8, blocks: 1}"],
            "GLF-CR": ["model.config={features: 8, growth: 4, layers_per_block: 1, blocks: 1, num_heads: 2, "
                       "head_channels: 16}"]}
    for m in config["methods"]:
        if m.get("kind") != "cloudy":
            m["overrides"] = tiny.get(m["name"], [TINY_ALIGNCR])
    if methods is not None:
        config["methods"] = [m for m in config["methods"] if m["name"] in methods]
    config["segmentation"]["overrides"] = ["model.config={encoder: resnet18}", *FAST, "data.val_fraction=0"]
    config["complexity"] = {"size": 64, "repeats": 1, "device": "cpu"}
    config["evaluation"] = {"batch_size": 5, "device": "cpu", "figure_count": 2}
    path = tmp_path / "benchmark.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.slow
def test_tiny_benchmark_demo_end_to_end(synth_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    assert main(["benchmark", "--config", str(tiny_demo(tmp_path, synth_root)), "--out", str(out)]) == 0
    report = out / "report"
    tables = [f"table_{t}.{ext}" for t in ("per_class", "per_bin", "ndvi", "semantic", "complexity")
              for ext in ("md", "csv", "json")]
    for name in ("report.md", "results.json", "tables.md", "semantic.json", *tables, "fig_metrics_by_cloud_cover.png",
                 "fig_qualitative.png", "fig_ndvi_by_cloud_cover.png", "fig_ndvi_density.png", "fig_semantic_gap.png",
                 "fig_landcover_maps.png"):
        assert (report / name).is_file(), name
    results = json.loads((report / "results.json").read_text())
    names = [m["name"] for m in yaml.safe_load((CONFIGS / "benchmark_demo.yaml").read_text())["methods"]]
    assert results["methods"] == names and len(names) == 9  # the cloudy floor and all eight methods
    assert set(results["image"]) == set(names)
    assert set(results["semantic"]) == {"Cloud-free", *names}
    assert set(results["complexity"]) == set(names) - {"Cloudy"}
    assert results["complexity"]["Align-CR"]["registry_name"] == "aligncr"
    md = (report / "report.md").read_text()
    assert "Table II" in md and "Table III" in md and "Table IV" in md and "Table V" in md
    # per-image results and predictions stay available for the user's own analysis
    assert (out / "eval" / "align-cr" / "seed0" / "metrics.csv").is_file()
    assert len(list((out / "eval" / "align-cr" / "seed0" / "predictions").glob("*.tif"))) == 5
    assert "Cloud-removal checks" in md and (report / "table_removal.csv").is_file()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_killed_benchmark_resumes(synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_benchmark_config(tiny_demo(tmp_path, synth_root, methods=["Cloudy", "DSen2-CR", "Align-CR"]))
    del config["segmentation"]
    out = tmp_path / "bench"
    calls: list[str] = []
    original_train, original_eval = Benchmark.train_method, Benchmark.evaluate_method

    def train(self, m, seed=None):
        calls.append(f"train:{m['name']}")
        return original_train(self, m, seed)

    def evaluate(self, m, seed=None):
        calls.append(f"evaluate:{m['name']}")
        if m["name"] == "Align-CR" and not (out / "killed").exists():
            (out / "killed").write_text("")
            raise KeyboardInterrupt  # the run is killed while evaluating the last method
        return original_eval(self, m, seed)

    monkeypatch.setattr(Benchmark, "train_method", train)
    monkeypatch.setattr(Benchmark, "evaluate_method", evaluate)
    with pytest.raises(KeyboardInterrupt):
        Benchmark(config, out, progress=lambda s: None).run()
    assert calls == ["train:DSen2-CR", "train:Align-CR", "evaluate:Cloudy", "evaluate:DSen2-CR", "evaluate:Align-CR"]
    calls.clear()
    Benchmark(config, out, progress=lambda s: None).run()
    assert calls == ["evaluate:Align-CR"]  # nothing finished is redone
    assert (out / "report" / "report.md").is_file() and (out / "complexity" / "align-cr.json").is_file()


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.slow
@pytest.mark.multiprocess
def test_killed_training_is_continued(synth_root: Path, tmp_path: Path) -> None:
    """Kill a real benchmark process during a training; the next run continues that training."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import torch

    config = load_benchmark_config(tiny_demo(tmp_path, synth_root, methods=["Align-CR"]))
    del config["segmentation"]
    config["overrides"] = [o for o in config["overrides"] if not o.startswith("trainer.max_epochs")]
    config["methods"][0]["overrides"].append("trainer.max_epochs=3")
    path = tmp_path / "kill.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    out = tmp_path / "bench"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "m3rcr", "benchmark", "--config", str(path), "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=REPO)
    state = out / "runs" / "align-cr" / "seed0" / "state" / "last.ckpt"
    deadline = time.time() + 240
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state.exists() and torch.load(state, weights_only=True)["epoch"] < 2
    Benchmark(load_benchmark_config(path), out, progress=lambda s: None).run()
    run = out / "runs" / "align-cr" / "seed0"
    assert len(json.loads((run / "environment.json").read_text())) == 2  # continued, not restarted
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["meta"]["epoch"] == 2
    assert (out / "report" / "report.md").is_file()


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.slow
def test_changed_inputs_are_redone_and_never_mixed(synth_root: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_benchmark_config(tiny_demo(tmp_path, synth_root, methods=["Cloudy", "DSen2-CR"]))
    del config["segmentation"]
    out = tmp_path / "bench"
    calls: list[str] = []
    original_train, original_eval = Benchmark.train_method, Benchmark.evaluate_method
    monkeypatch.setattr(Benchmark, "train_method", lambda self, m, seed=None: (
        calls.append(f"train:{m['name']}"), original_train(self, m, seed))[1])
    monkeypatch.setattr(Benchmark, "evaluate_method", lambda self, m, seed=None: (
        calls.append(f"evaluate:{m['name']}"), original_eval(self, m, seed))[1])
    Benchmark(config, out, progress=lambda s: None).run()
    calls.clear()
    config["data"]["crop"] = 64  # other images: every evaluation is redone, nothing is retrained
    Benchmark(config, out, progress=lambda s: None).run()
    assert calls == ["evaluate:Cloudy", "evaluate:DSen2-CR"]
    results = json.loads((out / "report" / "results.json").read_text())
    assert all(json.loads((out / "eval" / d / "metrics.json").read_text())["crop_size"] == [64, 64]
               for d in ("cloudy", "dsen2-cr/seed0")) and set(results["image"]) == {"Cloudy", "DSen2-CR"}
    calls.clear()
    config["methods"][1]["overrides"] = [*config["methods"][1]["overrides"], "optim.lr=0.002"]
    Benchmark(config, out, progress=lambda s: None).run()  # a changed recipe retrains that method only
    assert calls == ["train:DSen2-CR", "evaluate:DSen2-CR"]


def test_benchmark_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "b.yaml"
    bad.write_text("data: {root: x}\nmethods: [{name: A, kind: train}]\n")
    with pytest.raises(ConfigError, match="needs a training config or a checkpoint"):
        load_benchmark_config(bad)
    bad.write_text("data: {root: x}\nmethods: [{name: A, kind: cloudy}, {name: A, kind: cloudy}]\n")
    with pytest.raises(ConfigError, match="distinct name"):
        load_benchmark_config(bad)
    bad.write_text("data: {root: x}\nmethods: [{name: A, kind: cloudy}]\nextra: 1\n")
    with pytest.raises(ConfigError, match="unknown section"):
        load_benchmark_config(bad)
    for path in (str(CONFIGS / "benchmark.yaml"), str(CONFIGS / "benchmark_demo.yaml")):
        assert len(load_benchmark_config(path)["methods"]) == 9


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.slow
def test_seeds_give_mean_and_spread_in_every_table(synth_root: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Two seeds per method: one run and one evaluation per seed, the tables print mean ± std of the runs,
    a third seed added later trains only that seed, and each finished step prints its time and an ETA."""
    import statistics

    config = load_benchmark_config(tiny_demo(tmp_path, synth_root, methods=["Cloudy", "DSen2-CR", "Align-CR"]))
    config["segmentation"]["overrides"] = [*config["segmentation"]["overrides"], "trainer.limit_train_batches=1"]
    config["seeds"] = [0, 1]
    config["methods"][1]["seeds"] = [3]  # a method's own seeds win over the benchmark's
    out = tmp_path / "bench"
    lines: list[str] = []
    Benchmark(config, out, progress=lines.append).run()
    assert any("train:align-cr:seed1" in line and "left" in line for line in lines)
    assert any(line.startswith("[benchmark] 1/") for line in lines)
    for seed in (0, 1):
        assert (out / "runs" / "align-cr" / f"seed{seed}" / "checkpoints" / "best.ckpt").is_file()
        assert (out / "runs" / "align-cr" / f"seed{seed}" / "training_curves.png").is_file()
    assert (out / "runs" / "dsen2-cr" / "seed3").is_dir() and not (out / "runs" / "dsen2-cr" / "seed0").exists()
    per_seed = [json.loads((out / "eval" / "align-cr" / f"seed{k}" / "metrics.json").read_text()) for k in (0, 1)]
    assert json.loads((out / "runs" / "align-cr" / "seed1" / "config.yaml").read_text().split("seed: ")[1]
                      .split("\n")[0]) == 1
    maes = [r["overall"]["mae"] for r in per_seed]
    assert maes[0] != maes[1]  # two different trainings
    results = json.loads((out / "report" / "results.json").read_text())
    agg = results["image"]["Align-CR"]
    assert agg["runs"] == 2 and agg["overall"]["mae"] == pytest.approx(statistics.mean(maes))
    assert agg["std"]["overall"]["mae"] == pytest.approx(statistics.stdev(maes))
    assert results["image"]["DSen2-CR"]["runs"] == 1 and results["seeds"]["Align-CR"] == [0, 1]
    row = next(r for r in json.loads((out / "report" / "table_per_class.json").read_text())
               if r["Method"] == "Align-CR")
    assert row["MAE (x100)"] == f"{100 * statistics.mean(maes):.2f} ± {100 * statistics.stdev(maes):.2f}"
    dsen = next(r for r in json.loads((out / "report" / "table_per_class.json").read_text())
                if r["Method"] == "DSen2-CR")
    assert "±" not in dsen["MAE (x100)"]
    semantic = next(r for r in json.loads((out / "report" / "table_semantic.json").read_text())
                    if r["Images"] == "Align-CR")
    assert "±" in semantic["mIoU"]
    assert "mean ± the sample standard deviation" in (out / "report" / "report.md").read_text()
    # a third seed: only its training and evaluation (and the semantic step, whose inputs grew) run
    config["seeds"] = [0, 1, 2]
    lines.clear()
    Benchmark(config, out, progress=lines.append).run()
    ran = [line.split()[2] for line in lines if line.startswith("[benchmark]") and "skipped" not in line
           and " left" not in line]
    assert ran == ["train:align-cr:seed2", "evaluate:align-cr:seed2", "semantic"]
    assert json.loads((out / "report" / "results.json").read_text())["image"]["Align-CR"]["runs"] == 3


def test_seed_settings_are_checked(tmp_path: Path) -> None:
    bad = tmp_path / "b.yaml"
    for seeds, msg in (("[0, 0]", "distinct"), ("[]", "seeds must"), ("[-1]", "seeds must"), ("1", "seeds must")):
        bad.write_text(f"data: {{root: x}}\nseeds: {seeds}\nmethods: [{{name: A, kind: cloudy}}]\n")
        with pytest.raises(ConfigError, match=msg):
            load_benchmark_config(bad)
    bad.write_text("data: {root: x}\nmethods: [{name: A, kind: cloudy, seeds: [1]}]\n")
    with pytest.raises(ConfigError, match="only apply to methods that are trained"):
        load_benchmark_config(bad)


def test_time_left_uses_median_step_times_per_kind() -> None:
    """One step that waited (a paused run) does not inflate the estimate; steps of a kind that has not
    run yet take the median of all finished steps, and the estimate says it is rough."""
    bench = Benchmark.__new__(Benchmark)  # only the bookkeeping eta() reads
    bench.timings = {"train:a:seed0": 100.0, "train:a:seed1": 110.0, "train:b:seed0": 5000.0}
    bench._left = dict.fromkeys(["train:b:seed1", "train:c:seed0"])
    assert bench.eta() == "about 3 min 40 s left (2 steps)"
    bench._left = dict.fromkeys(["train:c:seed0", "evaluate:a:seed0"])
    assert bench.eta() == "about 3 min 40 s left (2 steps, rough)"
    bench._left = {}
    assert bench.eta() == "no steps left"
