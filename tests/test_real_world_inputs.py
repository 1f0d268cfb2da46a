"""Real-world mistakes that used to run, exit 0 and write a wrong result (issue 12, "hidden" bad inputs).

Optical values that are not reflectance once scaled (Landsat's scale read the other way round, float
reflectance with the default scale, 8-bit display images, an alpha band taken as NIR), cloud masks that
do not fit (elsewhere, probabilities), undeclared SAR fill values, and results with nothing to score.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp
from rasterio.transform import Affine
from tiny_models import TINY

from m3rcr.cli import main
from m3rcr.data.synthetic import SceneConfig, generate_scene
from m3rcr.models import create_model, save_checkpoint


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small synthetic scene (uint16 reflectance x 10000, UTM) and a tiny checkpoint."""
    base = tmp_path_factory.mktemp("world")
    paths = dict(generate_scene(base / "scene", SceneConfig(height=96, width=96, sar_crs="EPSG:32632",
                                                            cloud_cover=0.4), seed=4))
    paths["ckpt"] = save_checkpoint(create_model("dsen2cr", **TINY["dsen2cr"]), base / "m.ckpt")
    paths["base"] = base
    return paths


def _derive(world: dict[str, Path], name: str, fn, **profile) -> Path:
    """A raster next to the scene: ``fn(values, valid)`` of the cloudy scene's data, with ``profile`` changes."""
    with rasterio.open(world["cloudy"]) as src:
        values, valid = src.read(), src.dataset_mask() > 0
        prof = {**src.profile, **profile}
    data = fn(values, valid)
    prof.update(count=data.shape[0], dtype=data.dtype.name)
    path = world["base"] / name
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data)
    return path


def _predict(world: dict[str, Path], tmp_path: Path, *extra: str, cloudy: Path | None = None,
             sar: Path | None = None, mask: Path | None = None) -> list[str]:
    return ["predict", "--cloudy", str(cloudy or world["cloudy"]), "--sar", str(sar or world["sar"]),
            "--mask", str(mask or world["cloudmask"]), "--checkpoint", str(world["ckpt"]),
            "--out", str(tmp_path / "out.tif"), "--device", "cpu", "--quiet", "--tile", "64", "--overlap", "8", *extra]


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], *words: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err, err
    return err


# --------------------------------------------------------------------------- optical values
def test_landsat_scale_given_the_wrong_way_round(world: dict[str, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # Landsat Collection 2: reflectance = DN x 0.0000275 - 0.2
    l8 = _derive(world, "landsat.tif", lambda v, ok: np.where(ok, np.round((v / 1e4 + 0.2) / 2.75e-5), 0)
                 .astype(np.uint16))
    _fails(_predict(world, tmp_path, "--scale", "0.0000275", "--offset", "-0.2", cloudy=l8), capsys,
           str(l8), "above reflectance", "--scale 36363.64 --offset -7272.73")
    assert not (tmp_path / "out.tif").exists()
    assert main(_predict(world, tmp_path, "--scale", "36363.64", "--offset", "-7272.73", cloudy=l8)) == 0


def test_float_reflectance_needs_scale_one(world: dict[str, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    f32 = _derive(world, "float.tif", lambda v, ok: np.where(ok, v / 1e4, np.nan).astype(np.float32), nodata=np.nan)
    _fails(_predict(world, tmp_path, cloudy=f32), capsys, str(f32), "pass --scale 1")
    assert main(_predict(world, tmp_path, "--scale", "1", cloudy=f32)) == 0


def test_eight_bit_display_images_and_alpha_bands_are_not_reflectance(world: dict[str, Path], tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    u8 = _derive(world, "visual.tif", lambda v, ok: np.clip(v / 12, 1, 255).astype(np.uint8), nodata=None)
    with rasterio.open(u8, "r+") as dst:
        dst.colorinterp = [ColorInterp.gray, ColorInterp.undefined, ColorInterp.undefined, ColorInterp.undefined]
    _fails(_predict(world, tmp_path, cloudy=u8), capsys, str(u8), "uint8", "cannot hold reflectance")
    rgba = _derive(world, "rgba.tif", lambda v, ok: np.concatenate([v[[2, 1, 0]], (ok * 255)[None]]).astype(np.uint16),
                   nodata=None)
    with rasterio.open(rgba, "r+") as dst:
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    _fails(_predict(world, tmp_path, cloudy=rgba), capsys, str(rgba), "alpha")
    _fails(_predict(world, tmp_path, "--bands", "1,2,3,1", cloudy=rgba), capsys, "names a band twice")


def test_build_dataset_refuses_optical_values_it_would_misread(world: dict[str, Path], tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    f32 = _derive(world, "cloudfree_float.tif", lambda v, ok: np.where(ok, v / 1e4, np.nan).astype(np.float32),
                  nodata=np.nan)
    argv = ["build-dataset", str(tmp_path / "ds"), "--cloudy", str(world["cloudy"]), "--cloudfree", str(f32),
            "--sar", str(world["sar"]), "--landcover", str(world["landcover"]), "--cloudmask", str(world["cloudmask"]),
            "--season", "summer", "--aoi", "a1", "--tile", "32", "--lowres", "10", "--quiet"]
    _fails(argv, capsys, str(f32), "cloud-free optical scene", "reflectance x 10000")
    assert not (tmp_path / "ds").exists()


# --------------------------------------------------------------------------- cloud masks and SAR
def test_a_cloud_mask_elsewhere_or_of_probabilities_is_refused(world: dict[str, Path], tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    with rasterio.open(world["cloudmask"]) as src:
        t = src.transform
        far_transform = Affine(t.a, 0, t.c + 100_000, 0, t.e, t.f)
    far = _derive(world, "mask_far.tif", lambda v, ok: (v[:1] > 3000).astype(np.uint8), transform=far_transform,
                  nodata=None)
    _fails(_predict(world, tmp_path, mask=far), capsys, str(far), "does not overlap")
    prob = _derive(world, "mask_prob.tif", lambda v, ok: np.clip(v[:1] / 6000.0, 0.02, 0.98).astype(np.float32),
                   nodata=None)
    _fails(_predict(world, tmp_path, mask=prob), capsys, str(prob), "between 0 and 1", "threshold")


def test_a_cloud_mask_covering_half_the_scene_is_noted(world: dict[str, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    with rasterio.open(world["cloudmask"]) as src:
        mask, prof = src.read(), src.profile
    half = world["base"] / "mask_half.tif"
    prof.update(width=mask.shape[2] // 2)
    with rasterio.open(half, "w", **prof) as dst:
        dst.write(mask[:, :, : mask.shape[2] // 2])
    assert main(_predict(world, tmp_path, mask=half)) == 0
    assert "the cloud mask covers 50.0 % of the scene" in capsys.readouterr().err


def test_an_undeclared_sar_fill_value_is_refused(world: dict[str, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with rasterio.open(world["sar"]) as src:
        sar, prof = src.read(), src.profile
    sar[:, :, : sar.shape[2] // 3] = -9999.0
    filled = world["base"] / "sar_fill.tif"
    with rasterio.open(filled, "w", **{**prof, "nodata": None}) as dst:
        dst.write(sar)
    _fails(_predict(world, tmp_path, "--sar-units", "db", sar=filled), capsys, str(filled), "below -50 dB",
           "-a_nodata -9999")
    declared = world["base"] / "sar_fill_declared.tif"
    with rasterio.open(declared, "w", **{**prof, "nodata": -9999.0}) as dst:
        dst.write(sar)
    assert main(_predict(world, tmp_path, "--sar-units", "db", "--overwrite", sar=declared)) == 0


# --------------------------------------------------------------------------- scoring and arguments
def test_strict_scoring_fails_when_nothing_can_be_measured(world: dict[str, Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    empty = _derive(world, "empty_result.tif", lambda v, ok: np.zeros_like(v), nodata=0)
    argv = ["score-scene", "--result", str(empty), "--cloudy", str(world["cloudy"]), "--reference",
            str(world["cloudfree"]), "--mask", str(world["cloudmask"]), "--strict"]
    assert main(argv) == 1
    assert "cannot be measured" in capsys.readouterr().err


def test_score_scene_says_what_differs_between_grids(world: dict[str, Path], capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    with rasterio.open(world["cloudfree"]) as src:
        t = src.transform
    shifted = _derive(world, "ref_shift.tif", lambda v, ok: v, transform=Affine(t.a, 0, t.c + 30, 0, t.e, t.f))
    _fails(["score-scene", "--result", str(world["cloudfree"]), "--cloudy", str(world["cloudy"]), "--reference",
            str(shifted), "--mask", str(world["cloudmask"])], capsys, str(shifted), "origin")


@pytest.mark.parametrize("flags, words", [
    (["--scale", "inf"], ["argument --scale", "finite"]),
    (["--offset", "nan"], ["argument --offset", "finite"]),
    (["--scale", "0"], ["argument --scale", "> 0"]),
])
def test_non_finite_scaling_is_refused_by_argparse(world: dict[str, Path], tmp_path: Path, flags: list[str],
                                                   words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(_predict(world, tmp_path, *flags))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err


def test_edge_arguments_get_one_clear_line(world: dict[str, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    argv = _predict(world, tmp_path)
    argv[argv.index("--device") + 1] = "tpu"
    _fails(argv, capsys, "--device tpu")
    argv = _predict(world, tmp_path)
    argv[argv.index("--out") + 1] = str(tmp_path / "result.png")
    _fails(argv, capsys, "result.png", ".tif")
    _fails(_predict(world, tmp_path, cloudy=tmp_path), capsys, "is a folder")
    text = tmp_path / "notes.ckpt"
    text.write_text("these are my notes\n")
    argv = _predict(world, tmp_path)
    argv[argv.index("--checkpoint") + 1] = str(text)
    err = _fails(argv, capsys, str(text), "not a PyTorch file")
    assert len(err.strip().splitlines()) == 1
