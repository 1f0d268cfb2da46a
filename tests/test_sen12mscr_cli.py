"""``m3rcr info`` and ``m3rcr show`` with ``--dataset sen12mscr``: the summary (layout, split source, unpaired
patches), ``--check`` (every problem, each naming its file; cloud cover from the s2cloudless masks) and the
figures, on copies of the two real patches (a synthetic stand-in without ``../shared``)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image as mpimg
import pytest
from test_sen12mscr_dataset import (
    BREAKS,
    S12_FLAT,
    S12_OFFICIAL,
    break_file,
    by_split,
    make_synthetic,
    s12_copy,
)

from m3rcr.cli import main
from m3rcr.errors import DataWarning


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    return None if S12_OFFICIAL.is_dir() else make_synthetic(tmp_path_factory.mktemp("s12synth") / "s12")


@pytest.fixture
def s12(tmp_path: Path, pristine: Path | None) -> Path:
    return s12_copy(tmp_path, pristine)[0]


def info(capsys: pytest.CaptureFixture[str], root: Path, *extra: str) -> tuple[int, dict, str]:
    """Run ``info --json`` and return the exit status, the JSON and stderr."""
    code = main(["info", "--dataset", "sen12mscr", "--data", str(root), "--json", *extra])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out.strip() else {}, captured.err


def test_info_summarises_the_official_layout(s12: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--dataset", "sen12mscr", "--data", str(s12), "--split", "all"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for line in ("dataset: sen12mscr", "split: all", "samples: 2", "rois: 2", "seasons: {'fall': 1, 'winter': 1}",
                 "layout: official", "preprocessing: default", "unpaired: 0"):
        assert line in lines
    assert not any(line.startswith(("aois", "problems", "landcover")) for line in lines)  # no check, no land cover
    code, out, _ = info(capsys, s12, "--split", "test", "--bands", "rgbn", "--preprocessing", "resnet")
    assert code == 0 and out["samples"] == 1 and out["seasons"] == {"fall": 1}
    assert out["bands"] == "B2 B3 B4 B8" and out["preprocessing"] == "resnet"
    assert "matched exactly" in out["split_source"] and "reference_overlap" not in out


def test_info_reports_the_reference_compatible_overlap(s12: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, exact, _ = info(capsys, s12, "--split", "train")
    code, leaky, _ = info(capsys, s12, "--split", "train", "--reference-compatible")
    assert code == 0 and exact["samples"] == 1 and leaky["samples"] == 2  # + the fall test ROI 139
    assert "reference-compatible" in leaky["split_source"] and "not the exact split" in leaky["split_source"]
    assert len(leaky["reference_overlap"]) == 9  # 6 test and 3 val ROIs (spec section 3)
    assert any("test ROI ROIs1970_fall_s1/s1_139 also lands in train" in o for o in leaky["reference_overlap"])
    assert leaky["overlap_patches"].startswith("1 of this split's 2 patches")


def test_info_on_the_flat_layout_with_its_csv(s12: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flat = tmp_path / "flat"
    rows, by_name = [], {}
    for split, t in by_split(s12).items():
        by_name[split] = t.name
        for kind, folder in (("s1", "s1"), ("s2", "s2_cloudfree"), ("s2_cloudy", "s2_cloudy")):
            (flat / folder).mkdir(parents=True, exist_ok=True)
            getattr(t, kind).rename(flat / folder / f"{t.name}.tif")
        rows.append(f"{ {'train': 1, 'val': 2, 'test': 3}[split] }, s1, s2_cloudfree, s2_cloudy, {t.name}.tif")
    (flat / "data.csv").write_text("\n".join(rows) + "\n")
    code, out, _ = info(capsys, flat, "--split", "train", "--check", "--no-cloud-masks")
    assert code == 0 and out["samples"] == 1 and out["layout"] == "flat (modality_folders)"
    assert out["split_source"].startswith(f"split CSV {flat / 'data.csv'}") and out["problems"] == []
    assert "cloud_cover_bins" not in out and "mean_cloud_cover" not in out  # no masks, no cover
    other = tmp_path / "other.csv"  # another split list: the train patch as the only test patch
    other.write_text(f"3, {by_name['train']}\n")
    code, out, _ = info(capsys, flat, "--split", "test", "--csv", str(other))
    assert code == 0 and out["samples"] == 1 and out["split_source"].startswith(f"split CSV {other}")
    assert out["seasons"] == {"winter": 1}
    code, _, err = info(capsys, flat, "--split", "train", "--reference-compatible")
    assert code == 2 and "reference_compatible applies to the published split" in err


def test_info_on_the_real_flat_samples(capsys: pytest.CaptureFixture[str]) -> None:
    if not S12_FLAT.is_dir():
        pytest.skip(f"{S12_FLAT} not found: the shared folder is not next to this clone (or set M3RCR_SHARED)")
    code, out, _ = info(capsys, S12_FLAT, "--split", "all", "--no-cloud-masks")
    assert code == 0 and out["layout"] == "flat (patch_folders)" and out["samples"] == 2 and out["rois"] == 2


def test_info_check_reads_every_patch_with_masks(s12: Path, tmp_path: Path, pristine: Path | None,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = info(capsys, s12, "--split", "all", "--check", "--mask-cache", str(tmp_path / "cache"))
    assert code == 0 and out["problems"] == [] and out["warnings"] == [] and "Traceback" not in err
    assert sum(out["cloud_cover_bins"].values()) == 2 and 0 <= out["mean_cloud_cover"] <= 1
    assert "landcover_percent" not in out  # SEN12MS-CR has no land cover
    if pristine is None:  # the real patches: fall 139 nearly overcast, winter 112 clear (s2cloudless)
        assert out["cloud_cover_bins"] == {"0-20": 1, "20-40": 0, "40-60": 0, "60-80": 0, "80-100": 1}
        assert 0.45 < out["mean_cloud_cover"] < 0.52
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2  # the masks were cached


@pytest.mark.parametrize("how", BREAKS)
def test_info_check_names_the_bad_file(s12: Path, how: str, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = break_file(by_split(s12)["test"], how)
    code, out, err = info(capsys, s12, "--split", "all", "--check", "--no-cloud-masks")
    assert code == 1 and "Traceback" not in err
    assert len(out["problems"]) == 1 and out["problems"][0].startswith(f"{path}: ")
    assert "\n" not in out["problems"][0]
    assert "cloud_cover_bins" not in out and "mean_cloud_cover" not in out


def test_info_check_reports_every_problem(s12: Path, capsys: pytest.CaptureFixture[str]) -> None:
    triplets = by_split(s12)
    bad = [break_file(triplets["test"], "s2_bands")[0], break_file(triplets["train"], "grid")[0]]
    assert main(["info", "--dataset", "sen12mscr", "--data", str(s12), "--split", "all", "--check",
                 "--no-cloud-masks"]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert "problems: 2" in lines and "Traceback" not in captured.err
    listed = lines[lines.index("problems: 2") + 1:]
    assert [p for p in listed if p.startswith("  ")] == listed and len(listed) == 2
    assert sorted(str(b) for b in bad) == sorted(p.strip().split(": ", 1)[0] for p in listed)


def test_unpaired_patches_in_info_and_an_empty_split(s12: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = by_split(s12)["train"]
    train.s1.unlink()
    with pytest.warns(DataWarning, match="1 patch\\(es\\) without all three files skipped"):
        code, out, err = info(capsys, s12, "--split", "all")
    assert code == 0 and out["samples"] == 1 and len(out["unpaired"]) == 1 and "Traceback" not in err
    assert out["unpaired"][0].startswith(f"{train.name}: missing s1")
    with pytest.warns(DataWarning):
            code = main(["info", "--dataset", "sen12mscr", "--data", str(s12), "--split", "train", "--check"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    error = [line for line in err.splitlines() if line.startswith("m3rcr info: error: ")]
    assert len(error) == 1 and str(s12) in error[0] and "no triplet of split 'train'" in error[0]


def test_show_writes_true_colour_figures(s12: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "test.png"
    base = ["show", "--dataset", "sen12mscr", "--data", str(s12)]
    assert main([*base, "--split", "test", "--out", str(png), "--mask-cache", "off"]) == 0
    assert capsys.readouterr().out.strip() == str(png)
    image = mpimg.imread(png)
    assert image.shape[1] <= 2000 and image.shape[1] > 3 * image.shape[0] // 2  # one row of 4 panels
    folder = tmp_path / "all"
    assert main([*base, "--split", "all", "--all", "--out", str(folder), "--no-cloud-masks", "--preprocessing",
                 "resnet", "--crop", "32", "--stretch", "fixed"]) == 0
    names = sorted(p.name for p in folder.glob("*.png"))
    assert len(names) == 2 and all(n.startswith("all_000") for n in names)
    assert main([*base, "--split", "test", "--out", str(png), "--no-cloud-masks"]) == 2  # exists: refused
    assert "exists" in capsys.readouterr().err
    assert main([*base, "--split", "test", "--name", "nope", "--out", str(tmp_path / "n.png")]) == 2
    assert "no sample named nope" in capsys.readouterr().err

