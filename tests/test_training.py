"""Training: configuration, schedule, a short run that learns, exact resumption, DDP on CPU."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from paths import CONFIGS, REPO

from m3rcr.cli import main
from m3rcr.training.callbacks import SaveTrainingState
from m3rcr.training.config import ConfigError, load_config, parse_override
from m3rcr.training.module import CloudRemovalModule
from m3rcr.training.run import train
from m3rcr.training.settings import Component, step_decay

TINY_MODEL = ("{features: 8, growth: 4, convs_per_block: 2, blocks: 2, num_heads: 2, war_blocks: 1, "
              "head_channels: 16, deformable_groups: 2}")


def tiny(root: Path, run_dir: Path, *extra: str) -> list[str]:
    return [f"data.root={root}", f"model.config={TINY_MODEL}", "data.batch_size=2", "data.crop_size=48",
            "data.eval_crop_size=64", "data.val_fraction=0.3", "data.augment=true", "trainer.accelerator=cpu",
            "trainer.max_epochs=2", "trainer.log_every_n_steps=1", "trainer.enable_model_summary=false",
            "run.progress_bar=false", f"run.dir={run_dir}", "optim.lr=0.002", "optim.align_lr=0.0002",
            "schedule.constant_epochs=1", "schedule.step_epochs=1", *extra]


def _csv_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "logs" / "csv" / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def test_step_decay_is_the_papers_schedule() -> None:
    lrs = [1e-4 * step_decay(e, 10, 5, 0.5) for e in range(30)]
    assert lrs[:10] == [1e-4] * 10
    assert lrs[10:15] == [5e-5] * 5 and lrs[15:20] == [2.5e-5] * 5 and lrs[25] == pytest.approx(6.25e-6)


def test_alignment_parameters_get_their_own_learning_rate() -> None:
    model = Component("aligncr", dict(features=8, growth=4, convs_per_block=1, blocks=1, num_heads=2, war_blocks=1,
                                      head_channels=16, deformable_groups=2))
    module = CloudRemovalModule(model, Component("cloud_charbonnier"))
    opt = module.configure_optimizers()["optimizer"]
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"network": 1e-4, "align": 1e-5}
    n_align = sum(p.numel() for g in opt.param_groups if g["name"] == "align" for p in g["params"])
    assert n_align == sum(p.numel() for n, p in module.net.named_parameters() if ".align." in n) > 0


def test_config_files_and_overrides(tmp_path: Path) -> None:
    cfg = load_config(str(CONFIGS / "aligncr.yaml"), ["trainer.max_epochs=3", "model.config.features=32"])
    assert cfg["trainer"]["max_epochs"] == 3 and cfg["model"]["config"] == {"features": 32}
    assert cfg["loss"]["config"] == {"weight": 5.0, "eps": 1e-3, "alpha": 0.45}
    assert cfg["optim"]["lr"] == 1e-4 and cfg["optim"]["align_lr"] == 1e-5 and cfg["data"]["crop_size"] == 160
    assert cfg["data"]["batch_size"] == 12 and cfg["schedule"] == {"kind": "step", "constant_epochs": 10, "step_epochs": 5, "gamma": 0.5,
                                                                "decay_epochs": 0}
    for name in ("aligncr_wo_sar", "aligncr_wo_align"):
        assert load_config(str(CONFIGS / f"{name}.yaml"))["model"]["name"] == name
    assert parse_override("a.b=[1, 2]") == {"a": {"b": [1, 2]}}
    for bad, msg in (("data.bacth_size=4", "unknown key"), ("trainer.max_epoch=1", "unknown key"),
                     ("trainer.max_epochs=abc", "must be a number"),
                     ("optimizer.lr=1", "unknown section"), ("loss.name=nope", "is not a loss"), ("novalue", "look like")):
        with pytest.raises(ConfigError, match=msg):
            load_config(str(CONFIGS / "aligncr.yaml"), [bad])


def test_model_bands_must_be_the_datasets(synth_root: Path, tmp_path: Path) -> None:
    from m3rcr.training.run import build

    tiny3 = TINY_MODEL.replace("{", "{in_channels: 3, out_channels: 3, ", 1)
    cfg = load_config(None, [*tiny(synth_root, tmp_path / "r"), f"model.config={tiny3}"])
    with pytest.raises(ConfigError, match="reads 3 and writes 3 optical bands, but dataset 'm3rcr' has 4 "
                                          "\\(blue, green, red, nir\\)"):
        build(cfg, tmp_path / "r")
    assert not (tmp_path / "r").exists()
    tiny_sar1 = TINY_MODEL.replace("{", "{sar_channels: 1, ", 1)
    with pytest.raises(ConfigError, match="fuses 1 SAR bands, but dataset 'm3rcr' has 2 \\(VV, VH\\)"):
        build(load_config(None, [*tiny(synth_root, tmp_path / "r"), f"model.config={tiny_sar1}"]), tmp_path / "r")


def test_train_refuses_a_configuration_of_another_task(synth_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a segmentation run \\(task: cloud_removal\\)"):
        train(load_config(None, tiny(synth_root, tmp_path / "r")), task="segmentation")
    assert not (tmp_path / "r").exists()


def test_global_batch_must_split_over_processes(synth_root: Path, tmp_path: Path) -> None:
    from m3rcr.training.run import build

    cfg = load_config(None, tiny(synth_root, tmp_path / "r", "data.batch_size=3", "trainer.devices=2",
                                 "trainer.strategy=ddp"))
    with pytest.raises(ConfigError, match="does not split over 2 processes"):
        build(cfg, tmp_path / "r")


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.slow
@pytest.mark.multiprocess
def test_short_training_learns_and_beats_the_cloudy_floor(synth_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", "--config", str(CONFIGS / "aligncr.yaml"), *tiny(synth_root, run, "trainer.max_epochs=8",
                                                                    "schedule.constant_epochs=6")]) == 0
    for name in ("config.yaml", "environment.json", "checkpoints/best.ckpt", "checkpoints/last.ckpt",
                 "state/last.ckpt", "logs/csv/metrics.csv"):
        assert (run / name).is_file(), name
    assert list((run / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    env = json.loads((run / "environment.json").read_text())[0]
    assert env["versions"]["torch"] and "commit" in env["git"] and env["command"]
    val = [float(r["val/loss"]) for r in _csv_rows(run) if r.get("val/loss")]
    assert len(val) == 8 and min(val[-3:]) < 0.8 * val[0]
    # evaluate the best checkpoint and the cloudy input on the test split, on cloudy pixels
    for args in (["--checkpoint", str(run / "checkpoints" / "best.ckpt")], ["--method", "cloudy"]):
        out = tmp_path / ("model" if args[0] == "--checkpoint" else "cloudy")
        assert main(["evaluate", *args, "--data", str(synth_root), "--split", "test", "--out", str(out), "--crop", "160",
                     "--device", "cpu", "--quiet"]) == 0
    model = json.loads((tmp_path / "model" / "metrics.json").read_text())["overall"]
    floor = json.loads((tmp_path / "cloudy" / "metrics.json").read_text())["overall"]
    assert model["mae_cloudy"] < 0.7 * floor["mae_cloudy"]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("workers", [0, pytest.param(1, marks=pytest.mark.multiprocess)])
def test_resumed_run_ends_with_the_same_weights(synth_root: Path, tmp_path: Path, workers: int) -> None:
    """Random crops, flips and shuffles included, with and without DataLoader workers."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    w = f"data.num_workers={workers}"
    train(load_config(None, tiny(synth_root, straight, w)))
    train(load_config(None, tiny(synth_root, split, w, "trainer.max_epochs=1")))
    first = torch.load(split / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    train(resume=split, overrides=["trainer.max_epochs=2"])
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(split / "checkpoints" / "last.ckpt", weights_only=True)
    assert b["meta"]["epoch"] == 1 and b["meta"]["global_step"] == a["meta"]["global_step"]
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert not all(torch.equal(first[k], b["state_dict"][k]) for k in first)  # it did train after resuming
    assert len(json.loads((split / "environment.json").read_text())) == 2  # both starts recorded
    # the CSV log keeps the epochs before the resume (Lightning's logger would delete them)
    epochs = sorted({int(r["epoch"]) for r in _csv_rows(split) if r.get("epoch")})
    assert epochs == [0, 1] and [e for e in (r.get("val/loss") for r in _csv_rows(split)) if e][:1]
    straight_rows = [r for r in _csv_rows(straight) if r.get("val/loss")]
    assert [r["val/loss"] for r in _csv_rows(split) if r.get("val/loss")] == [r["val/loss"] for r in straight_rows]
    with pytest.raises(ConfigError, match="already exists"):
        train(load_config(None, tiny(synth_root, split)))


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_process_ddp_on_cpu(synth_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    args = tiny(synth_root, run, "trainer.devices=2", "trainer.strategy=ddp", "trainer.max_epochs=1",
                "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "data.batch_size=4",
                "data.num_workers=0")  # two processes on two cores: loader workers would only oversubscribe them
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "m3rcr", "train", "--config", str(CONFIGS / "aligncr.yaml"), *args],
                          capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "state" / "last.ckpt").is_file()
    state = torch.load(run / "state" / "last.ckpt", weights_only=True)
    assert state[SaveTrainingState.PROCESSES_KEY] == 2  # two processes trained the saved state
    assert state["global_step"] == 2


def test_bad_data_leaves_no_run_folder(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["train", *tiny(tmp_path / "nowhere", run)]) == 2
    assert "nowhere" in capsys.readouterr().err and not run.exists()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_without_validation_best_is_last(synth_root: Path, tmp_path: Path) -> None:
    run = train(load_config(None, tiny(synth_root, tmp_path / "r", "data.val_fraction=0", "trainer.max_epochs=1")))
    best = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert best["meta"]["best_by"] == "last epoch"
    assert all(torch.equal(best["state_dict"][k], last["state_dict"][k]) for k in last["state_dict"])


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_killed_training_resumes_from_its_last_epoch(synth_root: Path, tmp_path: Path) -> None:
    """Kill a real training process once its first epoch is saved; the resumed run ends exactly like one
    that was never interrupted."""
    import signal
    import time

    args = tiny(synth_root, tmp_path / "killed", "trainer.max_epochs=3", "data.num_workers=0")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "m3rcr", "train", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=REPO)
    state = tmp_path / "killed" / "state" / "last.ckpt"
    deadline = time.time() + 240
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state.exists()
    saved_epoch = torch.load(state, weights_only=True)["epoch"]
    assert saved_epoch < 2  # killed before the end
    train(resume=tmp_path / "killed")
    train(load_config(None, tiny(synth_root, tmp_path / "straight", "trainer.max_epochs=3", "data.num_workers=0")))
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_early_stopping_and_training_curves(synth_root: Path, tmp_path: Path) -> None:
    """With nothing to learn (lr 0) the validation loss never improves: patience 1 stops after 2 epochs;
    every epoch is on the curves figure, which survives a resume."""
    run = tmp_path / "stop"
    train(load_config(None, tiny(synth_root, run, "trainer.max_epochs=6", "optim.lr=0", "optim.align_lr=0",
                                 "run.early_stopping={patience: 1}")))
    state = torch.load(run / "state" / "last.ckpt", weights_only=True)
    assert state["epoch"] == 1  # epochs 0 and 1 ran, then it stopped
    assert state[SaveTrainingState.PROCESSES_KEY] == 1  # one process
    history = next(v for k, v in state["callbacks"].items() if k.startswith("TrainingCurves"))["history"]
    assert [h["epoch"] for h in history] == [0.0, 1.0]
    assert all({"train/loss_epoch", "val/loss", "val/psnr"} <= set(h) for h in history)
    assert (run / "training_curves.png").stat().st_size > 10_000
    # without early stopping the same run goes on; resuming it continues the curves
    run2 = tmp_path / "curves"
    train(load_config(None, tiny(synth_root, run2, "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=2")))
    train(resume=run2, overrides=["trainer.max_epochs=2"])
    state = torch.load(run2 / "state" / "last.ckpt", weights_only=True)
    history = next(v for k, v in state["callbacks"].items() if k.startswith("TrainingCurves"))["history"]
    assert [h["epoch"] for h in history] == [0.0, 1.0]
    # validation every second epoch: the first epoch has no (stale) validation values
    assert "val/loss" not in history[0] and "train/loss_epoch" in history[0] and "val/psnr" in history[1]
    # the same history from the CSV log, and the curves redrawn from it by the command line
    from m3rcr.training.curves import history_from_csv

    from_csv = history_from_csv(run2 / "logs" / "csv" / "metrics.csv")
    assert [h["epoch"] for h in from_csv] == [0.0, 1.0] and "val/loss" not in from_csv[0]
    assert from_csv[1]["val/loss"] == pytest.approx(history[1]["val/loss"])
    assert main(["curves", str(run2), "--out", str(tmp_path / "c.png")]) == 0 and (tmp_path / "c.png").is_file()
    assert main(["curves", str(tmp_path / "nowhere")]) == 2


def test_early_stopping_settings_are_checked() -> None:
    from m3rcr.training.config import parse_config
    from m3rcr.training.settings import EarlyStoppingConfig

    def early_stopping(overrides: list[str]) -> EarlyStoppingConfig | None:
        return parse_config(load_config(None, overrides)).run.early_stopping

    assert early_stopping(["run.early_stopping={patience: 3, min_delta: 0.001}"]) == EarlyStoppingConfig(
        monitor="val/loss", mode="min", patience=3, min_delta=0.001)
    assert early_stopping(["run.early_stopping=true"]).patience == 5
    assert early_stopping([]) is None
    for bad, msg in (("run.early_stopping={patience: 0}", "patience"), ("run.early_stopping={patients: 2}", "unknown"),
                     ("run.early_stopping={mode: up}", "mode"), ("run.early_stopping=3", "mapping"),
                     ("run.early_stopping={min_delta: -1}", "min_delta")):
        with pytest.raises(ConfigError, match=msg):
            load_config(None, [bad])
