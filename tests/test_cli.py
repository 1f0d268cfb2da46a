"""The m3rcr command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from m3rcr.cli import build_parser, main


def test_help_for_every_subcommand(capsys) -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"synth", "show", "info"} <= set(commands)
    for name in [None, *commands]:
        with pytest.raises(SystemExit) as exc:
            main(["--help"] if name is None else [name, "--help"])
        assert exc.value.code == 0
        assert "usage: m3rcr" in capsys.readouterr().out


def test_entry_point_is_installed() -> None:
    out = subprocess.run([sys.executable, "-m", "m3rcr.cli", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("m3rcr ")


def test_synth_show_info(tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    assert main(["synth", str(root), "--train", "5", "--test", "5", "--seed", "3", "--quiet"]) == 0
    assert (root / "train.csv").is_file() and len((root / "test.csv").read_text().splitlines()) == 5
    assert main(["synth", str(root), "--train", "1", "--test", "1", "--quiet"]) == 2  # exists
    assert "exists and is not empty" in capsys.readouterr().err

    png = tmp_path / "one.png"
    assert main(["show", "--data", str(root), "--split", "test", "--index", "2", "--out", str(png)]) == 0
    assert png.stat().st_size > 10_000
    folder = tmp_path / "many"
    assert main(["show", "--data", str(root), "--split", "train", "--index", "0", "1", "--sar-mode", "native",
                 "--crop", "160", "--out", str(folder)]) == 0
    assert len(list(folder.glob("train_000*.png"))) == 2
    name = (root / "test.csv").read_text().splitlines()[0].split(",")[1].split("/")[-1][len("planet_cloudy_"):-4]
    assert main(["show", "--data", str(root), "--split", "test", "--name", name, "--out", str(tmp_path / "n.png")]) == 0
    assert main(["show", "--data", str(root), "--split", "test", "--index", "9", "--out", str(png)]) == 2

    capsys.readouterr()
    assert main(["info", "--data", str(root), "--split", "test", "--check", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["samples"] == 5 and info["problems"] == []
    assert info["cloud_cover_bins"] == {"0-20": 1, "20-40": 1, "40-60": 1, "60-80": 1, "80-100": 1}
    assert sum(info["landcover_percent"].values()) == pytest.approx(100, abs=0.1)


def test_csv_override(real_root: Path, tmp_path: Path, capsys) -> None:
    csv = tmp_path / "list.csv"
    csv.write_text((real_root / "test.csv").read_text())
    assert main(["info", "--data", str(real_root), "--split", "test", "--csv", str(csv), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 1
