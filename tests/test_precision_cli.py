"""One ``--precision`` on predict, evaluate, complexity and train: the same names and aliases, canonical
names recorded, train's Lightning precision and its conflicts, complexity's deprecated ``--dtype``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import rasterio
import torch
import yaml
from paths import CONFIGS
from tiny_models import TINY

from m3rcr.cli import build_parser, main
from m3rcr.cli.args import PRECISION_NAMES
from m3rcr.cli.train import LIGHTNING_PRECISION, precision_override
from m3rcr.data.synthetic import SceneConfig, generate_scene
from m3rcr.models import create_model, save_checkpoint
from m3rcr.models.precision import PRECISION_CHOICES

ALIASES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
           "fp32": "float32", "float32": "float32"}
#: the arguments each command needs besides --precision (parsing only: no file is opened)
COMMANDS = {
    "predict": ["predict", "--cloudy", "a.tif", "--checkpoint", "m.ckpt", "--out", "o.tif"],
    "evaluate": ["evaluate", "--data", "d", "--checkpoint", "m.ckpt", "--out", "e"],
    "complexity": ["complexity", "--model", "aligncr"],
    "train": ["train", "--config", "c.yaml"],
    "seg train": ["seg", "train"],
}
TINY_ALIGNCR = ("{features: 8, growth: 4, convs_per_block: 2, blocks: 2, num_heads: 2, war_blocks: 1, "
                "head_channels: 16, deformable_groups: 2}")


def test_the_flag_offers_the_models_names() -> None:
    assert PRECISION_NAMES == PRECISION_CHOICES  # args.py repeats them so that --help does not import torch
    assert set(ALIASES) == set(PRECISION_CHOICES)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_accepts_bf16_and_the_aliases(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    for name, canonical in ALIASES.items():
        args, _ = parser.parse_known_args([*COMMANDS[command], "--precision", name])
        assert args.precision == canonical, (command, name)
    with pytest.raises(SystemExit):
        parser.parse_known_args([*COMMANDS[command], "--precision", "int8"])
    assert "unknown precision 'int8'" in capsys.readouterr().err
    default = parser.parse_known_args(COMMANDS[command])[0].precision
    # train and complexity: not given means the configuration's (complexity: float32, or --dtype)
    assert default == (None if command in ("train", "seg train", "complexity") else "float32")


def test_train_precision_sets_lightnings_and_refuses_a_conflict() -> None:
    args = build_parser().parse_known_args(["train", "--precision", "bf16"])[0]
    assert precision_override(args, ["data.root=x"]) == ["data.root=x", "trainer.precision=bf16-mixed"]
    assert precision_override(args, ["trainer.precision=bf16-mixed"]) == ["trainer.precision=bf16-mixed"]
    conflict = "--precision bfloat16 and the override trainer.precision=32-true disagree"
    with pytest.raises(ValueError, match=conflict):
        precision_override(args, ["trainer.precision=32-true"])
    with pytest.raises(ValueError, match="disagree"):
        precision_override(args, ["trainer.precision=banana"])
    with pytest.raises(ValueError, match="disagree"):  # true bf16 (bf16 weights) is not the mixed precision
        precision_override(args, ["trainer.precision=bf16-true"])
    assert precision_override(args, ["trainer.precision=bf16"]) == ["trainer.precision=bf16"]
    args.precision = None
    assert precision_override(args, ["trainer.precision=32-true"]) == ["trainer.precision=32-true"]
    assert LIGHTNING_PRECISION == {"float32": "32-true", "bfloat16": "bf16-mixed", "float16": "16-mixed"}


def _tiny_train(root: Path, run: Path) -> list[str]:
    return ["train", "--config", str(CONFIGS / "aligncr.yaml"), f"data.root={root}",
            f"model.config={TINY_ALIGNCR}", "data.batch_size=2", "data.crop_size=48",
            "data.eval_crop_size=48", "data.val_fraction=0.3", "trainer.accelerator=cpu",
            "trainer.max_epochs=1", "trainer.max_steps=2", "trainer.limit_val_batches=1",
            "trainer.log_every_n_steps=1", "trainer.enable_model_summary=false", "run.progress_bar=false",
            f"run.dir={run}"]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_train_with_bf16_runs_two_steps(synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.pytorch.plugins.precision import MixedPrecision

    used = []
    original = MixedPrecision.__init__

    def spy(self, precision, *args, **kwargs):  # the plugin Lightning builds from trainer.precision
        used.append(precision)
        original(self, precision, *args, **kwargs)

    monkeypatch.setattr(MixedPrecision, "__init__", spy)
    run = tmp_path / "run"
    assert main([*_tiny_train(synth_root, run), "--precision", "bf16"]) == 0, capsys.readouterr().err
    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["precision"] == "bf16-mixed"
    assert used == ["bf16-mixed"]
    state = torch.load(run / "state" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 2  # two optimiser steps under bf16 autocast
    assert all(v.dtype == torch.float32 and v.isfinite().all() for v in state["state_dict"].values()
               if v.is_floating_point())  # mixed precision: the weights stay float32
    # an explicit override that means another precision: one line, no run
    other = tmp_path / "other"
    conflicting = ["--set", "trainer.precision=32-true", "--precision", "bf16"]
    assert main([*_tiny_train(synth_root, other), *conflicting]) == 2
    assert "disagree" in capsys.readouterr().err and not other.exists()


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("scene")
    cfg = SceneConfig(height=96, width=120, sar_crs="EPSG:32632", sar_res=20.0, sar_units="linear",
                      footprint_angle=0.0)
    paths = generate_scene(root, cfg, seed=5)
    torch.manual_seed(0)
    paths["ckpt"] = save_checkpoint(create_model("dsen2cr", **TINY["dsen2cr"]), root / "model.ckpt")
    return paths


def test_predict_records_the_canonical_name(tiny_scene: dict[str, Path], tmp_path: Path) -> None:
    out, stats = tmp_path / "p.tif", tmp_path / "stats.json"
    assert main(["predict", "--cloudy", str(tiny_scene["cloudy"]), "--sar", str(tiny_scene["sar"]),
                 "--sar-units", "linear", "--checkpoint", str(tiny_scene["ckpt"]), "--out", str(out),
                 "--stats", str(stats), "--tile", "64", "--overlap", "8", "--device", "cpu", "--precision",
                 "bf16", "--quiet"]) == 0
    assert json.loads(stats.read_text())["settings"]["precision"] == "bfloat16"
    with rasterio.open(out) as src:
        assert json.loads(src.tags()["M3RCR_PREDICT"])["precision"] == "bfloat16"
    # many scenes: the same options reach every scene
    outs = [tmp_path / "m0.tif", tmp_path / "m1.tif"]
    flags = [f for o in outs for f in ("--cloudy", str(tiny_scene["cloudy"]), "--sar", str(tiny_scene["sar"]),
                                       "--out", str(o))]
    assert main(["predict", *flags, "--sar-units", "linear", "--checkpoint", str(tiny_scene["ckpt"]),
                 "--tile", "64", "--overlap", "8", "--device", "cpu", "--precision", "fp16", "--quiet"]) == 0
    for o in outs:
        with rasterio.open(o) as src:
            assert json.loads(src.tags()["M3RCR_PREDICT"])["precision"] == "float16"


def test_evaluate_records_the_canonical_name(synth_root: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    ckpt = save_checkpoint(create_model("dsen2cr", **TINY["dsen2cr"]), tmp_path / "m.ckpt")
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(synth_root), "--split", "test", "--out",
                 str(out), "--crop", "64", "--device", "cpu", "--precision", "bf16", "--figure-count", "0",
                 "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["precision"] == "bfloat16" and metrics["compile"] is None


def test_complexity_precision_and_the_deprecated_dtype(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["complexity", "--model", "dsen2cr", "--set", "features=8", "--set", "blocks=2", "--size", "32",
            "--repeats", "1", "--warmup", "0", "--json"]
    given = (["--precision", "bf16"], ["--dtype", "bfloat16"], ["--dtype", "bf16", "--precision", "bfloat16"])
    for flags in given:
        assert main([*base, *flags]) == 0, flags
        captured = capsys.readouterr()
        assert json.loads(captured.out)["dtype"] == "bfloat16", flags
        assert ("--dtype is deprecated" in captured.err) == ("--dtype" in flags)
    assert main(base) == 0
    assert json.loads(capsys.readouterr().out)["dtype"] == "float32"
    assert main([*base, "--dtype", "float16", "--precision", "bf16"]) == 2
    assert "disagree" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["complexity", "--help"])
    shown = capsys.readouterr().out
    assert "--precision" in shown and "--compile" in shown and "--dtype" not in shown  # the old name: hidden
