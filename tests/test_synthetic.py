"""The synthetic M3R-CR generator: layout, formats, georeferencing, content and determinism."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from m3rcr.data import M3RCRDataset, list_split
from m3rcr.data.layout import scan_split
from m3rcr.data.preprocess import cloud_cover_bin
from m3rcr.data.synthetic import BIOMES, SynthConfig, generate_dataset
from m3rcr.errors import DataError


def test_layout_and_csvs(synth_root: Path) -> None:
    assert sorted(p.name for p in synth_root.iterdir()) == ["synthetic.json", "test", "test.csv", "train", "train.csv"]
    train, test = list_split(synth_root, "train"), list_split(synth_root, "test")
    assert len(train) == 10 and len(test) == 5
    assert not {s.aoi for s in train} & {s.aoi for s in test}  # splits by AOI
    assert len({s.aoi for s in train}) == 3  # 4 patches per AOI
    for s in train + test:
        for kind, path in zip(("planet_cloudfree", "planet_cloudy", "S1", "landcover", "cloudmask"),
                              s.paths().values()):
            assert path.is_file()
            assert path.parent.parent.name.startswith(kind + "_") and path.name.startswith(kind + "_")
    # a scan of the folder finds exactly what the CSV lists
    scanned = scan_split(synth_root / "train")
    assert sorted(str(x.cloudy) for x in scanned) == sorted(str(x.cloudy) for x in train)


def test_files_have_the_official_formats_and_georeferencing(synth_root: Path) -> None:
    offsets = set()
    for s in list_split(synth_root, "train"):
        with rasterio.open(s.cloudy) as opt, rasterio.open(s.cloudfree) as free, \
                rasterio.open(s.sar) as sar, rasterio.open(s.landcover) as lc:
            assert (opt.count, opt.height, opt.width, opt.dtypes[0], opt.nodata) == (4, 300, 300, "uint16", 0)
            assert free.profile == opt.profile
            assert (sar.count, sar.height, sar.width, sar.dtypes[0]) == (2, 90, 90, "float64")
            assert (lc.count, lc.height, lc.width, lc.dtypes[0]) == (1, 90, 90, "uint8")
            assert opt.crs == sar.crs == lc.crs and opt.crs.is_projected
            epsg = opt.crs.to_epsg()
            assert 32601 <= epsg <= 32660 or 32701 <= epsg <= 32760  # UTM north or south
            assert (opt.res, sar.res) == ((3.0, 3.0), (10.0, 10.0))
            assert lc.transform == sar.transform and sar.transform.c % 10 == 0
            dx, dy = opt.transform.c - sar.transform.c, opt.transform.f - sar.transform.f
            assert max(abs(dx), abs(dy)) <= 2 and (dx, dy) != (0, 0)  # like the real 1-2 m offsets
            offsets.add((dx, dy))
            assert opt.read().min() >= 1  # 0 is no-data
            assert set(np.unique(lc.read())) <= {10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100}
            assert opt.tags()["AREA_OR_POINT"] == "Area"
        mask = np.load(s.cloudmask, allow_pickle=False)
        assert mask.dtype == bool and mask.shape == (300, 300)
    assert len(offsets) > 2


def test_round_trip_through_the_reader(synth_root: Path) -> None:
    for mode in ("nearest", "geo", "native"):
        ds = M3RCRDataset(synth_root, "test", sar_mode=mode)
        for i in range(len(ds)):
            s = ds[i]
            assert s["cloudy"].shape == (4, 300, 300) and s["cloudy"].dtype.is_floating_point
            assert 0 <= float(s["sar"].min()) and float(s["sar"].max()) <= 1


def test_cloud_cover_spread_over_the_five_bins(synth_root: Path) -> None:
    meta = json.loads((synth_root / "synthetic.json").read_text())
    for split, n in (("train", 10), ("test", 5)):
        covers = [np.load(s.cloudmask).mean() for s in list_split(synth_root, split)]
        bins = np.bincount([cloud_cover_bin(c) for c in covers], minlength=5)
        assert bins.tolist() == [n // 5] * 5
        targets = [m["cloud_cover_target"] for m in meta["samples"] if m["split"] == split]
        assert [cloud_cover_bin(t) for t in targets] == [cloud_cover_bin(c) for c in covers]


def test_content_is_plausible(tmp_path_factory: pytest.TempPathFactory) -> None:
    """NDVI by class, SAR by class, clouds where the mask says, a small radiometric change."""
    root = generate_dataset(tmp_path_factory.mktemp("plaus") / "d", 30, 0, seed=11)
    ds = M3RCRDataset(root, "train", landcover_level=2)  # WorldCover ids: 0 tree, 2 grass, 4 built, 7 water
    native = M3RCRDataset(root, "train", sar_mode="native", landcover_level=2)
    ndvi: dict[int, list] = {}
    vv: dict[int, list] = {}
    inside, outside = [], []
    for i in range(len(ds)):
        s, n = ds[i], native[i]
        free, cloudy, m = s["cloudfree"].numpy(), s["cloudy"].numpy(), s["cloudmask"].numpy().astype(bool)
        nd = (free[3] - free[2]) / (free[3] + free[2])
        lc = s["landcover"].numpy()
        for c in (0, 2, 4, 7):
            ndvi.setdefault(c, []).append(nd[lc == c])
            vv.setdefault(c, []).append(n["sar"][0].numpy()[n["landcover"].numpy() == c])
        diff = np.abs(cloudy - free).mean(0)
        if m.any():
            inside.append(diff[m].mean())
        if (~m).any():
            outside.append(diff[~m].mean())
    med = {c: float(np.median(np.concatenate(v))) for c, v in ndvi.items()}
    assert med[7] < 0 and med[0] > 0.6 and med[2] > 0.4 and med[4] < 0.3
    db = {c: float(np.median(np.concatenate(v))) * 25 - 25 for c, v in vv.items()}  # back to dB for VV
    assert db[7] < -18 and db[4] > -8 and db[0] > db[2] > db[7]
    assert np.mean(inside) > 5 * np.mean(outside)
    assert np.mean(outside) > 0.002  # the two acquisitions are not identical outside clouds
    biomes = {m["biome"] for m in json.loads((root / "synthetic.json").read_text())["samples"]}
    assert len(biomes) >= 3 and biomes <= set(BIOMES)


def test_sar_misalignment_recorded_and_bounded(synth_root: Path) -> None:
    shifts = []
    for s in list_split(synth_root, "train"):
        with rasterio.open(s.sar) as src:
            tags = src.tags()
        shifts.append((float(tags["M3RCR_SAR_SHIFT_EAST_M"]), float(tags["M3RCR_SAR_SHIFT_NORTH_M"])))
    shifts = np.array(shifts)
    assert np.abs(shifts).max() <= 9.0 and np.abs(shifts).max() > 1.0 and len(np.unique(shifts)) == shifts.size


def test_fixed_sar_shift_moves_only_the_sar(tmp_path: Path) -> None:
    """A misalignment sweep: every sample's SAR content is displaced by exactly the requested distance,
    in the same random direction at every level, and nothing else changes."""
    roots = {px: generate_dataset(tmp_path / f"s{px}", 3, 1, seed=2, config=SynthConfig(sar_shift_px=px))
             for px in (0.0, 4.0, 12.0)}
    truth = {px: [s["sar_shift_m"] for s in json.loads((r / "synthetic.json").read_text())["samples"]]
             for px, r in roots.items()}
    for px in (4.0, 12.0):
        lengths = np.hypot(*np.array(truth[px]).T)
        np.testing.assert_allclose(lengths, px * 3.0, rtol=1e-9)  # optical pixels of 3 m
        directions = np.array(truth[px]) / lengths[:, None]
        np.testing.assert_allclose(directions, np.array(truth[12.0]) / (12 * 3.0), atol=1e-9)
    assert np.abs(np.array(truth[0.0])).max() == 0
    a, b = M3RCRDataset(roots[0.0], "train"), M3RCRDataset(roots[12.0], "train")
    for i in range(len(a)):
        for key in ("cloudy", "cloudfree", "cloudmask", "landcover"):
            assert np.array_equal(a[i][key].numpy(), b[i][key].numpy()), key
        assert not np.array_equal(a[i]["sar"].numpy(), b[i]["sar"].numpy())
    with pytest.raises(ValueError, match=">= 0"):
        SynthConfig(sar_shift_px=-1)


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = generate_dataset(tmp_path / "a", 3, 2, seed=7)
    b = generate_dataset(tmp_path / "b", 3, 2, seed=7)
    c = generate_dataset(tmp_path / "c", 3, 2, seed=8)
    for fa, fb in zip(sorted(a.rglob("*.*")), sorted(b.rglob("*.*")), strict=True):
        assert fa.relative_to(a) == fb.relative_to(b)
        if fa.suffix in (".tif", ".npy"):
            assert fa.read_bytes() == fb.read_bytes(), fa
    sa, sc = M3RCRDataset(a, "train")[0], M3RCRDataset(c, "train")[0]
    assert not np.array_equal(sa["cloudfree"].numpy(), sc["cloudfree"].numpy())
    # sample i does not depend on how many samples are generated
    d = generate_dataset(tmp_path / "d", 1, 0, seed=7)
    assert (d / "train.csv").read_text().splitlines()[0] == (a / "train.csv").read_text().splitlines()[0]


def test_refuses_to_overwrite_and_leaves_nothing_partial(tmp_path: Path) -> None:
    out = generate_dataset(tmp_path / "x", 1, 1, seed=0)
    with pytest.raises(FileExistsError, match="not empty"):
        generate_dataset(out, 1, 1, seed=0)
    generate_dataset(out, 2, 1, seed=1, overwrite=True)
    assert len(list_split(out, "train")) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["x"]
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError, match="not a folder"):
        generate_dataset(tmp_path / "file", 1, 1, seed=0)
    with pytest.raises(ValueError):
        SynthConfig(size=301)


def test_other_tile_sizes_with_the_size_check_off(tmp_path: Path) -> None:
    root = generate_dataset(tmp_path / "small", 2, 1, seed=0, config=SynthConfig(size=150, patches_per_aoi=2))
    s = M3RCRDataset(root, "train", sar_mode="native", official_sizes=False)[0]
    assert s["cloudy"].shape == (4, 150, 150) and s["sar"].shape == (2, 45, 45)
    with pytest.raises(DataError, match="must be 300x300 pixels, found 150x150"):
        M3RCRDataset(root, "train")[0]


@pytest.mark.timing
def test_speed(tmp_path: Path) -> None:
    """100 samples must take under 20 s on one core (benchmarks/data_speed.py measures it).

    Here 25 samples must cost under 10 s of CPU time (about 2.3 s on the project's machine). CPU time,
    unlike wall-clock time, does not grow when other tests share the cores.
    """
    t0 = time.process_time()
    generate_dataset(tmp_path / "s", 25, 0, seed=0)
    assert time.process_time() - t0 < 10.0
