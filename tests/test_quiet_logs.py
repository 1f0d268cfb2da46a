"""Quiet logs: what the commands print when their output goes to a file rather than a terminal.

Under pytest stdout and stderr are not terminals, as in a batch job or ``m3rcr train ... > train.log``.
Lightning's messages go through the ``logging`` module (where pytest, not stderr, would collect them) and its
warnings through ``warnings``: the tests gather both along with the captured output.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from tiny_models import TINY

from m3rcr.cli import main
from m3rcr.data.synthetic import SceneConfig, generate_scene
from m3rcr.models import create_model, save_checkpoint

TIP = "litlogger"  # in Lightning's advertisement "💡 Tip: ... try installing [litlogger](...)"
TINY_ALIGNCR = ("{features: 8, growth: 4, convs_per_block: 2, blocks: 2, num_heads: 2, war_blocks: 1, "
                "head_channels: 16, deformable_groups: 2}")


def tiny_train(root: Path, run_dir: Path, *extra: str) -> list[str]:
    """A couple of training steps on 32 px crops, progress reporting on (the default)."""
    return ["train", f"data.root={root}", f"model.config={TINY_ALIGNCR}", "data.batch_size=2", "data.crop_size=32",
            "data.eval_crop_size=32", "data.val_fraction=0.3", "trainer.accelerator=cpu", "trainer.max_epochs=2",
            "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.log_every_n_steps=1",
            "trainer.enable_model_summary=false", f"run.dir={run_dir}", *extra]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def lightning_log() -> Iterator[list[str]]:
    """Every message Lightning logs (its banner, tips), whether or not it reaches a stream under pytest."""
    handler = _Records()
    loggers = [logging.getLogger("lightning.pytorch"), logging.getLogger("lightning.fabric")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler.messages
    for logger in loggers:
        logger.removeHandler(handler)


def _everything(capfd: pytest.CaptureFixture[str], log: list[str], recwarn: pytest.WarningsRecorder
                ) -> tuple[str, str]:
    """(what reached stdout and stderr, that plus Lightning's log messages and the warnings raised)."""
    out, err = capfd.readouterr()
    printed = out + err
    return printed, "\n".join([printed, *log, *(str(w.message) for w in recwarn)])


@pytest.fixture
def quick_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain progress lines at every step instead of every 30-60 s."""
    import m3rcr.training.run

    monkeypatch.setattr(m3rcr.training.run, "PROGRESS_INTERVAL", 0.0, raising=False)
    try:
        import m3rcr.utils.progress
    except ImportError:  # code without plain progress lines: the assertions will say so
        return
    monkeypatch.setattr(m3rcr.utils.progress, "DEFAULT_INTERVAL", 0.0)


def test_training_to_a_log_file(synth_root: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                recwarn: pytest.WarningsRecorder, lightning_log: list[str], quick_lines: None) -> None:
    """No litlogger tip, no progress-bar redraws: plain lines per step and per epoch; the banner stays."""
    assert main(tiny_train(synth_root, tmp_path / "run")) == 0
    printed, everything = _everything(capfd, lightning_log, recwarn)
    tips = sum(TIP in m for m in lightning_log)
    assert tips == 0 and TIP not in everything, everything  # was once per Trainer (9 times in a 9-run session)
    assert "\r" not in printed
    assert "Total length of" not in everything
    assert "epoch 1/2 step 1/2" in printed and "epoch 2/2 step 2/2" in printed
    epoch_lines = [line for line in printed.splitlines() if line.startswith(("epoch 1/2:", "epoch 2/2:"))]
    assert len(epoch_lines) == 2 and all("train/loss " in s and "val/psnr " in s for s in epoch_lines), printed
    assert lightning_log  # Lightning's own messages (its banner) still get through: only the advertisement goes
    assert printed.count("run folder:") == 1


def test_training_without_validation_data(synth_root: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                          recwarn: pytest.WarningsRecorder, lightning_log: list[str]) -> None:
    """val_fraction 0 skips validation instead of handing Lightning an empty list of loaders."""
    assert main(tiny_train(synth_root, tmp_path / "run", "data.val_fraction=0", "trainer.max_epochs=1")) == 0
    printed, everything = _everything(capfd, lightning_log, recwarn)
    assert "Total length of" not in everything, everything
    assert "\r" not in printed
    line = next(s for s in printed.splitlines() if s.startswith("epoch 1/1:"))
    assert "train/loss " in line and "val/" not in line


@pytest.mark.parametrize("bad,message", [
    ([], "data/m3rcr: no such dataset folder; set data.root"),  # the default root, absent here
    (["data.root=nowhere"], "nowhere: no such dataset folder"),
    (["data.root={synth}", "model.name=alingcr"], "model.name 'alingcr' is not a model"),
    (["data.root={synth}", "model.config={{blocks: 2, bogus: 1}}"], "model 'aligncr' has no option 'bogus'"),
])
def test_configuration_errors_come_before_lightning_says_anything(
        bad: list[str], message: str, synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str], recwarn: pytest.WarningsRecorder, lightning_log: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["train", "trainer.accelerator=cpu", "run.dir=run", *(b.format(synth=synth_root) for b in bad)]
    assert main(args) == 2
    printed, everything = _everything(capfd, lightning_log, recwarn)
    assert f"m3rcr train: error: {message}" in printed
    # nothing from Lightning at all (whatever its wording), and m3rcr never got as far as announcing a run
    assert lightning_log == [] and TIP not in everything and "run folder:" not in printed, everything
    assert not (tmp_path / "run").exists()


def test_evaluate_predict_synth_to_a_log_file(synth_root: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                              quick_lines: None) -> None:
    """Progress on (no --quiet) but not a terminal: plain lines, no carriage returns."""
    assert main(["evaluate", "--method", "cloudy", "--data", str(synth_root), "--split", "test", "--crop", "32",
                 "--batch-size", "2", "--out", str(tmp_path / "eval"), "--device", "cpu"]) == 0
    out, err = capfd.readouterr()
    assert "\r" not in out + err
    assert "evaluate cloudy: 1/3 batch" in err and "evaluate cloudy: 3/3 batch done in" in err

    scene = generate_scene(tmp_path / "scene", SceneConfig(height=96, width=96, footprint_angle=0.0), seed=1)
    torch.manual_seed(0)
    ckpt = save_checkpoint(create_model("dsen2cr", **TINY["dsen2cr"]), tmp_path / "m.ckpt")
    assert main(["predict", "--cloudy", str(scene["cloudy"]), "--sar", str(scene["sar"]), "--checkpoint", str(ckpt),
                 "--out", str(tmp_path / "pred.tif"), "--tile", "32", "--overlap", "8", "--device", "cpu"]) == 0
    out, err = capfd.readouterr()
    assert "\r" not in out + err
    assert "tile done in" in err

    assert main(["synth", str(tmp_path / "synth"), "--train", "2", "--test", "1"]) == 0
    out, err = capfd.readouterr()
    assert "\r" not in out + err
    assert "synth: 3/3 sample done in" in err


@pytest.mark.timing
def test_progress_suits_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    from m3rcr.utils.progress import PlainProgress, format_duration, is_terminal, progress

    assert not is_terminal(io.StringIO())
    buf = io.StringIO()
    with PlainProgress(total=3, desc="job", unit="tile", interval=0.0, file=buf) as bar:
        bar.update(2)
        bar.update(1)
    lines = buf.getvalue().splitlines()
    assert lines[0] == "job: 2/3 tile, 0 s" and lines[-1] == "job: 3/3 tile done in 0 s" and len(lines) == 3
    buf = io.StringIO()
    assert list(PlainProgress(range(4), desc="short", file=buf)) == [0, 1, 2, 3]
    assert buf.getvalue() == ""  # a job shorter than the interval says nothing
    assert format_duration(42.4) == "42 s" and format_duration(187) == "3 min 07 s"
    assert format_duration(7500) == "2 h 05 min"
    assert isinstance(progress(range(2)), PlainProgress)  # stderr is not a terminal under pytest
    monkeypatch.setattr("m3rcr.utils.progress.is_terminal", lambda stream=None: True)
    assert not isinstance(progress(range(2), enabled=True), PlainProgress)  # a tqdm bar on a terminal
