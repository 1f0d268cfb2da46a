"""The synthetic SEN12MS-CR generator: official layout, formats, shared grid, spectra, clouds, determinism, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from paths import SHARED
from scipy.ndimage import binary_erosion

from m3rcr.cli import main
from m3rcr.data.synthetic import (
    REFLECTANCE,
    S2_SURFACE,
    Landscape,
    Sen12mscrSynthConfig,
    generate_sen12mscr,
    generate_sen12mscr_patch,
)
from m3rcr.data.synthetic.landscape import BARE, BUILT, CROP, GRASS, SNOW, TREE, WATER
from m3rcr.data.synthetic.sen12mscr import CLOUD_13, S2_BANDS, PatchWeather, patch_paths, roi_number
from m3rcr.utils.files import OutputExistsError

SMALL = Sen12mscrSynthConfig(size=64, rois_per_season=1, patches_per_roi=2, seasons=("spring", "fall"))
B = {name: i for i, name in enumerate(S2_BANDS)}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_sen12mscr(tmp_path_factory.mktemp("s12") / "ds", SMALL, seed=3)


def _tifs(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.tif"))


def test_official_layout_and_names(root: Path) -> None:
    assert sorted(p.name for p in root.iterdir()) == [
        "ROIs1158_spring_s1", "ROIs1158_spring_s2", "ROIs1158_spring_s2_cloudy",
        "ROIs1970_fall_s1", "ROIs1970_fall_s2", "ROIs1970_fall_s2_cloudy", "synthetic.json"]
    assert _tifs(root) == sorted([
        f"ROIs1158_spring_{k}/{k}_1/ROIs1158_spring_{k}_1_p{p}.tif" for k in ("s1", "s2", "s2_cloudy") for p in (1, 2)
    ] + [f"ROIs1970_fall_{k}/{k}_139/ROIs1970_fall_{k}_139_p{p}.tif" for k in ("s1", "s2", "s2_cloudy") for p in (1, 2)])
    meta = json.loads((root / "synthetic.json").read_text())
    assert meta["seed"] == 3 and meta["config"]["size"] == 64 and len(meta["patches"]) == 4
    for rec in meta["patches"]:
        assert all((root / rel).is_file() for rel in rec["files"].values())
        assert 0 <= rec["cloud_cover"] <= 1 and 0 <= rec["cirrus_fraction"] <= 1
        assert abs(sum(rec["class_fractions"].values()) - 1) < 1e-3
    assert [r["published_split"] for r in meta["patches"]] == ["train", "train", "test", "test"]
    assert not list(root.parent.glob(".*partial"))  # built in a temporary folder, moved into place


def test_roi_numbers_cover_the_published_splits() -> None:
    splits = {roi_number(s, i)[1] for s in ("spring", "summer", "fall", "winter") for i in range(2)}
    assert splits == {"train", "val", "test"}  # the default 2 ROIs per season reach every split
    assert roi_number("spring", 0, "sequential") == (1, None) and roi_number("spring", 99) == (294, None)
    tsv = SHARED / "specs" / "sen12mscr_splits.tsv"
    if tsv.is_file():  # the table agrees with the published lists
        lines = [ln.split("\t") for ln in tsv.read_text().splitlines()[1:] if ln.strip()]
        published = {folder.strip(): split for split, folder in lines}
        prefix = {"spring": "ROIs1158_spring", "summer": "ROIs1868_summer", "fall": "ROIs1970_fall",
                  "winter": "ROIs2017_winter"}
        for season in prefix:
            for i in range(6):
                number, split = roi_number(season, i)
                assert published[f"{prefix[season]}_s1/s1_{number}"] == split
    assert patch_paths("winter", 8, 3)["s2_cloudy"] == "ROIs2017_winter_s2_cloudy/s2_cloudy_8/" \
                                                       "ROIs2017_winter_s2_cloudy_8_p3.tif"


def test_formats_and_one_shared_grid(root: Path) -> None:
    meta = json.loads((root / "synthetic.json").read_text())
    for rec in meta["patches"]:
        f = {k: rasterio.open(root / rel) for k, rel in rec["files"].items()}
        try:
            s1, s2, cl = f["s1"], f["s2"], f["s2_cloudy"]
            assert (s1.count, s1.dtypes[0], s2.count, s2.dtypes[0], cl.count, cl.dtypes[0]) == \
                   (2, "float32", 13, "uint16", 13, "uint16")
            assert s1.crs == s2.crs == cl.crs and s1.crs.is_projected and s1.crs.to_string() == rec["crs"]
            assert s1.transform == s2.transform == cl.transform and s1.res == (10.0, 10.0)
            assert s1.shape == s2.shape == cl.shape == (64, 64)
            assert s2.descriptions == S2_BANDS and s1.descriptions == ("VV", "VH")
            sar = s1.read()
            assert np.isfinite(sar).all() and sar.max() <= 0
            assert -35 < sar[0].min() and -40 < sar[1].min() and np.median(sar[0]) > np.median(sar[1])
            opt = s2.read()
            assert opt.min() >= 1 and np.percentile(opt[B["B10"]], 99) < 30  # cirrus band dark on land
        finally:
            for d in f.values():
                d.close()
    # neighbouring patches of a ROI touch: p2 starts where p1 ends
    with rasterio.open(root / meta["patches"][0]["files"]["s2"]) as a, \
            rasterio.open(root / meta["patches"][1]["files"]["s2"]) as b:
        assert b.transform.c - a.transform.c == 640.0 and b.transform.f == a.transform.f


def _patch(weather: PatchWeather, seed: int = 5) -> dict:
    """A 96 px patch of a landscape forced to hold forest, water, towns and bare ground."""
    rng = np.random.default_rng(seed)
    config = Sen12mscrSynthConfig(size=96)
    land = Landscape(rng, "summer", 960.0)
    land.fractions = {"forest": 0.3, "bare": 0.1, "urban": 0.1, "lake": 0.2}
    land.snow = False
    ref = np.arange(0, 960.0, 10.0) + 5.0
    land.calibrate(ref, ref)
    return generate_sen12mscr_patch(land, (0.0, 0.0), weather, rng, config)


def test_spectra_per_class() -> None:
    p = _patch(PatchWeather(cloud_cover=0.0, cirrus=False, haze=0.0))
    s2, lc = p["s2"].astype(float), p["landcover"]
    ndvi = (s2[B["B8"]] - s2[B["B4"]]) / (s2[B["B8"]] + s2[B["B4"]])
    # pixels inside a class, away from its edges (mixed 10 m pixels are neither)
    veg = binary_erosion((lc == TREE) | (((lc == CROP) | (lc == GRASS)) & (p["green"] > 0.75)))
    water = binary_erosion(lc == WATER)
    assert veg.sum() > 100 and water.sum() > 100
    assert np.mean(ndvi[veg] > 0.4) > 0.95 and np.median(ndvi[veg]) > 0.5
    assert np.mean(ndvi[water] < 0) > 0.95
    # the per-class table: B2/B3/B4/B8 as the landscape's; SWIR separates the classes
    t = {c: np.asarray(v, float) for c, v in S2_SURFACE.items()}
    for c, v in REFLECTANCE.items():
        assert tuple(t[c][[1, 2, 3, 7]]) == v
    assert t[SNOW][B["B11"]] < 0.2 * t[SNOW][B["B3"]]  # snow: bright visible, dark SWIR
    assert t[WATER][B["B11"]] < 100 < t[TREE][B["B11"]] < t[BARE][B["B11"]]
    assert t[TREE][B["B5"]] < t[TREE][B["B6"]] < t[TREE][B["B7"]]  # red edge
    assert t[BUILT][B["B12"]] > t[TREE][B["B12"]]
    # TOA: B1 carries the most path radiance, B9 loses to water vapour
    assert np.median(s2[B["B1"]][veg]) > np.median(s2[B["B2"]][veg])
    assert np.median(s2[B["B9"]][veg]) < 0.6 * np.median(s2[B["B8A"]][veg])


def test_clouds_cirrus_and_shadows() -> None:
    p = _patch(PatchWeather(cloud_cover=0.4, cirrus=True, haze=0.1), seed=8)  # a seed with thick clouds
    assert p["truth"]["thick_clouds"]
    free, cloudy = p["s2"].astype(float), p["s2_cloudy"].astype(float)
    cirrus, alpha = p["cirrus"], p["cloud_alpha"]
    assert np.mean(cirrus > 0.05) > 0.1 and np.mean(alpha > 0.2) > 0.1
    under_cirrus = (cirrus > 0.2) & (alpha < 0.05)
    assert under_cirrus.sum() > 50
    b10 = cloudy[B["B10"]]
    assert np.median(b10[under_cirrus]) > 150
    assert np.percentile(free[B["B10"]], 99) < 30
    # weakly elsewhere: cirrus adds little in B4 relative to the ground
    assert np.median(cloudy[B["B4"]][under_cirrus] / free[B["B4"]][under_cirrus]) < 1.8
    cloud = alpha > 0.2
    assert np.mean(cloudy[B["B2"]][cloud] > free[B["B2"]][cloud]) > 0.95
    assert cloudy[B["B2"]][cloud].mean() > free[B["B2"]][cloud].mean() + 800
    # clouds are white in the visible, a bit lower in SWIR
    assert CLOUD_13[B["B12"]] < CLOUD_13[B["B11"]] < CLOUD_13[B["B2"]] <= min(CLOUD_13[B["B3"]:B["B8"] + 1])
    assert cloudy[B["B12"]][cloud].mean() < cloudy[B["B4"]][cloud].mean()
    # B10 stays dark away from clouds and cirrus, and everywhere without them
    away = binary_erosion((alpha < 0.02) & (cirrus == 0), iterations=4)  # 60 m band: blurred edges
    assert away.sum() > 100 and np.median(b10[away]) < 30
    clear = _patch(PatchWeather(cloud_cover=0.0, cirrus=False, haze=0.2))
    assert np.percentile(clear["s2_cloudy"][B["B10"]], 99) < 30
    assert np.array_equal(clear["cloud_alpha"], np.zeros((96, 96)))
    shade = (p["shadow"] < 0.7) & (alpha < 0.05) & (cirrus < 0.05)
    assert shade.sum() > 100  # cast shadows darken NIR
    assert np.median(cloudy[B["B8"]][shade] / free[B["B8"]][shade]) < 0.9


def test_deterministic_and_overwrite(root: Path, tmp_path: Path) -> None:
    again = generate_sen12mscr(tmp_path / "again", SMALL, seed=3)
    assert _tifs(again) == _tifs(root)
    for rel in _tifs(root) + ["synthetic.json"]:
        assert (again / rel).read_bytes() == (root / rel).read_bytes(), rel
    with pytest.raises(OutputExistsError):
        generate_sen12mscr(again, SMALL, seed=4)
    other = generate_sen12mscr(again, SMALL, seed=4, overwrite=True)
    assert (other / _tifs(root)[0]).read_bytes() != (root / _tifs(root)[0]).read_bytes()
    # a season subset gives the same patches for the seasons it keeps
    fall = generate_sen12mscr(tmp_path / "fall", Sen12mscrSynthConfig(
        size=64, rois_per_season=1, patches_per_roi=2, seasons=("fall",)), seed=3)
    for rel in _tifs(fall):
        assert (fall / rel).read_bytes() == (root / rel).read_bytes()


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="seasons"):
        Sen12mscrSynthConfig(seasons=("autumn",))
    with pytest.raises(ValueError, match="size"):
        Sen12mscrSynthConfig(size=8)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    args = ["synth", str(out), "--format", "sen12mscr", "--rois", "1", "--patches-per-roi", "1", "--size", "32",
            "--seed", "1", "--quiet"]
    assert main(args) == 0
    assert "4 SEN12MS-CR triplets" in capsys.readouterr().out
    assert len(_tifs(out)) == 12  # 4 seasons x 1 ROI x 1 patch x 3 files
    assert main(args) == 2 and "exists" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert main(["synth", str(tmp_path / "x"), "--format", "sen12mscr", "--train", "3"]) == 2
    assert "--train" in capsys.readouterr().err
    assert main(["synth", str(tmp_path / "y"), "--rois", "3"]) == 2  # M3R-CR format: not an option of it
    assert "sen12mscr only" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
