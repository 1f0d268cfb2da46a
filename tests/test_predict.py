"""Whole-scene prediction: georeference, exact tiling and blending, no-data and footprint, bounded memory."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.warp import transform as warp_transform
from rasterio.windows import Window
from tiny_models import TINY

from m3rcr.cli import main
from m3rcr.data.preprocess import normalize_sar
from m3rcr.data.scene import OpticalScene, SarLayer, grid_of
from m3rcr.data.synthetic import SceneConfig, generate_scene
from m3rcr.errors import DataError
from m3rcr.inference import PredictOptions, predict_scene
from m3rcr.inference.tiling import Blender, PredictionGrid, blend_ramp, tile_starts
from m3rcr.models import create_model, list_models, save_checkpoint


class Identity(torch.nn.Module):
    """Returns the cloudy input: a prediction must give back the scene."""

    def forward(self, cloudy: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        return cloudy.clone()


class AddConstant(torch.nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, cloudy: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        return cloudy + self.value


class SarEcho(torch.nn.Module):
    """Writes the SAR it receives into the blue and green bands (to check the SAR reaching the model)."""

    def forward(self, cloudy: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        return torch.cat([sar, cloudy[:, 2:]], dim=1)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """2000 x 2400 optical pixels in UTM 33N with no-data corners; SAR in EPSG:4326 covering 80 % of the width."""
    cfg = SceneConfig(height=2000, width=2400, sar_crs="EPSG:4326", sar_cover=0.8, cloud_cover=0.4)
    return generate_scene(tmp_path_factory.mktemp("scene"), cfg, seed=3)


@pytest.fixture(scope="module")
def small_scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """300 x 360 pixels; SAR in another UTM zone (32N) at 20 m, in linear power."""
    cfg = SceneConfig(height=300, width=360, sar_crs="EPSG:32632", sar_res=20.0, sar_units="linear",
                      footprint_angle=0.0)
    return generate_scene(tmp_path_factory.mktemp("small"), cfg, seed=5)


def _read(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as src:
        return src.read(), dict(src.profile, descriptions=src.descriptions, tags=src.tags(),
                                structure=src.tags(ns="IMAGE_STRUCTURE"), overviews=src.overviews(1))


def _sar_lookup(sar_path: Path, optical_path: Path, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """SAR (2, n) at optical pixel centres by an independent nearest lookup; NaN outside the SAR raster."""
    with rasterio.open(optical_path) as opt, rasterio.open(sar_path) as sar:
        xs, ys = rasterio.transform.xy(opt.transform, rows, cols)
        sx, sy = warp_transform(opt.crs, sar.crs, xs, ys)
        r, c = rasterio.transform.rowcol(sar.transform, sx, sy)
        r, c = np.asarray(r), np.asarray(c)
        data = sar.read()
    inside = (r >= 0) & (r < data.shape[1]) & (c >= 0) & (c < data.shape[2])
    out = np.full((2, len(rows)), np.nan, dtype=np.float64)
    out[:, inside] = data[:, r[inside], c[inside]]
    return out


@pytest.fixture(scope="module")
def identity_run(scene: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("pred") / "identity.tif"
    stats = predict_scene(Identity(), scene["cloudy"], out, scene["sar"],
                          PredictOptions(tile=256, overlap=32, batch_size=3), progress=False)
    return out, stats


# --------------------------------------------------------------------------- tiling
@pytest.mark.parametrize("length,tile,overlap", [(1000, 256, 32), (256, 256, 32), (100, 256, 32), (257, 256, 0),
                                                 (2000, 300, 299)])
def test_tile_starts_cover_everything(length: int, tile: int, overlap: int) -> None:
    starts = tile_starts(length, tile, overlap)
    size = min(tile, length)
    covered = np.zeros(length, int)
    for s in starts:
        assert 0 <= s and s + size <= length
        covered[s:s + size] += 1
    assert covered.min() >= 1
    for a, b in zip(starts, starts[1:]):
        assert a + size - b >= overlap  # neighbours overlap by at least the overlap


def test_tile_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="overlap"):
        tile_starts(1000, 64, 64)
    with pytest.raises(ValueError, match="tile"):
        tile_starts(1000, 0, 0)


def test_blend_ramp_is_smooth_and_positive() -> None:
    w = blend_ramp(64, 16, True, True)
    assert w.min() > 0 and w.max() == 1
    assert np.all(np.diff(w[:16]) > 0) and np.allclose(w[:16], w[::-1][:16])
    assert np.array_equal(blend_ramp(64, 16, False, False), np.ones(64))


def test_blender_writes_every_cell_once_with_the_weighted_mean() -> None:
    grid = PredictionGrid(700, 530, 128, 40)
    rng = np.random.default_rng(0)
    written = np.zeros((700, 530), int)
    result = np.zeros((700, 530))
    num, den = np.zeros((700, 530)), np.zeros((700, 530))
    values = {t.index: rng.random((1, t.window.height, t.window.width)) for t in grid}

    def write(win: Window, v: np.ndarray, ok: np.ndarray) -> None:
        sl = win.toslices()
        written[sl] += 1
        result[sl] = v[0]

    blender = Blender(grid, 1, write)
    for t in grid:
        blender.add(t, values[t.index], np.ones((t.window.height, t.window.width), bool))
        sl = t.window.toslices()
        num[sl] += values[t.index][0] * grid.weights(t)
        den[sl] += grid.weights(t)
    assert blender.finished()
    assert (written == 1).all()
    np.testing.assert_allclose(result, num / den, rtol=1e-12)
    # only about one overlap band of cells is ever pending, not the grid
    assert blender.peak_cells < 3 * (len(grid.col_edges) + 2)


# --------------------------------------------------------------------------- exactness and georeference
def test_identity_model_gives_back_the_scene(scene: dict[str, Path], identity_run: tuple[Path, object]) -> None:
    out, stats = identity_run
    pred, prof = _read(out)
    cloudy, src = _read(scene["cloudy"])
    # the georeference, dtype, no-data and band metadata are the input's
    for key in ("crs", "transform", "width", "height", "count", "dtype", "nodata"):
        assert prof[key] == src[key], key
    assert prof["descriptions"] == ("blue", "green", "red", "nir")
    assert prof["structure"].get("LAYOUT") == "COG" and prof["structure"].get("COMPRESSION") == "DEFLATE"
    assert prof["overviews"], "a cloud-optimized GeoTIFF has overviews"
    assert json.loads(prof["tags"]["M3RCR_PREDICT"])["tile"] == 256
    # where the output has data it is the input, bit for bit (tiling and blending lose nothing)
    valid = (pred != 0).all(axis=0)
    assert valid.mean() > 0.4
    assert np.array_equal(pred[:, valid], cloudy[:, valid])
    assert stats.tiles_run < stats.tiles  # tiles in the no-data corners or outside the SAR are skipped


def test_nodata_and_sar_footprint(scene: dict[str, Path], identity_run: tuple[Path, object]) -> None:
    out, stats = identity_run
    pred, _ = _read(out)
    cloudy, _ = _read(scene["cloudy"])
    rows, cols = np.meshgrid(np.arange(0, 2000, 7), np.arange(0, 2400, 7), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    sar = _sar_lookup(scene["sar"], scene["cloudy"], rows, cols)
    in_footprint = ~np.isnan(sar).any(axis=0)
    optical_ok = (cloudy[:, rows, cols] != 0).all(axis=0)
    expected = in_footprint & optical_ok
    got = (pred[:, rows, cols] != 0).all(axis=0)
    assert 0.2 < in_footprint.mean() < 0.95 and 0.4 < optical_ok.mean() < 0.95  # both masks matter here
    assert np.array_equal(got, expected)
    assert (pred[:, rows[~got], cols[~got]] == 0).all()  # no-data in every band
    assert stats.valid_fraction == pytest.approx(expected.mean(), abs=0.01)
    assert 0.7 < stats.sar_covered_fraction < 0.9


def test_constant_offset_everywhere_no_seams(scene: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "plus.tif"
    predict_scene(AddConstant(0.0125), scene["cloudy"], out, scene["sar"],
                  PredictOptions(tile=200, overlap=48, batch_size=5), progress=False)
    pred, _ = _read(out)
    cloudy, _ = _read(scene["cloudy"])
    valid = (pred != 0).all(axis=0)
    diff = pred[:, valid].astype(np.int64) - cloudy[:, valid]
    assert np.unique(diff).tolist() == [125]


def test_sar_reaches_the_model_on_the_optical_grid(small_scene: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "echo.tif"
    predict_scene(SarEcho(), small_scene["cloudy"], out, small_scene["sar"],
                  PredictOptions(sar_units="linear", tile=96, overlap=24), progress=False)
    pred, _ = _read(out)
    rows, cols = np.meshgrid(np.arange(300), np.arange(360), indexing="ij")
    linear = _sar_lookup(small_scene["sar"], small_scene["cloudy"], rows.ravel(), cols.ravel())
    inside = ~np.isnan(linear).any(axis=0)
    assert inside.mean() > 0.9
    expected = normalize_sar(10 * np.log10(linear[:, inside])[:, :, None])[:, :, 0]
    got = pred[:2].reshape(2, -1)[:, inside] / 10000.0
    close = np.abs(got - np.maximum(expected, 1e-4)) <= 0.6e-4  # uint16 rounding; 0 moves to 1 (0 is no-data)
    # nearest neighbour may pick the other pixel for a centre within rounding error of an edge (2 of 216000 here)
    assert close.mean() > 0.9999, np.argwhere(~close)[:5]


def test_sar_layer_matches_an_independent_lookup(scene: dict[str, Path]) -> None:
    with OpticalScene(scene["cloudy"]) as optical, SarLayer(scene["sar"], optical.grid) as sar:
        win = Window(1500, 700, 300, 260)
        values, valid = sar.read(win)
    rows, cols = np.meshgrid(np.arange(700, 960), np.arange(1500, 1800), indexing="ij")
    ref = _sar_lookup(scene["sar"], scene["cloudy"], rows.ravel(), cols.ravel()).reshape(2, 260, 300)
    assert np.array_equal(valid, ~np.isnan(ref).any(axis=0))
    np.testing.assert_array_equal(values[:, valid], normalize_sar(ref[:, valid][:, :, None])[:, :, 0])


# --------------------------------------------------------------------------- bands, dtypes, masks
def _write_like(path: Path, data: np.ndarray, template: Path, **kw: object) -> Path:
    with rasterio.open(template) as t:
        profile = dict(t.profile, count=data.shape[0], dtype=data.dtype.name, **kw)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def test_band_selection_and_input_band_order(small_scene: dict[str, Path], tmp_path: Path) -> None:
    cloudy, _ = _read(small_scene["cloudy"])
    rng = np.random.default_rng(0)
    # a 13-band Sentinel-2-like stack with blue, green, red, NIR as bands 2, 3, 4, 8
    s2 = rng.integers(1, 10000, (13, *cloudy.shape[1:]), dtype=np.uint16)
    s2[[1, 2, 3, 7]] = cloudy
    s2[:, cloudy[0] == 0] = 0
    path = _write_like(tmp_path / "s2.tif", s2, small_scene["cloudy"])
    out = tmp_path / "s2_pred.tif"
    predict_scene(Identity(), path, out, small_scene["sar"],
                  PredictOptions(bands="2,3,4,8", sar_units="linear", tile=128), progress=False)
    pred, _ = _read(out)
    ok = (pred != 0).all(axis=0)
    assert np.array_equal(pred[:, ok], cloudy[:, ok])
    # a file ordered red, green, blue, NIR: the model still gets blue first, the output keeps the file's order
    rgbn = cloudy[[2, 1, 0, 3]]
    path = _write_like(tmp_path / "rgbn.tif", rgbn, small_scene["cloudy"])

    class ZeroBlue(torch.nn.Module):
        def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            return torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:]], dim=1)

    out = tmp_path / "rgbn_pred.tif"
    predict_scene(ZeroBlue(), path, out, small_scene["sar"],
                  PredictOptions(bands=[3, 2, 1, 4], sar_units="linear", tile=128), progress=False)
    pred, _ = _read(out)
    ok = (pred != 0).any(axis=0)
    assert (pred[2][ok] == 1).all()  # blue (file band 3) predicted 0, moved off the no-data value
    assert np.array_equal(pred[[0, 1, 3]][:, ok], rgbn[[0, 1, 3]][:, ok])


def test_float_reflectance_with_nan_nodata(small_scene: dict[str, Path], tmp_path: Path) -> None:
    cloudy, _ = _read(small_scene["cloudy"])
    refl = (cloudy / 10000.0).astype(np.float32)
    refl[:, 10:40, 20:90] = np.nan
    path = _write_like(tmp_path / "float.tif", refl, small_scene["cloudy"], nodata=np.nan)
    out = tmp_path / "float_pred.tif"
    predict_scene(Identity(), path, out, small_scene["sar"],
                  PredictOptions(scale=1.0, sar_units="linear", tile=128), progress=False)
    pred, prof = _read(out)
    assert prof["dtype"] == "float32" and np.isnan(prof["nodata"])
    assert np.isnan(pred[:, 10:40, 20:90]).all()
    ok = ~np.isnan(pred).any(axis=0)
    assert np.array_equal(pred[:, ok], refl[:, ok])


def test_cloud_mask_limits_the_replacement(small_scene: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "masked.tif"
    predict_scene(AddConstant(0.01), small_scene["cloudy"], out, small_scene["sar"],
                  PredictOptions(sar_units="linear", mask=small_scene["cloudmask"], tile=128), progress=False)
    pred, _ = _read(out)
    cloudy, _ = _read(small_scene["cloudy"])
    mask, _ = _read(small_scene["cloudmask"])
    ok = (pred != 0).all(axis=0)
    cloud = (mask[0] > 0) & ok
    assert 0.05 < cloud.mean() < 0.95
    assert (pred[:, cloud].astype(int) - cloudy[:, cloud] == 100).all()
    assert np.array_equal(pred[:, ok & ~cloud], cloudy[:, ok & ~cloud])


# --------------------------------------------------------------------------- memory
def _plain_scene(folder: Path, n: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(n)
    t = Affine(3.0, 0, 500_000, 0, -3.0, 4_000_000)
    cloudy = folder / f"cloudy_{n}.tif"
    with rasterio.open(cloudy, "w", driver="GTiff", width=n, height=n, count=4, dtype="uint16", nodata=0,
                       crs="EPSG:32631", transform=t, tiled=True) as dst:
        for r in range(0, n, 512):
            h = min(512, n - r)
            dst.write(rng.integers(1, 10000, (4, h, n), dtype=np.uint16), window=Window(0, r, n, h))
    m = n * 3 // 10 + 1
    sar = folder / f"sar_{n}.tif"
    with rasterio.open(sar, "w", driver="GTiff", width=m, height=m, count=2, dtype="float32", crs="EPSG:32631",
                       transform=Affine(10.0, 0, 500_000, 0, -10.0, 4_000_000)) as dst:
        dst.write(rng.uniform(-25, 0, (2, m, m)).astype(np.float32))
    return cloudy, sar


def test_peak_memory_does_not_grow_with_the_scene(tmp_path: Path) -> None:
    small, big = _plain_scene(tmp_path, 1024), _plain_scene(tmp_path, 2048)
    predict_scene(Identity(), *small[:1], tmp_path / "warm.tif", small[1], progress=False)  # imports, caches
    peaks = []
    for cloudy, sar in (small, big):
        tracemalloc.start()
        try:
            predict_scene(Identity(), cloudy, tmp_path / f"out_{cloudy.stem}.tif", sar,
                          PredictOptions(tile=256, overlap=32), progress=False)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    scene_bytes = 4 * 2048 * 2048 * 4  # the 4x larger scene as float32
    assert peaks[1] < 1.25 * peaks[0], peaks  # 4x the pixels, about the same memory
    assert peaks[1] < 0.5 * scene_bytes, peaks


# --------------------------------------------------------------------------- errors and atomic output
def test_errors_name_the_file_and_leave_nothing(small_scene: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out" / "pred.tif"
    with pytest.raises(DataError, match=r"band\(s\) 5 do not exist"):
        predict_scene(Identity(), small_scene["cloudy"], out, small_scene["sar"], PredictOptions(bands="2,3,4,5"),
                      progress=False)
    with pytest.raises(DataError, match="--sar-bands 1,1 names a band twice"):
        predict_scene(Identity(), small_scene["cloudy"], out, small_scene["sar"], PredictOptions(sar_bands="1,1"),
                      progress=False)
    # SAR somewhere else on Earth
    far = tmp_path / "far.tif"
    with rasterio.open(small_scene["sar"]) as s:
        data, profile = s.read(), s.profile
    profile["transform"] = Affine.translation(200_000, 0) @ profile["transform"]
    with rasterio.open(far, "w", **profile) as dst:
        dst.write(data)
    with pytest.raises(DataError, match="does not overlap") as err:
        predict_scene(Identity(), small_scene["cloudy"], out, far, progress=False)
    assert str(far) in str(err.value)
    # a SAR raster without CRS
    nocrs = tmp_path / "nocrs.tif"
    profile.update(crs=None)
    with rasterio.open(nocrs, "w", **profile) as dst:
        dst.write(data)
    with pytest.raises(DataError, match="no CRS") as err:
        predict_scene(Identity(), small_scene["cloudy"], out, nocrs, progress=False)
    assert str(nocrs) in str(err.value)
    # integer SAR, and an optical raster with too many bands and no --bands
    with pytest.raises(DataError, match="expected float backscatter"):
        predict_scene(Identity(), small_scene["cloudy"], out, small_scene["landcover"], progress=False)
    six = _write_like(tmp_path / "six.tif", np.ones((6, 300, 360), np.uint16), small_scene["cloudy"])
    with pytest.raises(DataError, match="has 6 band"):
        predict_scene(Identity(), six, out, small_scene["sar"], progress=False)

    class Broken(torch.nn.Module):
        calls = 0

        def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            Broken.calls += 1
            if Broken.calls > 2:
                raise RuntimeError("out of memory")
            return x

    with pytest.raises(RuntimeError, match="out of memory"):
        predict_scene(Broken(), small_scene["cloudy"], out, small_scene["sar"],
                      PredictOptions(sar_units="linear", tile=64, batch_size=1), progress=False)
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no output, no temporary file
    out.parent.mkdir(exist_ok=True)
    out.write_bytes(b"keep me")
    with pytest.raises(FileExistsError):
        predict_scene(Identity(), small_scene["cloudy"], out, small_scene["sar"], progress=False)
    assert out.read_bytes() == b"keep me"


# --------------------------------------------------------------------------- the command, every model


@pytest.mark.parametrize("name", sorted(TINY))
def test_predict_command_with_every_registry_model(name: str, small_scene: dict[str, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert set(TINY) == set(list_models())
    torch.manual_seed(0)
    ckpt = save_checkpoint(create_model(name, **TINY[name]), tmp_path / f"{name}.ckpt")
    out = tmp_path / "pred.tif"
    args = ["predict", "--cloudy", str(small_scene["cloudy"]), "--sar", str(small_scene["sar"]), "--sar-units",
            "linear", "--checkpoint", str(ckpt), "--out", str(out), "--tile", "128", "--overlap", "16",
            "--device", "cpu", "--quiet"]
    if name == "aligncr":
        args += ["--preview", str(tmp_path / "preview.png"), "--stats", str(tmp_path / "stats.json")]
    assert main(args) == 0, capsys.readouterr().err
    pred, prof = _read(out)
    with rasterio.open(small_scene["cloudy"]) as src:
        assert (prof["crs"], prof["transform"], prof["dtype"]) == (src.crs, src.transform, src.dtypes[0])
    assert (pred != 0).all(axis=0).mean() > 0.9
    if name == "aligncr":
        assert (tmp_path / "preview.png").stat().st_size > 10_000
        assert json.loads((tmp_path / "stats.json").read_text())["settings"]["model"] == "aligncr"
    assert main(args) == 2  # the output exists now
    assert "exists" in capsys.readouterr().err


def test_predict_command_reports_bad_input(small_scene: dict[str, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = save_checkpoint(create_model("dsen2cr", **TINY["dsen2cr"]), tmp_path / "m.ckpt")
    code = main(["predict", "--cloudy", str(tmp_path / "missing.tif"), "--sar", str(small_scene["sar"]),
                 "--checkpoint", str(ckpt), "--out", str(tmp_path / "o.tif"), "--device", "cpu", "--quiet"])
    assert code == 2
    assert "missing.tif: missing optical scene file" in capsys.readouterr().err
    code = main(["predict", "--cloudy", str(small_scene["cloudy"]), "--checkpoint", str(ckpt), "--out",
                 str(tmp_path / "o.tif"), "--device", "cpu", "--quiet"])
    assert code == 2
    assert "give the Sentinel-1 scene" in capsys.readouterr().err


def test_grid_of_matches_the_file(small_scene: dict[str, Path]) -> None:
    with rasterio.open(small_scene["cloudy"]) as src:
        g = grid_of(src)
        assert g.shape == (300, 360) and g.res == (3.0, 3.0) and g.bounds == tuple(src.bounds)


# --------------------------------------------------------------------------- review findings
def test_blended_tiles_have_no_seams(small_scene: dict[str, Path], tmp_path: Path) -> None:
    """Tiles that disagree (a checkerboard of two values) must meet smoothly, not with a step."""
    grid = PredictionGrid(300, 360, 96, 32)
    positions = [(t.row, t.col) for t in grid]

    class Checkerboard(torch.nn.Module):
        calls = 0

        def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            out = torch.empty_like(x)
            for k in range(len(x)):
                r, c = positions[Checkerboard.calls]
                out[k] = 0.2 + 0.2 * ((r + c) % 2)
                Checkerboard.calls += 1
            return out

    out = tmp_path / "checker.tif"
    predict_scene(Checkerboard(), small_scene["cloudy"], out, small_scene["sar"],
                  PredictOptions(sar_units="linear", tile=96, overlap=32, batch_size=4), progress=False)
    assert Checkerboard.calls == len(grid)  # every tile ran, in raster order
    pred, _ = _read(out)
    band = pred[0].astype(float)
    assert band.min() == 2000 and band.max() == 4000  # tile interiors keep their own value
    steps = max(np.abs(np.diff(band, axis=0)).max(), np.abs(np.diff(band, axis=1)).max())
    assert steps < 0.15 * 2000, steps  # a hard cut would step by 2000 at every tile edge


def test_gdal_block_cache_is_capped_during_prediction(small_scene: dict[str, Path], tmp_path: Path) -> None:
    seen = []

    class Probe(Identity):
        def forward(self, cloudy: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
            seen.append(rasterio.env.getenv().get("GDAL_CACHEMAX"))
            return cloudy

    predict_scene(Probe(), small_scene["cloudy"], tmp_path / "o.tif", small_scene["sar"],
                  PredictOptions(sar_units="linear"), progress=False)
    assert seen and all(v is not None and int(v) <= 64 * 2**20 for v in seen), seen


def test_mask_declaring_nodata_zero_and_clear_pixels_kept_exactly(small_scene: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    mask, _ = _read(small_scene["cloudmask"])
    mask_nd = _write_like(tmp_path / "mask_nodata0.tif", mask, small_scene["cloudmask"], nodata=0)
    out = tmp_path / "m.tif"
    # an offset that puts dark input pixels below reflectance 0 (by less than the -0.05 that the optical
    # check refuses): clear pixels must still come back exactly
    predict_scene(AddConstant(0.01), small_scene["cloudy"], out, small_scene["sar"],
                  PredictOptions(sar_units="linear", mask=mask_nd, offset=-400.0, tile=128), progress=False)
    pred, _ = _read(out)
    cloudy, _ = _read(small_scene["cloudy"])
    ok = (pred != 0).all(axis=0)
    clear = ok & (mask[0] == 0)
    assert clear.mean() > 0.3 and (cloudy[:, clear] < 400).any()
    assert np.array_equal(pred[:, clear], cloudy[:, clear])
    assert not np.array_equal(pred[:, ok & (mask[0] > 0)], cloudy[:, ok & (mask[0] > 0)])


def test_zero_linear_power_is_outside_the_footprint(small_scene: dict[str, Path], tmp_path: Path) -> None:
    with rasterio.open(small_scene["sar"]) as src:
        data, profile = src.read(), src.profile
    data[:, :, data.shape[2] // 2:] = 0.0  # Sentinel-1 blackfill without a no-data tag
    profile.update(nodata=None)
    sar = tmp_path / "blackfill.tif"
    with rasterio.open(sar, "w", **profile) as dst:
        dst.write(data)
    stats = predict_scene(Identity(), small_scene["cloudy"], tmp_path / "o.tif", sar,
                          PredictOptions(sar_units="linear"), progress=False)
    assert 0.3 < stats.valid_fraction < 0.7


def test_non_finite_model_output_becomes_nodata(small_scene: dict[str, Path], tmp_path: Path) -> None:
    class Holes(torch.nn.Module):
        def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            y = x.clone()
            y[:, :, :8, :8] = float("nan")  # every tile's corner
            return y

    out = tmp_path / "o.tif"
    stats = predict_scene(Holes(), small_scene["cloudy"], out, small_scene["sar"],
                          PredictOptions(sar_units="linear", tile=128, overlap=32), progress=False)
    pred, _ = _read(out)
    assert stats.nonfinite_tiles == stats.tiles_run
    assert (pred[:, :8, :8] == 0).all()  # covered by one tile only: no-data
    cloudy, _ = _read(small_scene["cloudy"])
    ok = (pred != 0).all(axis=0)
    assert ok.mean() > 0.98 and np.array_equal(pred[:, ok], cloudy[:, ok])  # elsewhere the other tiles fill in


def test_unusable_georeferencing_is_a_clear_error(small_scene: dict[str, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from rasterio.control import GroundControlPoint
    from rasterio.crs import CRS

    with rasterio.open(small_scene["sar"]) as src:
        data, profile = src.read(), src.profile
    local = tmp_path / "local.tif"
    wkt = 'LOCAL_CS["engineering",UNIT["metre",1],AXIS["X",EAST],AXIS["Y",NORTH]]'
    with rasterio.open(local, "w", **dict(profile, crs=CRS.from_wkt(wkt))) as dst:
        dst.write(data)
    with pytest.raises(DataError) as err:
        predict_scene(Identity(), small_scene["cloudy"], tmp_path / "o.tif", local, progress=False)
    assert str(local) in str(err.value)
    gcps = [GroundControlPoint(r, c, 13.0 + c * 1e-4, 45.0 - r * 1e-4) for r, c in ((0, 0), (0, 50), (50, 0))]
    gcp = tmp_path / "gcp.tif"
    with rasterio.open(gcp, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=2,
                       dtype=data.dtype, gcps=gcps, crs="EPSG:4326") as dst:
        dst.write(data)
    with pytest.raises(DataError, match="ground control points"):
        predict_scene(Identity(), small_scene["cloudy"], tmp_path / "o.tif", gcp, progress=False)
    ckpt = save_checkpoint(create_model("dsen2cr", **TINY["dsen2cr"]), tmp_path / "m.ckpt")
    assert main(["predict", "--cloudy", str(small_scene["cloudy"]), "--sar", str(local), "--checkpoint", str(ckpt),
                 "--out", str(tmp_path), "--device", "cpu", "--quiet"]) == 2
    assert "is a folder" in capsys.readouterr().err
