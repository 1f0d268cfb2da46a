"""Real rasters in, never silently wrong: SAR units, no-data the GDAL way, corrupt files, SAR coverage.

Tiny synthetic rasters throughout (the two real M3R-CR samples only where stated; those tests skip
without ../shared).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from tiny_models import TINY

from m3rcr.cli import main
from m3rcr.data import M3RCRDataset
from m3rcr.data.layout import list_split
from m3rcr.data.synthetic import SceneConfig, generate_scene
from m3rcr.errors import DataError
from m3rcr.evaluation.scene import score_scene
from m3rcr.inference import PredictOptions, predict_scene
from m3rcr.models import create_model, save_checkpoint

CRS = "EPSG:32633"
H, W = 64, 96  # optical pixels at 3 m
T_OPT = Affine(3.0, 0, 400_000.0, 0, -3.0, 5_000_000.0)
T_SAR = Affine(10.0, 0, 400_000.0, 0, -10.0, 5_000_000.0)
SAR_SHAPE = (H * 3 // 10 + 1, W * 3 // 10 + 1)  # covers the optical scene


class Identity(torch.nn.Module):
    """Returns the cloudy input (so an output pixel equals its input pixel)."""

    calls = 0

    def forward(self, cloudy: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        Identity.calls += 1
        return cloudy.clone()


class AddConstant(torch.nn.Module):
    def forward(self, cloudy: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        return cloudy + 0.01


def write_tif(path: Path, data: np.ndarray, transform: Affine = T_OPT, nodata: float | None = None,
              mask: np.ndarray | None = None, **kw: object) -> Path:
    """A GeoTIFF in UTM 33N; ``mask`` (H, W bool, True = valid) becomes an internal per-dataset mask."""
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                   dtype=data.dtype.name, crs=CRS, transform=transform, nodata=nodata, **kw)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if mask is not None:
            dst.write_mask(np.where(mask, 255, 0).astype(np.uint8))
    return path


def optical(path: Path, seed: int = 0, **kw: object) -> tuple[Path, np.ndarray]:
    """4-band uint16 reflectance x 10000 with no no-data value; a few pixels are exactly 0 (dark water)."""
    data = np.random.default_rng(seed).integers(200, 4000, (4, H, W)).astype(np.uint16)
    data[:, 5:9, 10:20] = 0
    data[2, 30:33, 40:44] = 0  # one band only
    return write_tif(path, data, **kw), data


def sar_db(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vv = rng.normal(-11.0, 3.0, SAR_SHAPE)
    vh = rng.normal(-18.0, 3.0, SAR_SHAPE)
    return np.stack([vv, vh]).astype(np.float32)


def sar(path: Path, units: str = "db", values: np.ndarray | None = None, **kw: object) -> Path:
    db = sar_db() if values is None else values
    data = db if units == "db" else (10 ** (db / 10)).astype(np.float32)
    return write_tif(path, data, T_SAR, **kw)


def truncate(path: Path) -> Path:
    """Cut a file to half its size, as an interrupted download or copy leaves it."""
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size // 2)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    return {name: save_checkpoint(create_model(name, **TINY[name]), folder / f"{name}.ckpt")
            for name in ("dsen2cr", "aligncr_wo_sar")}


def predict_cli(ckpt: Path, cloudy: Path, out: Path, *extra: str) -> int:
    return main(["predict", "--cloudy", str(cloudy), "--checkpoint", str(ckpt), "--out", str(out), "--tile", "64",
                 "--overlap", "16", "--device", "cpu", "--quiet", *extra])


# --------------------------------------------------------------------------- 1. SAR units
def test_synthetic_sar_passes_the_units_check() -> None:
    from m3rcr.data.sar_units import check_sar_units, sar_value_stats

    stats = check_sar_units(sar_db(), "db", "synthetic")
    assert stats is not None and -16 < stats.median < -12
    linear = check_sar_units(10 ** (sar_db() / 10), "linear", "synthetic linear")
    assert linear is not None and linear.count == stats.count and 10 ** -1.6 < linear.median < 10 ** -1.2
    # zeros (blackfill), NaN and the no-data value are ignored, not counted as values
    filled = np.concatenate([sar_db(), np.zeros((2, 50, SAR_SHAPE[1]), np.float32)], axis=1)
    filled[:, :3] = np.nan
    filled[:, 3:6] = -9999
    assert sar_value_stats(filled, nodata=-9999).count == sar_value_stats(sar_db()[:, 6:]).count


def test_real_m3rcr_s1_tiles_are_db_and_pass(real_root: Path) -> None:
    from m3rcr.data.sar_units import check_sar_units

    real = sorted(real_root.glob("*/S1_*/*/*.tif"))
    assert len(real) == 2
    for path in real:
        with rasterio.open(path) as src:
            stats = check_sar_units(src.read(), "db", path)
        assert stats is not None and -20 < stats.median < -5 and stats.positive < 0.01
        ds = M3RCRDataset(real_root, path.parts[-4])
        assert ds[0]["sar"].std() > 0.05  # not the constant a wrong unit gives


@pytest.mark.parametrize("units,declared,looks,flag", [("linear", None, "looks like linear power", "--sar-units linear"),
                                                      ("db", "linear", "looks like dB", "--sar-units db")])
def test_predict_refuses_sar_in_other_units_before_any_tile(units: str, declared: str | None, looks: str, flag: str,
                                                            ckpts: dict[str, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    cloudy, _ = optical(tmp_path / "cloudy.tif")
    s1 = sar(tmp_path / "s1.tif", units)
    out = tmp_path / "out.tif"
    extra = ["--sar", str(s1)] + (["--sar-units", declared] if declared else [])
    assert predict_cli(ckpts["dsen2cr"], cloudy, out, *extra) == 2
    err = capsys.readouterr().err
    assert f"{s1}: " in err and looks in err and flag in err and "median" in err, err
    assert not out.exists()
    Identity.calls = 0
    with pytest.raises(DataError, match=looks):
        predict_scene(Identity(), cloudy, out, s1, PredictOptions(sar_units=declared or "db"), progress=False)
    assert Identity.calls == 0  # refused before any tile ran


def test_build_dataset_refuses_linear_sar_read_as_db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scene = generate_scene(tmp_path / "scene", SceneConfig(height=100, width=100, sar_units="linear",
                                                           footprint_angle=0.0), seed=4)
    args = ["build-dataset", str(tmp_path / "ds"), "--cloudy", str(scene["cloudy"]), "--cloudfree",
            str(scene["cloudfree"]), "--sar", str(scene["sar"]), "--landcover", str(scene["landcover"]),
            "--cloudmask", str(scene["cloudmask"]), "--season", "summer", "--aoi", "a1", "--tile", "100", "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{scene['sar']}: " in err and "looks like linear power" in err and "--sar-units linear" in err, err
    assert not (tmp_path / "ds").exists()
    assert main(args + ["--sar-units", "linear"]) == 0, capsys.readouterr().err  # declared right, it builds


@pytest.fixture
def synth_copy(synth_root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "synth"
    shutil.copytree(synth_root, dst)
    return dst


@pytest.mark.parametrize("which", ["synthetic", "real"])
def test_loader_and_info_check_refuse_linear_s1_tiles(which: str, request: pytest.FixtureRequest,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    root = request.getfixturevalue("synth_copy" if which == "synthetic" else "real_copy")
    s1 = list_split(root, "train")[0].sar
    with rasterio.open(s1) as src:
        data, profile = src.read(), src.profile
    with rasterio.open(s1, "w", **profile) as dst:
        dst.write(10 ** (data / 10))  # linear power where M3R-CR has dB
    with pytest.raises(DataError, match="looks like linear power") as err:
        M3RCRDataset(root, "train")[0]
    assert str(s1) in str(err.value) and "10 * log10" in str(err.value)
    assert main(["info", "--data", str(root), "--split", "train", "--check", "--json"]) == 1
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert len(problems) == 1 and problems[0].startswith(f"{s1}: ") and "linear power" in problems[0]


def test_predict_warns_when_the_model_ignores_sar(ckpts: dict[str, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    cloudy, _ = optical(tmp_path / "cloudy.tif")
    s1 = sar(tmp_path / "s1.tif")
    assert predict_cli(ckpts["aligncr_wo_sar"], cloudy, tmp_path / "o.tif", "--sar", str(s1)) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "SAR" in line]
    assert lines == [f"warning: model aligncr_wo_sar does not use SAR; --sar {s1} is ignored"]
    assert predict_cli(ckpts["aligncr_wo_sar"], cloudy, tmp_path / "o2.tif") == 0  # no SAR: no warning
    assert "SAR" not in capsys.readouterr().err


# --------------------------------------------------------------------------- 2. no-data the GDAL way
def _read(path: Path) -> tuple[np.ndarray, np.ndarray, rasterio.profiles.Profile]:
    with rasterio.open(path) as src:
        return src.read(), src.dataset_mask() > 0, src.profile


def test_no_nodata_value_is_invented_and_zeros_stay_data(tmp_path: Path) -> None:
    cloudy, data = optical(tmp_path / "cloudy.tif")
    values = sar_db()
    values[:, 10:13, 5:9] = np.nan  # SAR gap: those optical pixels are no-data in the output
    out = tmp_path / "out.tif"
    predict_scene(Identity(), cloudy, out, sar(tmp_path / "s1.tif", values=values),
                  PredictOptions(tile=64, overlap=16), progress=False)
    pred, valid, profile = _read(out)
    assert profile["nodata"] is None  # the input declares none: none is invented
    assert 0.9 < valid.mean() < 1.0
    assert np.array_equal(pred[:, valid], data[:, valid])  # bit for bit, zeros included
    zeros = (data == 0).any(axis=0)
    assert zeros.sum() > 40 and valid[zeros].all()  # valid input zeros are valid output zeros
    assert (pred[:, ~valid] == 0).all()
    # an input that declares a no-data value keeps it (and its no-data pixels)
    data[:, :, :8] = 65535
    write_tif(cloudy, data, nodata=65535)
    out = tmp_path / "out_nodata.tif"
    predict_scene(Identity(), cloudy, out, sar(tmp_path / "s1_full.tif"), PredictOptions(tile=64, overlap=16),
                  progress=False)
    pred, valid, profile = _read(out)
    assert profile["nodata"] == 65535 and not valid[:, :8].any() and valid[:, 8:].all()
    assert np.array_equal(pred, data)


def test_zero_filled_border_without_nodata_is_data(tmp_path: Path) -> None:
    cloudy, data = optical(tmp_path / "cloudy.tif")
    data[:, :, :12] = 0  # a zero-filled border, no no-data value declared: GDAL reads it as data
    write_tif(cloudy, data)
    out = tmp_path / "out.tif"
    stats = predict_scene(Identity(), cloudy, out, sar(tmp_path / "s1.tif"), PredictOptions(tile=64, overlap=16),
                          progress=False)
    pred, valid, profile = _read(out)
    assert profile["nodata"] is None and valid.all() and stats.valid_fraction == 1.0
    assert np.array_equal(pred, data)


def test_internal_mask_of_the_input_is_kept(tmp_path: Path) -> None:
    mask = np.ones((H, W), bool)
    mask[:, -20:] = False  # e.g. outside the footprint, flagged by a mask instead of a no-data value
    cloudy, data = optical(tmp_path / "cloudy.tif", mask=mask)
    out = tmp_path / "out.tif"
    predict_scene(Identity(), cloudy, out, sar(tmp_path / "s1.tif"), PredictOptions(tile=64, overlap=16),
                  progress=False)
    pred, valid, profile = _read(out)
    assert profile["nodata"] is None and np.array_equal(valid, mask)
    assert np.array_equal(pred[:, mask], data[:, mask])


def test_mask_keeps_clear_pixels_bit_for_bit_and_score_scene_reads_the_mask(tmp_path: Path) -> None:
    cloudy, data = optical(tmp_path / "cloudy.tif")
    cloud = np.zeros((1, H, W), np.uint8)
    cloud[0, 20:50, 30:80] = 1
    mask = write_tif(tmp_path / "cloud.tif", cloud)
    values = sar_db()
    values[:, :4, :] = np.nan  # no SAR over the top rows: clear pixels there are still kept
    s1 = sar(tmp_path / "s1.tif", values=values)
    out = tmp_path / "out.tif"
    predict_scene(AddConstant(), cloudy, out, s1, PredictOptions(mask=mask, tile=64, overlap=16), progress=False)
    pred, valid, profile = _read(out)
    clear = cloud[0] == 0
    assert profile["nodata"] is None and valid[clear].all()
    assert np.array_equal(pred[:, clear], data[:, clear])  # input zeros stay 0 (they came out as 1)
    assert (data[:, clear] == 0).sum() > 40
    assert (pred[:, ~clear].astype(int) == np.clip(data[:, ~clear].astype(int) + 100, 0, None)).all()
    # score-scene counts every pixel the output's mask calls valid: the clear zeros and the rows without SAR
    measures = score_scene(out, cloudy, cloudy, mask)
    assert measures.clear_pixels == int(clear.sum()) and measures.clear_changed_fraction == 0.0
    assert measures.cloudy_pixels == int((~clear).sum())


# --------------------------------------------------------------------------- 3. corrupt files
def test_truncated_rasters_are_named_by_predict(ckpts: dict[str, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    cloudy, _ = optical(tmp_path / "cloudy.tif", tiled=True, blockxsize=16, blockysize=16)
    s1 = sar(tmp_path / "s1.tif", tiled=True, blockxsize=16, blockysize=16)
    good = tmp_path / "good_cloudy.tif"
    shutil.copy(cloudy, good)
    truncate(cloudy)
    assert predict_cli(ckpts["dsen2cr"], cloudy, tmp_path / "o.tif", "--sar", str(s1)) == 2
    err = capsys.readouterr().err
    # the first read is the check of its values, over the whole raster (decimated), before any tile
    assert f"{cloudy}: cannot read band(s) 1, 2, 3, 4" in err and "TIFFRead" in err, err
    truncate(s1)
    assert predict_cli(ckpts["dsen2cr"], good, tmp_path / "o.tif", "--sar", str(s1)) == 2
    err = capsys.readouterr().err
    assert f"{s1}: cannot read band(s) 1, 2" in err, err
    assert not (tmp_path / "o.tif").exists()


def test_truncated_s1_is_named_by_build_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scene = generate_scene(tmp_path / "scene", SceneConfig(height=100, width=100, footprint_angle=0.0,
                                                           sar_crs=CRS), seed=4)
    with rasterio.open(scene["sar"]) as src:
        data, profile = src.read(), src.profile
    s1 = tmp_path / "s1_truncated.tif"
    with rasterio.open(s1, "w", **dict(profile, compress=None, tiled=True, blockxsize=16, blockysize=16)) as dst:
        dst.write(data)
    truncate(s1)
    code = main(["build-dataset", str(tmp_path / "ds"), "--cloudy", str(scene["cloudy"]), "--cloudfree",
                 str(scene["cloudfree"]), "--sar", str(s1), "--landcover", str(scene["landcover"]), "--cloudmask",
                 str(scene["cloudmask"]), "--season", "summer", "--aoi", "a1", "--tile", "100", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{s1}: cannot read band(s) 1, 2" in err and "TIFFRead" in err, err


def test_truncated_s1_tile_is_named_by_the_loader(synth_copy: Path) -> None:
    s1 = list_split(synth_copy, "train")[0].sar
    with rasterio.open(s1) as src:
        data, profile = src.read(), src.profile
    with rasterio.open(s1, "w", **dict(profile, tiled=True, blockxsize=16, blockysize=16)) as dst:
        dst.write(data)
    truncate(s1)
    with pytest.raises(DataError) as err:
        M3RCRDataset(synth_copy, "train")[0]
    message = str(err.value)
    assert message.startswith(f"{s1}: cannot read every band") and "TIFFRead" in message, message


def test_truncated_result_is_named_by_score_scene(tmp_path: Path) -> None:
    cloudy, data = optical(tmp_path / "cloudy.tif")
    result = write_tif(tmp_path / "result.tif", data, tiled=True, blockxsize=16, blockysize=16)
    cloud = write_tif(tmp_path / "cloud.tif", np.ones((1, H, W), np.uint8))
    truncate(result)
    with pytest.raises(DataError, match="cannot read band") as err:
        score_scene(result, cloudy, cloudy, cloud)
    assert str(err.value).startswith(f"{result}: ")


# --------------------------------------------------------------------------- 4. SAR coverage
def test_sar_covered_fraction_counts_nan_sar(tmp_path: Path, ckpts: dict[str, Path],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    cloudy, _ = optical(tmp_path / "cloudy.tif")
    values = sar_db()
    values[:, 8:12, 10:16] = np.nan  # about 4 % of the optical pixels
    s1 = sar(tmp_path / "s1.tif", values=values)
    stats = predict_scene(Identity(), cloudy, tmp_path / "o.tif", s1, PredictOptions(tile=64, overlap=16),
                          progress=False)
    # every optical pixel is valid, so the SAR's share of them is the output's valid share
    assert 0.94 < stats.sar_covered_fraction < 0.98
    assert stats.sar_covered_fraction == pytest.approx(stats.valid_fraction, abs=1e-12)
    # SAR no-data counts the same way
    nodata = values.copy()
    nodata[np.isnan(nodata)] = -9999
    s1_nd = sar(tmp_path / "s1_nodata.tif", values=nodata, nodata=-9999)
    stats_nd = predict_scene(Identity(), cloudy, tmp_path / "o2.tif", s1_nd, PredictOptions(tile=64, overlap=16),
                             progress=False)
    assert stats_nd.sar_covered_fraction == stats.sar_covered_fraction
    assert predict_cli(ckpts["dsen2cr"], cloudy, tmp_path / "o3.tif", "--sar", str(s1)) == 0
    assert re.search(r"the SAR has data for 9\d", capsys.readouterr().err)
