"""``--compile``: torch.compile of the model for predict, evaluate and complexity, its compile time reported.

The plumbing is tested with the "eager" backend (dynamo traces, no code generation: seconds); one test
compiles a tiny network with inductor, which generates and builds C++ (a tiny Align-CR takes minutes on
2 cores, so it is not that one)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import rasterio
import torch
from tiny_models import TINY
from torch._dynamo import register_backend

import m3rcr.inference.compiled as compiled
from m3rcr.cli import main
from m3rcr.data.synthetic import SceneConfig, generate_scene
from m3rcr.inference.compiled import CompiledModel, CompileError, compile_backend, compiled_model
from m3rcr.inference.predictors import model_predictor
from m3rcr.models import create_model, save_checkpoint

TINY_DSEN2CR = ["--set", "features=8", "--set", "blocks=2"]
BROKEN = "m3rcr_test_broken"


@register_backend(name=BROKEN)
def _broken(graph, example_inputs):  # a backend that cannot compile anything
    raise RuntimeError("no compiler here")


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    torch._dynamo.reset()  # graphs compiled by another test must not make a compile look free


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("dsen2cr", **TINY["dsen2cr"]).eval()


def _batch(n: int = 3, size: int = 32) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return {"cloudy": torch.rand(n, 4, size, size, generator=gen),
            "sar": torch.rand(n, 2, size, size, generator=gen)}


def test_compiled_predictor_equals_eager_and_reports_its_compile_time() -> None:
    model = _model()
    eager = model_predictor(model)
    predict = model_predictor(model, compile="eager")
    assert eager.compiled is None and predict.compiled is not None
    assert predict.compiled.report.compiles == 0
    batch = _batch()
    torch.testing.assert_close(predict(batch), eager(batch), atol=1e-5, rtol=0)
    first = predict.compiled.report
    assert first.compiles == 1 and first.seconds > 0 and first.backend == "eager"
    assert "0 s to compile (first call, 1 graph)" in first.describe().replace(f"{first.seconds:.1f}", "0")
    # a smaller last batch is padded to the compiled one: no second compile, the same values
    small = {k: v[:2] for k, v in batch.items()}
    torch.testing.assert_close(predict(small), eager(small), atol=1e-5, rtol=0)
    assert predict.compiled.report == first
    # another tile size compiles once more
    other = _batch(size=40)
    torch.testing.assert_close(predict(other), eager(other), atol=1e-5, rtol=0)
    assert predict.compiled.report.compiles == 2 and predict.compiled.report.since(first).compiles == 1
    # the same model again (the next scene): the compiled wrapper is reused
    assert model_predictor(model, compile="eager").compiled is predict.compiled
    assert compiled_model(model, "eager") is predict.compiled and compile_backend(True) == "inductor"
    assert compile_backend(False) is None


class FillsACache(torch.nn.Module):
    """Fills a cache in forward, as a module caching a constant per input size does: dynamo guards on the
    cache, so the second call recompiles."""

    def __init__(self) -> None:
        super().__init__()
        self._cache: dict[int, torch.Tensor] = {}

    def forward(self, x: torch.Tensor, sar: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[-1] not in self._cache:
            self._cache[x.shape[-1]] = torch.full((x.shape[-1],), 2.0)
        return x * self._cache[x.shape[-1]]


def test_recompiles_are_counted_and_warm_up_covers_them() -> None:
    from m3rcr.evaluation.complexity import timed_forward

    x = torch.rand(2, 3, 8, 8)
    run = CompiledModel(FillsACache(), "eager")
    with torch.inference_mode():
        assert run.warm(x) == 3  # compile, recompile, then a call that compiles nothing
        report = run.report
        assert report.compiles == 2 and report.graphs == 2 and "2 calls: 1 recompile" in report.describe()
        torch.testing.assert_close(run(x), 2 * x)
    assert run.report == report
    torch._dynamo.reset()  # else dynamo reuses the graphs above: the code is the same, the guards hold
    times, compiled = timed_forward(FillsACache(), (x, None), repeats=2, warmup=0, compile="eager")
    assert len(times) == 2 and compiled is not None and compiled.compiles == 2


def test_compile_composes_with_bf16() -> None:
    reference = model_predictor(_model(), "bf16")
    predict = model_predictor(_model(), "bf16", compile="eager")
    # the converted model is the one compiled
    assert next(predict.compiled.model.parameters()).dtype == torch.bfloat16
    batch = _batch()
    out = predict(batch)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference(batch), atol=1e-5, rtol=0)


def test_a_failing_compile_names_the_flag() -> None:
    model = CompiledModel(_model(), BROKEN)
    expected = (r"^--compile: torch.compile \(m3rcr_test_broken backend\) failed on inputs 3x4x32x32, "
                r"3x2x32x32: RuntimeError: no compiler here \(run without --compile\)$")
    with pytest.raises(CompileError, match=expected):
        model(*_batch().values())


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("gcc") is None,
                    reason="inductor needs a C++ compiler on CPU")
def test_inductor_compiles_a_tiny_network() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 4, 3, padding=1)).eval()
    x = torch.rand(2, 4, 24, 24)
    run = CompiledModel(net)
    with torch.inference_mode():
        torch.testing.assert_close(run(x), net(x), atol=1e-5, rtol=0)
    assert run.report.backend == "inductor" and run.report.compiles == 1 and run.report.seconds > 0


def test_complexity_reports_the_compile_time_apart(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(compiled, "DEFAULT_BACKEND", "eager")
    base = ["complexity", "--model", "dsen2cr", *TINY_DSEN2CR, "--size", "32", "--repeats", "2",
            "--warmup", "0"]
    assert main([*base, "--compile", "--precision", "bf16", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["compile"]["backend"] == "eager" and result["compile"]["compiles"] == 1
    assert result["compile"]["seconds"] > 0 and result["dtype"] == "bfloat16"
    # the compiling call was a warm-up run (one is forced), not one of the timed ones
    assert len(result["latency_runs_ms"]) == 2
    assert result["latency_ms"] < 1000 * result["compile"]["seconds"]
    assert main(base) == 0
    assert "compile" not in capsys.readouterr().out
    assert main([*base, "--compile"]) == 0
    assert "torch.compile: " in capsys.readouterr().out
    assert main([*base[:-4], "--repeats", "0", "--compile"]) == 2
    assert "--repeats" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("scene")
    paths = generate_scene(root, SceneConfig(height=96, width=120, sar_crs="EPSG:32632", sar_res=20.0,
                                             sar_units="linear", footprint_angle=0.0), seed=5)
    paths["ckpt"] = save_checkpoint(_model(), root / "model.ckpt")
    return paths


def _predict(scene: dict[str, Path], out: Path, *extra: str) -> int:
    return main(["predict", "--cloudy", str(scene["cloudy"]), "--sar", str(scene["sar"]), "--sar-units",
                 "linear", "--checkpoint", str(scene["ckpt"]), "--out", str(out), "--tile", "64", "--overlap",
                 "8",
                 "--batch-size", "3", "--device", "cpu", "--quiet", *extra])


def test_predict_compile_records_its_time_and_output_matches(tiny_scene: dict[str, Path], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(compiled, "DEFAULT_BACKEND", "eager")
    assert _predict(tiny_scene, tmp_path / "eager.tif") == 0
    stats = tmp_path / "stats.json"
    # 4 tiles in batches of 3: the last batch of 1 is padded, so one compile
    assert _predict(tiny_scene, tmp_path / "compiled.tif", "--compile", "--stats", str(stats)) == 0
    assert "torch.compile: " in capsys.readouterr().out  # the default backend (patched here) is not named
    record = json.loads(stats.read_text())
    assert record["compile"]["compiles"] == 1 and record["compile"]["seconds"] > 0
    assert record["settings"]["compile"] == "eager"
    with rasterio.open(tmp_path / "eager.tif") as a, rasterio.open(tmp_path / "compiled.tif") as b:
        assert json.loads(a.tags()["M3RCR_PREDICT"])["compile"] is None
        assert (abs(a.read().astype(float) - b.read().astype(float)) <= 1).all()  # uint16 x 10000: rounding


def test_many_scenes_compile_once(tiny_scene: dict[str, Path], tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(compiled, "DEFAULT_BACKEND", "eager")
    outs = [tmp_path / "a.tif", tmp_path / "b.tif"]
    flags = [f for o in outs for f in ("--cloudy", str(tiny_scene["cloudy"]), "--sar", str(tiny_scene["sar"]),
                                       "--out", str(o))]
    assert main(["predict", *flags, "--sar-units", "linear", "--checkpoint", str(tiny_scene["ckpt"]),
                 "--tile", "64", "--overlap", "8", "--batch-size", "3", "--device", "cpu", "--compile",
                 "--quiet"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "wrote" in line]
    assert len(lines) == 2 and "torch.compile" in lines[0] and "torch.compile" not in lines[1]
    for out in outs:
        with rasterio.open(out) as src:
            assert json.loads(src.tags()["M3RCR_PREDICT"])["compile"] == "eager"


def test_a_failing_compile_is_one_line_from_the_command(tiny_scene: dict[str, Path], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(compiled, "DEFAULT_BACKEND", BROKEN)
    assert _predict(tiny_scene, tmp_path / "p.tif", "--compile") == 2
    err = capsys.readouterr().err
    assert err.startswith("m3rcr predict: error: --compile: torch.compile") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "p.tif").exists()


def test_evaluate_compile(synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(compiled, "DEFAULT_BACKEND", "eager")
    ckpt = save_checkpoint(_model(), tmp_path / "m.ckpt")
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(synth_root), "--split", "test", "--out",
                 str(out), "--crop", "64", "--device", "cpu", "--compile", "--figure-count", "0",
                 "--quiet"]) == 0
    assert "torch.compile: " in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["compile"] == "eager"
