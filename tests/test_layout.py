"""The official folder / CSV layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from m3rcr.data.layout import (
    KINDS,
    check_files_exist,
    list_split,
    read_csv,
    relative_paths,
    sample_name,
    scan_split,
)
from m3rcr.errors import DataError


def test_real_csv_lists_the_official_files(real_root: Path) -> None:
    (s,) = list_split(real_root, "train")
    assert s.cloudy == real_root / "train/planet_cloudy_fall/planet_cloudy_fall_1/planet_cloudy_fall_1_p_457.tif"
    assert s.sar.name == "S1_fall_1_p_457.tif" and s.cloudmask.suffix == ".npy"
    assert s.name == "fall_1_p_457" and s.aoi == "fall_1"
    assert s.source.endswith("train.csv row 1")
    check_files_exist([s])


def test_scan_finds_the_same_samples_as_the_csv(real_root: Path) -> None:
    for split in ("train", "test"):
        scanned = scan_split(real_root / split)
        listed = list_split(real_root, split)
        assert [x.paths() for x in scanned] == [x.paths() for x in listed]


def test_without_csv_the_split_folder_is_scanned(real_copy: Path) -> None:
    (real_copy / "test.csv").unlink()
    (s,) = list_split(real_copy, "test")
    assert s.name == "summer_33_p_1"


def test_csv_override_and_blank_lines(real_root: Path, tmp_path: Path) -> None:
    text = (real_root / "test.csv").read_text()
    other = tmp_path / "mine.csv"
    other.write_text("\n" + text + "\n\n")
    (s,) = list_split(real_root, "test", csv_file=other)
    assert s.cloudy.is_file() and "mine.csv row 2" in s.source


def test_relative_paths_follow_the_naming_scheme() -> None:
    rel = relative_paths("fall", 1, 457)
    assert rel[1] == "planet_cloudy_fall/planet_cloudy_fall_1/planet_cloudy_fall_1_p_457.tif"
    assert [r.split("/")[0] for r in rel] == [f"{k}_fall" for k in KINDS]
    assert rel[4].endswith(".npy")
    assert sample_name(rel[2]) == "fall_1_p_457"


def test_csv_with_wrong_column_count_names_the_row(real_root: Path, tmp_path: Path) -> None:
    row = (real_root / "test.csv").read_text().strip()
    bad = tmp_path / "bad.csv"
    bad.write_text(row + "\n" + ",".join(row.split(",")[:4]) + "\n")
    with pytest.raises(DataError, match=r"bad\.csv row 2: expected 5 columns .* found 4"):
        read_csv(bad, real_root / "test")


def test_csv_with_a_header_is_refused(real_root: Path, tmp_path: Path) -> None:
    bad = tmp_path / "header.csv"
    bad.write_text("cloudfree,cloudy,s1,landcover,mask\n" + (real_root / "test.csv").read_text())
    with pytest.raises(DataError, match="row 1: looks like a header"):
        read_csv(bad, real_root / "test")


def test_missing_split_and_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="neither val.csv nor a val/ folder"):
        list_split(tmp_path, "val")
    (tmp_path / "val").mkdir()
    with pytest.raises(DataError, match="no samples found"):
        list_split(tmp_path, "val")
    with pytest.raises(DataError, match="split list not found"):
        list_split(tmp_path, "val", csv_file=tmp_path / "nope.csv")


def test_missing_file_names_file_and_row(real_copy: Path) -> None:
    (s,) = list_split(real_copy, "train")
    s.landcover.unlink()
    with pytest.raises(DataError) as exc:
        check_files_exist([s])
    assert str(s.landcover) in str(exc.value) and "train.csv row 1" in str(exc.value)
    shutil.rmtree(real_copy / "train" / "S1_fall")
    with pytest.raises(DataError, match="missing sar file"):
        check_files_exist([s])
