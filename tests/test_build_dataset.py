"""``m3rcr build-dataset``: tiles cut from whole scenes match their sources pixel for pixel, and bad input
fails cleanly."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml
from affine import Affine
from rasterio.enums import Resampling
from rasterio.transform import rowcol
from rasterio.warp import reproject
from rasterio.warp import transform as warp_points
from rasterio.windows import Window

from m3rcr.cli import main
from m3rcr.data import M3RCRDataset, Sampling
from m3rcr.data.build import (
    BuildOptions,
    SceneSet,
    assign_splits,
    build_dataset,
    iter_tiles,
    load_manifest,
    lowres_pixels,
    stride_step,
)
from m3rcr.data.synthetic import SceneConfig, generate_scene
from m3rcr.errors import DataError

TILE = 100  # 100 px at 3 m = 30 px at 10 m: small tiles keep the scenes (and the tests) small
N = 30


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def scene_a(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """600x900 at 3 m, rotated footprint (no-data corners), SAR in EPSG:4326 (dB), land cover in EPSG:4326."""
    return generate_scene(tmp_path_factory.mktemp("scene_a"), SceneConfig(height=600, width=900), seed=1)


@pytest.fixture(scope="module")
def scene_b(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """600x900, no no-data corners, SAR in another UTM zone as linear power covering the western 80 %."""
    cfg = SceneConfig(height=600, width=900, footprint_angle=0.0, sar_crs="EPSG:32634", sar_units="linear",
                      sar_cover=0.8, season="winter")
    return generate_scene(tmp_path_factory.mktemp("scene_b"), cfg, seed=2)


def scene_set(paths: dict[str, Path], mask: str = "cloudmask", **kwargs) -> SceneSet:
    kwargs.setdefault("season", "summer")
    kwargs.setdefault("aoi", "a1")
    return SceneSet(cloudy=paths["cloudy"], cloudfree=paths["cloudfree"], sar=paths["sar"],
                    landcover=paths["landcover"], **{mask: paths[mask]}, **kwargs)


def small(**kwargs) -> BuildOptions:
    kwargs.setdefault("tile", TILE)
    return BuildOptions(**kwargs)


@pytest.fixture(scope="module")
def built_nearest(scene_a: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every tile of scene A (no filter), SAR by nearest neighbour."""
    out = tmp_path_factory.mktemp("built") / "nearest"
    build_dataset([scene_set(scene_a)], out, small(min_valid=0.0, sar_resampling="nearest", test_fraction=0.0))
    return out


@pytest.fixture(scope="module")
def built_bilinear(scene_a: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every tile of scene A (no filter), SAR bilinear (the default)."""
    out = tmp_path_factory.mktemp("built") / "bilinear"
    build_dataset([scene_set(scene_a)], out, small(min_valid=0.0, test_fraction=0.0))
    return out


def native(root: Path, split: str = "train", **kwargs) -> M3RCRDataset:
    return M3RCRDataset(root, split, sar_mode="native", landcover_mode="native", **kwargs, official_sizes=False)


def tiles_of(root: Path) -> list[dict]:
    return json.loads((root / "build.json").read_text())["tiles"]


def window_of(record: dict, size: int = TILE) -> Window:
    return Window(record["window"]["col"], record["window"]["row"], size, size)


def read_window(path: Path, window: Window, bands: list[int] | None = None) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(bands, window=window) if bands else src.read(window=window)


def centres(transform: Affine, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Ground coordinates of the centres of an n x n grid."""
    rows, cols = np.meshgrid(np.arange(n) + 0.5, np.arange(n) + 0.5, indexing="ij")
    return transform @ (cols.ravel(), rows.ravel())


def nearest_lookup(path: Path, crs, transform: Affine, n: int, fill: float) -> np.ndarray:
    """The source pixel under each low-res pixel centre, found independently of GDAL's warper."""
    with rasterio.open(path) as src:
        xs, ys = centres(transform, n)
        sx, sy = warp_points(crs, src.crs, xs, ys)
        r, c = (np.asarray(v) for v in rowcol(src.transform, sx, sy))
        arr = src.read()
    inside = (r >= 0) & (r < arr.shape[1]) & (c >= 0) & (c < arr.shape[2])
    out = np.full((arr.shape[0], n * n), fill, dtype=np.float64)
    out[:, inside] = arr[:, r[inside], c[inside]]
    return out.reshape(arr.shape[0], n, n)


# --------------------------------------------------------------------------- grids and values
def test_lowres_size_and_stride_rule() -> None:
    assert lowres_pixels(300, 3.0, 10.0) == 90
    assert lowres_pixels(100, 3.0, 10.0) == 30
    assert lowres_pixels(300, 3.125, 10.0) == 94  # PlanetScope ortho tiles: 937.5 m / 94 = 9.97 m pixels
    assert stride_step(300, 90) == 10 and stride_step(100, 30) == 10 and stride_step(256, 77) == 256


def test_tiles_match_the_sources_pixel_for_pixel(built_nearest: Path, scene_a: dict[str, Path]) -> None:
    ds = native(built_nearest)  # the dataset checks every file exists when it is built
    records = tiles_of(built_nearest)
    assert len(ds) == len(records) == 6 * 9  # every tile of the 600x900 scene
    with rasterio.open(scene_a["cloudy"]) as src:
        crs, t0 = src.crs, src.transform
    for i, rec in enumerate(records):
        raw = ds.read_raw(i)
        assert raw["files"].name == rec["name"]
        win = window_of(rec)
        for kind in ("cloudy", "cloudfree"):
            r = raw[kind]
            np.testing.assert_array_equal(r.array, read_window(scene_a[kind], win))
            assert r.array.dtype == np.uint16 and r.nodata == 0 and r.crs == crs
            assert r.transform == t0 @ Affine.translation(win.col_off, win.row_off)
        np.testing.assert_array_equal(raw["cloudmask"], read_window(scene_a["cloudmask"], win)[0] != 0)
        sar, lc = raw["sar"], raw["landcover"]
        assert sar.array.dtype == np.float32 and sar.shape == (N, N) and lc.array.dtype == np.uint8
        assert sar.transform == lc.transform
        assert sar.transform.c == raw["cloudy"].transform.c and sar.transform.f == raw["cloudy"].transform.f
        np.testing.assert_allclose(sar.bounds, raw["cloudy"].bounds, atol=1e-6)
        np.testing.assert_allclose(sar.bounds, rec["bounds"], atol=1e-5)
        assert sar.transform.a == pytest.approx(10.0)
        expected_lc = nearest_lookup(scene_a["landcover"], crs, lc.transform, N, 0)
        np.testing.assert_array_equal(lc.array, expected_lc)
        expected_sar = nearest_lookup(scene_a["sar"], crs, sar.transform, N, np.nan)
        np.testing.assert_array_equal(sar.array, expected_sar.astype(np.float32))


def test_bilinear_sar_matches_an_exact_bilinear_and_reproject(built_bilinear: Path, scene_a: dict[str, Path]) -> None:
    ds = native(built_bilinear)
    with rasterio.open(scene_a["sar"]) as src:
        source, s_tf, s_crs = src.read(), src.transform, src.crs
    diffs = []
    for i in range(len(ds)):
        sar = ds.read_raw(i)["sar"]
        ref = np.full((2, N, N), np.nan, np.float32)
        # XSCALE/YSCALE = 1 as in the builder: plain bilinear weights, not widened for the slight downsampling
        reproject(source, ref, src_transform=s_tf, src_crs=s_crs, dst_transform=sar.transform, dst_crs=sar.crs,
                  resampling=Resampling.bilinear, src_nodata=np.nan, dst_nodata=np.nan, XSCALE=1, YSCALE=1)
        np.testing.assert_array_equal(np.isnan(sar.array), np.isnan(ref))
        diffs.append(np.abs(sar.array - ref)[np.isfinite(ref)])
        # an exact bilinear interpolation at each pixel centre (reproject's transformer is approximate)
        xs, ys = centres(sar.transform, N)
        fc, fr = ~s_tf @ tuple(np.asarray(v) for v in warp_points(sar.crs, s_crs, xs, ys))
        c0, r0 = np.floor(fc - 0.5).astype(int), np.floor(fr - 0.5).astype(int)
        wc, wr = fc - 0.5 - c0, fr - 0.5 - r0
        s = source.astype(np.float64)
        exact = (s[:, r0, c0] * (1 - wc) * (1 - wr) + s[:, r0, c0 + 1] * wc * (1 - wr)
                 + s[:, r0 + 1, c0] * (1 - wc) * wr + s[:, r0 + 1, c0 + 1] * wc * wr).reshape(2, N, N)
        ok = np.isfinite(exact)
        assert ok.mean() > 0.99
        np.testing.assert_allclose(sar.array[ok], exact[ok], atol=1e-4)
    d = np.concatenate(diffs)
    # reproject's approximate transformer (0.125 px, fixed in rasterio) moves a few sample points slightly
    assert np.median(d) < 3e-4 and np.quantile(d, 0.95) < 1e-3 and d.max() < 5e-3


def test_overlapping_tiles_read_the_same_low_res_pixels(scene_a: dict[str, Path], tmp_path: Path) -> None:
    """With a stride of half a tile, the shared half of neighbouring tiles holds the same values."""
    out = tmp_path / "overlap"
    build_dataset([scene_set(scene_a)], out, small(stride=50, min_valid=0.0, test_fraction=0.0))
    ds = native(out)
    by_window = {(r["window"]["row"], r["window"]["col"]): i for i, r in enumerate(tiles_of(out))}
    assert len(by_window) == 11 * 17
    a, b = ds.read_raw(by_window[(200, 300)]), ds.read_raw(by_window[(200, 350)])
    np.testing.assert_array_equal(a["sar"].array[:, :, 15:], b["sar"].array[:, :, :15])
    np.testing.assert_array_equal(a["landcover"].array[:, :, 15:], b["landcover"].array[:, :, :15])
    np.testing.assert_array_equal(a["cloudy"].array[:, :, 50:], b["cloudy"].array[:, :, :50])


def test_sar_in_another_utm_zone_as_linear_power(scene_b: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "b"
    s = scene_set(scene_b, season="winter", sar_units="linear")
    result = build_dataset([s], out, BuildOptions(sar_resampling="nearest", test_fraction=0.0))  # official 300 px
    # the SAR covers the western 80 % (about 720 px): the tiles from 600 to 900 px lack some and are skipped
    assert {r["window"]["col"] for r in tiles_of(out)} == {0, 300}
    assert result.skipped["low_valid"] == 2
    ds = M3RCRDataset(out, "train", sar_mode="native", landcover_mode="native")  # official 300/90 sizes
    for i in range(len(ds)):
        sar = ds.read_raw(i)["sar"]
        with np.errstate(divide="ignore"):
            expected = 10 * np.log10(nearest_lookup(scene_b["sar"], sar.crs, sar.transform, 90, np.nan))
        np.testing.assert_allclose(sar.array, expected, atol=1e-4)
        assert np.isfinite(sar.array).all()
        item = ds[i]
        assert item["sar"].shape == (2, 90, 90) and 0 <= float(item["sar"].min()) <= float(item["sar"].max()) <= 1


@pytest.mark.parametrize("count,bands", [(6, (5, 3, 2, 6)), (13, (2, 3, 4, 8))])
def test_many_band_optical_scenes(scene_a: dict[str, Path], tmp_path: Path, count: int, bands: tuple) -> None:
    """Blue, green, red, NIR are picked from any band count and written in that order."""
    with rasterio.open(scene_a["cloudy"]) as src:
        profile, four = src.profile, src.read()
    many = np.zeros((count, *four.shape[1:]), np.uint16)
    for b in range(count):
        many[b] = (four[b % 4].astype(np.uint32) * (b + 1) // (b + 2)).astype(np.uint16)
    for i, b in enumerate(bands):
        many[b - 1] = four[i]
    path = tmp_path / f"cloudy{count}.tif"
    with rasterio.open(path, "w", **{**profile, "count": count}) as dst:
        dst.write(many)
    paths = {**scene_a, "cloudy": path}
    with pytest.raises(DataError, match=f"cloudy{count}.tif.*has {count} band"):
        build_dataset([scene_set(paths)], tmp_path / "x", small())
    with pytest.raises(DataError, match=f"cloudy{count}.tif.*band.*{count + 1}.*do not exist"):
        build_dataset([scene_set(paths, bands=(1, 2, 3, count + 1))], tmp_path / "x", small())
    assert not (tmp_path / "x").exists()
    out = tmp_path / "out"
    build_dataset([scene_set(paths, bands=bands, cloudfree_bands=(1, 2, 3, 4))], out, small(test_fraction=0.0))
    ds = native(out)
    assert len(ds) > 0
    for i, rec in enumerate(tiles_of(out)):
        np.testing.assert_array_equal(ds.read_raw(i)["cloudy"].array, read_window(path, window_of(rec), list(bands)))


# --------------------------------------------------------------------------- cloud masks and filters
@pytest.fixture(scope="module")
def udm_files(scene_a: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A legacy UDM with an extra no-data block in the middle of the footprint, and a matching UDM2."""
    folder = tmp_path_factory.mktemp("udm")
    with rasterio.open(scene_a["udm"]) as src:
        profile, udm = src.profile, src.read(1)
    udm[250:280, 420:460] |= 1  # blackfill inside tile (row 200, col 400)
    legacy = folder / "udm.tif"
    with rasterio.open(legacy, "w", **profile) as dst:
        dst.write(udm[None])
    udm2 = np.zeros((8, *udm.shape), np.uint8)
    udm2[5] = (udm >> 1) & 1  # band 6: cloud
    udm2[4, 100:160, 100:500] = 1  # band 5: heavy haze
    udm2[2, 400:430, 300:800] = 1  # band 3: shadow
    udm2[7] = udm  # band 8: the legacy bits
    udm2[0] = (udm2[[2, 4, 5]].max(axis=0) == 0) & (udm & 1 == 0)  # band 1: clear
    path2 = folder / "udm2.tif"
    with rasterio.open(path2, "w", **{**profile, "count": 8}) as dst:
        dst.write(udm2)
    return {"udm": legacy, "udm2": path2}


def test_legacy_udm_gives_the_cloud_bit_and_excludes_blackfill(scene_a, udm_files, tmp_path: Path) -> None:
    out = tmp_path / "udm"
    result = build_dataset([scene_set({**scene_a, "udm": udm_files["udm"]}, mask="udm")], out,
                           small(test_fraction=0.0))
    records = tiles_of(out)
    windows = {(r["window"]["row"], r["window"]["col"]) for r in records}
    assert (200, 400) not in windows and (200, 300) in windows  # the blackfill block costs one tile
    assert result.skipped["low_valid"] == 54 - len(records)
    ds = native(out)
    with rasterio.open(udm_files["udm"]) as src:
        bits = src.read(1)
    for i, rec in enumerate(records):
        w = window_of(rec)
        sub = bits[w.row_off:w.row_off + TILE, w.col_off:w.col_off + TILE]
        assert not (sub & 1).any() and rec["valid_fraction"] == 1.0
        mask = ds.read_raw(i)["cloudmask"]
        np.testing.assert_array_equal(mask, (sub >> 1) & 1 == 1)
        assert rec["cloud_cover"] == pytest.approx(mask.mean())
    meta = json.loads((out / "build.json").read_text())
    assert meta["scenes"][0]["udm_format"] == "udm"


@pytest.mark.parametrize("classes", [None, ["cloud", "heavy_haze", "shadow"]])
def test_udm2_classes_and_no_data(scene_a, udm_files, tmp_path: Path, classes) -> None:
    out = tmp_path / "udm2"
    kwargs = {"cloud_classes": tuple(classes)} if classes else {}
    build_dataset([scene_set({**scene_a, "udm": udm_files["udm2"]}, mask="udm", **kwargs)], out,
                  small(test_fraction=0.0))
    records = tiles_of(out)
    assert (200, 400) not in {(r["window"]["row"], r["window"]["col"]) for r in records}
    ds = native(out)
    with rasterio.open(udm_files["udm2"]) as src:
        udm2 = src.read()
    bands = [6] if classes is None else [6, 5, 3]
    expected_all = (udm2[[b - 1 for b in bands]] != 0).any(axis=0)
    for i, rec in enumerate(records):
        w = window_of(rec)
        np.testing.assert_array_equal(ds.read_raw(i)["cloudmask"],
                                      expected_all[w.row_off:w.row_off + TILE, w.col_off:w.col_off + TILE])
    assert json.loads((out / "build.json").read_text())["scenes"][0]["udm_format"] == "udm2"


def test_any_non_zero_cloud_mask_value_is_cloudy(scene_a, tmp_path: Path) -> None:
    """A float mask (e.g. a cloud probability) in band 2 of a raster: every non-zero value counts."""
    with rasterio.open(scene_a["cloudmask"]) as src:
        profile, mask = src.profile, src.read(1)
    probability = np.stack([np.zeros_like(mask, np.float32), mask * np.float32(0.3)])
    path = tmp_path / "probability.tif"
    with rasterio.open(path, "w", **{**profile, "count": 2, "dtype": "float32"}) as dst:
        dst.write(probability)
    out = tmp_path / "out"
    build_dataset([scene_set({**scene_a, "cloudmask": path}, cloudmask_band=2)], out, small(test_fraction=0.0))
    ds = native(out)
    for i, rec in enumerate(tiles_of(out)):
        np.testing.assert_array_equal(ds.read_raw(i)["cloudmask"], read_window(path, window_of(rec), [2])[0] > 0)


def test_min_valid_skips_the_no_data_corners(built_nearest: Path, scene_a, tmp_path: Path) -> None:
    out = tmp_path / "full"
    result = build_dataset([scene_set(scene_a)], out, small(test_fraction=0.0))
    with rasterio.open(scene_a["cloudy"]) as c, rasterio.open(scene_a["cloudfree"]) as f:
        cloudy, free = c.read(), f.read()
    expected = set()
    for row in range(0, 600, TILE):
        for col in range(0, 900, TILE):
            window = (slice(None), slice(row, row + TILE), slice(col, col + TILE))
            if (cloudy[window] != 0).all() and (free[window] != 0).all():
                expected.add((row, col))
    got = {(r["window"]["row"], r["window"]["col"]) for r in tiles_of(out)}
    assert got == expected and 0 < len(got) < 54
    assert dict(result.skipped) == {"low_valid": 54 - len(got)}
    # iter_tiles reads the same tiles without writing anything
    kept = {(row, col) for row, col, tile in iter_tiles(scene_set(scene_a), small()) if not isinstance(tile, str)}
    assert kept == got
    # the unfiltered build agrees on the valid fractions
    fractions = {(r["window"]["row"], r["window"]["col"]): r["valid_fraction"] for r in tiles_of(built_nearest)}
    assert all(fractions[k] == 1.0 for k in got) and all(fractions[k] < 1.0 for k in set(fractions) - got)


def test_cloud_range_keeps_only_tiles_within_it(built_nearest: Path, scene_a, tmp_path: Path) -> None:
    covers = {(r["window"]["row"], r["window"]["col"]): r["cloud_cover"] for r in tiles_of(built_nearest)}
    lo, hi = np.quantile(list(covers.values()), [0.3, 0.7])
    out = tmp_path / "cloud"
    result = build_dataset([scene_set(scene_a)], out, small(min_valid=0.0, min_cloud=lo, max_cloud=hi,
                                                            test_fraction=0.0))
    got = {(r["window"]["row"], r["window"]["col"]) for r in tiles_of(out)}
    assert got == {k for k, v in covers.items() if lo <= v <= hi}
    assert result.skipped["low_cloud"] == sum(v < lo for v in covers.values())
    assert result.skipped["high_cloud"] == sum(v > hi for v in covers.values())
    meta = json.loads((out / "build.json").read_text())
    assert meta["skipped"] == {"low_valid": 0, "low_cloud": result.skipped["low_cloud"],
                               "high_cloud": result.skipped["high_cloud"]}


# --------------------------------------------------------------------------- manifests and splits
def write_manifest(path: Path, scenes: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"scenes": scenes}, sort_keys=False))
    return path


def entry(paths: dict[str, Path], base: Path, **kwargs) -> dict:
    """A manifest entry with paths relative to ``base``."""
    rel = {k: os.path.relpath(paths[k], base) for k in ("cloudy", "cloudfree", "sar", "landcover", "cloudmask")}
    return {"season": "summer", "aoi": "a1", **rel, **kwargs}


def test_assign_splits_by_aoi() -> None:
    def sets(names: list[str], split: dict | None = None) -> list[SceneSet]:
        return [SceneSet("summer", n, Path("c"), Path("f"), Path("s"), Path("l"), cloudmask=Path("m"),
                         split=(split or {}).get(n)) for n in names]

    names = [f"aoi{i}" for i in range(10)]
    a = assign_splits(sets(names), 0.2, seed=3)
    assert a == assign_splits(sets(names), 0.2, seed=3)  # deterministic
    assert sorted(a.values()).count("test") == 2
    assert any(assign_splits(sets(names), 0.2, seed=s) != a for s in range(1, 5))
    assert sorted(assign_splits(sets(["x", "y"]), 0.01).values()) == ["test", "train"]  # at least one each
    assert sorted(assign_splits(sets(["x", "y"]), 0.99).values()) == ["test", "train"]
    assert assign_splits(sets(["x", "y"]), 0.0) == {"x": "train", "y": "train"}
    fixed = assign_splits(sets(["x", "y", "z"], {"x": "test", "y": "test"}), 0.5)
    assert fixed["x"] == fixed["y"] == "test" and fixed["z"] == "train"
    two_seasons = sets(["x", "x"], {"x": "test"})
    assert assign_splits(two_seasons, 0.2) == {"x": "test"}
    with pytest.raises(DataError, match="must stay in one split"):
        assign_splits(sets(["x", "x"]) + sets(["x"], {"x": "test"}) + sets(["x"], {"x": "train"}), 0.2)


def test_manifest_split_by_aoi_and_csvs(scene_a, scene_b, tmp_path: Path) -> None:
    root = tmp_path
    scenes = [entry(scene_a, root, aoi=f"site-{i}") for i in range(4)]
    scenes.append(entry(scene_a, root, aoi="site-0", season="fall"))  # same place, another season
    scenes.append(entry(scene_a, root, aoi="site-1"))  # same season and AOI: numbering continues
    b = {**scene_b, "cloudmask": scene_b["cloudmask"]}
    scenes.append(entry(b, root, season="winter", aoi="b", split="test", sar_units="linear",
                        sar_bands=[1, 2], bands="1,2,3,4"))
    manifest = write_manifest(root / "scenes.yaml", scenes)
    loaded = load_manifest(manifest)
    assert not Path(scenes[0]["cloudy"]).is_absolute()
    assert loaded[0].cloudy.resolve() == Path(scene_a["cloudy"]).resolve()
    out = root / "data"
    result = build_dataset(loaded, out, small(seed=1, test_fraction=0.3))
    meta = json.loads((out / "build.json").read_text())
    aoi_splits = meta["aoi_splits"]
    assert set(aoi_splits) == {"site-0", "site-1", "site-2", "site-3", "b"} and aoi_splits["b"] == "test"
    assert {aoi_splits[f"site-{i}"] for i in range(4)} == {"train", "test"}
    per_tile = {t["name"]: t["split"] for t in meta["tiles"]}
    for name, split in per_tile.items():
        season, aoi = name.split("_")[:2]
        assert split == aoi_splits[aoi]
    # numbering continues across the two entries of summer_site-1
    site1 = sorted(int(n.rsplit("_", 1)[1]) for n in per_tile if n.startswith("summer_site-1_"))
    assert site1 == list(range(1, len(site1) + 1)) and len(site1) == 2 * meta["scenes"][1]["tiles_written"]
    counts = result.counts()
    for split in ("train", "test"):
        with open(out / f"{split}.csv") as fh:
            rows = list(csv.reader(fh))
        assert len(rows) == counts[split] == sum(s == split for s in per_tile.values())
        listed = {p for row in rows for p in row}
        on_disk = {str(p.relative_to(out / split)) for p in (out / split).rglob("*") if p.is_file()}
        assert listed == on_disk
        ds = M3RCRDataset(out, split, official_sizes=False)
        assert sorted(ds.names) == sorted(n for n, s in per_tile.items() if s == split)
        for i in range(len(ds)):
            item = ds[i]
            assert item["cloudy"].shape == (4, TILE, TILE) and torch.isfinite(item["sar"]).all()
    assert meta["m3rcr_version"] and meta["settings"]["tile"] == TILE
    assert Path(meta["scenes"][0]["cloudy"]).is_absolute()
    assert Path(meta["scenes"][0]["cloudy"]).resolve() == Path(scene_a["cloudy"]).resolve()


@pytest.mark.parametrize("change,message", [
    ({"colour": "red"}, "unknown key.*colour"),
    ({"sar": None}, "missing key.*sar"),
    ({"aoi": "a_b"}, "aoi 'a_b' must be letters"),
    ({"season": "sum mer"}, "season 'sum mer'"),
    ({"udm": "udm.tif"}, "exactly one of cloudmask"),
    ({"split": "val"}, "split must be train or test"),
    ({"sar_units": "amplitude"}, "sar_units"),
    ({"bands": [1, 2, 3]}, "bands needs 4"),
    ({"cloud_classes": ["fog"]}, "udm only"),
])
def test_manifest_errors_name_the_file_and_entry(scene_a, tmp_path: Path, change: dict, message: str) -> None:
    e = {**entry(scene_a, tmp_path), **change}
    manifest = write_manifest(tmp_path / "scenes.yaml", [entry(scene_a, tmp_path), e])
    with pytest.raises(DataError, match=f"scenes.yaml entry 2: .*{message}"):
        load_manifest(manifest)


def test_manifest_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.yaml: scene manifest not found"):
        load_manifest(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("scenes: [a, b\n")
    with pytest.raises(DataError, match="bad.yaml: not valid YAML"):
        load_manifest(tmp_path / "bad.yaml")
    (tmp_path / "empty.yaml").write_text("scenes: []\n")
    with pytest.raises(DataError, match="empty.yaml: expected a list"):
        load_manifest(tmp_path / "empty.yaml")
    (tmp_path / "extra.yaml").write_text("scene: []\n")
    with pytest.raises(DataError, match="unknown top-level key"):
        load_manifest(tmp_path / "extra.yaml")


# --------------------------------------------------------------------------- bad scenes
def _rewrite(src_path: Path, dst_path: Path, **changes) -> Path:
    """A copy of a raster with profile changes (crs, transform, ...)."""
    with rasterio.open(src_path) as src:
        profile, data = src.profile, src.read()
    profile.update(changes)
    with rasterio.open(dst_path, "w", **profile) as dst:
        dst.write(data)
    return dst_path


def _far_away(path: Path, tmp: Path, name: str) -> Path:
    with rasterio.open(path) as src:
        t = src.transform
    return _rewrite(path, tmp / name, transform=Affine(t.a, t.b, t.c + (50 if src.crs.is_geographic else 5e5),
                                                       t.d, t.e, t.f))


@pytest.mark.parametrize("case", ["missing", "no_crs", "sar_elsewhere", "landcover_elsewhere", "cloudfree_elsewhere",
                                  "small", "sar_bands", "stride", "udm_bands"])
def test_bad_scenes_fail_before_writing(scene_a, tmp_path: Path, case: str) -> None:
    paths, kwargs, options = dict(scene_a), {}, small()
    if case == "missing":
        paths["landcover"] = tmp_path / "nope.tif"
        match = "nope.tif: missing land-cover map file"
    elif case == "no_crs":
        paths["cloudfree"] = _rewrite(scene_a["cloudfree"], tmp_path / "nocrs.tif", crs=None)
        match = "nocrs.tif: cloud-free optical scene has no CRS"
    elif case == "sar_elsewhere":
        paths["sar"] = _far_away(scene_a["sar"], tmp_path, "far_sar.tif")
        match = "far_sar.tif: SAR image does not overlap the optical scene"
    elif case == "landcover_elsewhere":
        paths["landcover"] = _far_away(scene_a["landcover"], tmp_path, "far_lc.tif")
        match = "far_lc.tif: land-cover map does not overlap"
    elif case == "cloudfree_elsewhere":
        paths["cloudfree"] = _far_away(scene_a["cloudfree"], tmp_path, "far_cf.tif")
        match = "far_cf.tif: cloud-free optical scene does not overlap"
    elif case == "small":
        options = BuildOptions(tile=1000)
        match = "cloudy.tif: scene is 600x900 pixels, smaller than one 1000x1000 tile"
    elif case == "sar_bands":
        kwargs["sar_bands"] = (1, 3)
        match = r"sar.tif: SAR image has 2 band\(s\); band\(s\) \[3\] do not exist"
    elif case == "stride":
        options = small(stride=55)
        match = "cloudy.tif: stride 55 .* multiple of 10 optical pixels"
    else:
        paths["udm"] = scene_a["cloudy"]
        kwargs["mask"] = "udm"
        match = "cloudy.tif: has 4 bands: neither a legacy UDM"
    out = tmp_path / "out"
    with pytest.raises(DataError, match=match):
        build_dataset([scene_set(paths, **kwargs)], out, options)
    assert not out.exists() and not (tmp_path / ".out.partial").exists()


def test_cloudfree_in_another_crs_is_warped(scene_a, tmp_path: Path) -> None:
    from rasterio.warp import calculate_default_transform

    with rasterio.open(scene_a["cloudfree"]) as src:
        t, w, h = calculate_default_transform(src.crs, "EPSG:32634", src.width, src.height, *src.bounds)
        data = np.zeros((4, h, w), np.uint16)
        reproject(src.read(), data, src_transform=src.transform, src_crs=src.crs, dst_transform=t,
                  dst_crs="EPSG:32634", resampling=Resampling.nearest, src_nodata=0, dst_nodata=0)
        profile = {**src.profile, "crs": "EPSG:32634", "transform": t, "width": w, "height": h}
    path = tmp_path / "cf_32634.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    out = tmp_path / "out"
    build_dataset([scene_set({**scene_a, "cloudfree": path})], out, small(test_fraction=0.0))
    ds = native(out)
    assert len(ds) > 0
    rec = tiles_of(out)[0]
    free = ds.read_raw(0)["cloudfree"]
    assert free.crs == ds.read_raw(0)["cloudy"].crs
    # twice resampled by nearest neighbour: most pixels come back exactly
    assert (free.array == read_window(scene_a["cloudfree"], window_of(rec))).mean() > 0.5


def test_existing_output_is_kept_without_overwrite(scene_a, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        build_dataset([scene_set(scene_a)], out, small())
    # --overwrite replaces only an earlier build, never a folder of other files
    with pytest.raises(FileExistsError, match="not a dataset written by m3rcr build-dataset"):
        build_dataset([scene_set(scene_a)], out, small(), overwrite=True)
    assert (out / "keep.txt").read_text() == "x"
    (out / "keep.txt").unlink()
    build_dataset([scene_set(scene_a)], out, small(test_fraction=0.0))
    (out / "stale.txt").write_text("from the earlier build")
    result = build_dataset([scene_set(scene_a)], out, small(test_fraction=0.0), overwrite=True)
    assert not (out / "stale.txt").exists() and (out / "train.csv").is_file() and len(result.tiles) > 0
    inside = out / "inputs"
    inside.mkdir()
    _rewrite(scene_a["cloudy"], inside / "cloudy.tif")
    with pytest.raises(ValueError, match="holds the input"):
        build_dataset([scene_set({**scene_a, "cloudy": inside / "cloudy.tif"})], out, small(), overwrite=True)


def test_the_current_folder_is_never_replaced(scene_a, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with pytest.raises(ValueError, match="current folder"):
        build_dataset([scene_set(scene_a)], Path("."), small())
    with pytest.raises(ValueError, match="current folder"):
        build_dataset([scene_set(scene_a)], tmp_path, small(), overwrite=True)
    assert work.is_dir()


# --------------------------------------------------------------------------- command line and models
def test_cli_end_to_end(scene_a, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    manifest = write_manifest(tmp_path / "scenes.yaml", [entry(scene_a, tmp_path, aoi=a) for a in ("n1", "n2")])
    out = tmp_path / "data"
    assert main(["build-dataset", str(out), "--scenes", str(manifest), "--tile", "100", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "train" in printed and "skipped" in printed
    assert (out / "train.csv").is_file() and (out / "test.csv").is_file()  # two AOIs: one in each split
    # one scene set from flags, official tile size, checked with the default dataset settings
    out2 = tmp_path / "one"
    args = ["build-dataset", str(out2), "--cloudy", str(scene_a["cloudy"]), "--cloudfree", str(scene_a["cloudfree"]),
            "--sar", str(scene_a["sar"]), "--landcover", str(scene_a["landcover"]), "--udm", str(scene_a["udm"]),
            "--season", "spring", "--aoi", "7", "--min-valid", "0.8", "--quiet"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["info", "--data", str(out2), "--split", "train", "--check", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["samples"] > 0 and not info["problems"]
    # bad input: exit status 2 and one clean error line
    assert main(args) == 2  # OUT is not empty
    assert "not empty" in capsys.readouterr().err
    bad = args[:2] + ["--overwrite"] + [a if a != str(scene_a["sar"]) else str(tmp_path / "none.tif") for a in args[2:]]
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert err.startswith("m3rcr build-dataset: error: ") and "none.tif: missing SAR image file" in err
    assert main(["build-dataset", str(tmp_path / "x"), "--cloudy", "a.tif"]) == 2
    assert "missing: --cloudfree" in capsys.readouterr().err
    assert main(["build-dataset", str(tmp_path / "x"), "--scenes", str(manifest), "--stride", "55", "--quiet"]) == 2
    assert "stride 55" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_built_dataset_trains_a_model(built_nearest: Path) -> None:
    from torch.utils.data import DataLoader

    from m3rcr.models import create_model

    ds = M3RCRDataset(built_nearest, "train", sampling=Sampling(crop_size=TILE), official_sizes=False)
    batch = next(iter(DataLoader(ds, batch_size=2)))
    torch.manual_seed(0)
    model = create_model("dsen2cr", features=8, blocks=2)
    out = model(batch["cloudy"], batch["sar"])
    assert out.shape == batch["cloudfree"].shape and torch.isfinite(out).all()
    loss = (out - batch["cloudfree"]).abs().mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("mask", ["cloudmask", "udm"])
def test_masks_declaring_nodata_zero_keep_their_clear_pixels(scene_a, tmp_path: Path, mask: str) -> None:
    """A mask copied from an optical profile often says nodata=0, although 0 means clear."""
    tagged = _rewrite(scene_a[mask], tmp_path / f"{mask}_nodata0.tif", nodata=0)
    plain = build_dataset([scene_set(scene_a, mask=mask)], tmp_path / "plain", small(test_fraction=0.0,
                                                                                      min_valid=0.5))
    with_tag = build_dataset([scene_set({**scene_a, mask: tagged}, mask=mask)], tmp_path / "tagged",
                             small(test_fraction=0.0, min_valid=0.5))
    assert len(with_tag.tiles) == len(plain.tiles) > 0
    a, b = native(tmp_path / "plain"), native(tmp_path / "tagged")
    for i in range(len(a)):
        np.testing.assert_array_equal(a.read_raw(i)["cloudmask"], b.read_raw(i)["cloudmask"])
