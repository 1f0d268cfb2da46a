"""Cloud-removal measures (m3rcr.evaluation.removal, score-scene) on hand-made images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from m3rcr.cli import main
from m3rcr.evaluation.removal import (
    GRID_DETECTORS,
    RemovalAccumulator,
    clear_sky_mean,
    format_measures,
    grid_energy,
    removal_measures,
)
from m3rcr.evaluation.scene import score_scene


def _scene(seed: int = 0, h: int = 40, w: int = 36) -> dict[str, np.ndarray]:
    """A smooth 4-band reference, a cloudy input (bright blob), its mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / 10.0
    ref = np.stack([0.05 + 0.02 * b + 0.03 * np.sin(yy + b) * np.cos(xx) for b in range(4)])
    ref += rng.normal(0, 0.002, ref.shape)
    cloud = (yy - 2.0) ** 2 + (xx - 1.8) ** 2 < 1.2
    cloudy = np.where(cloud[None], 0.6, ref)
    return {"ref": ref, "cloudy": cloudy, "cloud": cloud}


def test_mean_fill_and_ratio_by_hand() -> None:
    s = _scene()
    ref, cloudy, cloud = s["ref"], s["cloudy"], s["cloud"]
    fill = np.array([cloudy[b][~cloud].mean() for b in range(4)])  # the clear pixels' mean, band by band
    np.testing.assert_allclose(clear_sky_mean(cloudy, cloud), fill)
    filled = np.where(cloud[None], fill[:, None, None], cloudy)
    m = removal_measures(filled, ref, cloudy, cloud)
    expected_fill_mae = np.mean(np.abs(ref[:, cloud] - fill[:, None]))
    assert m.mae_mean_fill == pytest.approx(expected_fill_mae)
    assert m.mae_cloudy == pytest.approx(expected_fill_mae)
    assert m.mae_ratio == pytest.approx(1.0)
    assert m.mae_cloudy_input == pytest.approx(np.mean(np.abs(0.6 - ref[:, cloud])))
    assert m.cloudy_pixels == cloud.sum() and m.clear_pixels == (~cloud).sum()
    # a result halfway between the fill and the truth halves the error
    half = np.where(cloud[None], (filled + ref) / 2, cloudy)
    assert removal_measures(half, ref, cloudy, cloud).mae_ratio == pytest.approx(0.5)
    perfect = removal_measures(np.where(cloud[None], ref, cloudy), ref, cloudy, cloud)
    assert perfect.mae_ratio == 0 and perfect.band_bias == [0.0] * 4
    assert perfect.grid_ratio == pytest.approx(1.0)


def test_band_bias_is_relative_to_the_reference_band_mean() -> None:
    s = _scene(1)
    ref, cloud = s["ref"], s["cloud"]
    pred = ref * np.array([1.2, 1.0, 0.9, 1.05])[:, None, None]
    m = removal_measures(pred, ref, s["cloudy"], cloud)
    np.testing.assert_allclose(m.band_bias, [0.2, 0.0, -0.1, 0.05], atol=1e-12)
    assert m.checks()["band_bias"] is False
    assert removal_measures(ref * 1.09, ref, s["cloudy"], cloud).checks()["band_bias"] is True


def test_grid_energy_matches_a_loop_over_windows() -> None:
    rng = np.random.default_rng(2)
    img = rng.random((2, 7, 6))
    region = rng.random((7, 6)) < 0.8
    sums, n = grid_energy(img, region)
    expected = dict.fromkeys(GRID_DETECTORS, 0.0)
    count = 0
    for i in range(6):
        for j in range(5):
            if region[i:i + 2, j:j + 2].all():
                count += 1
                for name, (a, b, c, d) in GRID_DETECTORS.items():
                    r = (a * img[:, i, j] + b * img[:, i, j + 1] + c * img[:, i + 1, j] + d * img[:, i + 1, j + 1]) / 4
                    expected[name] += float((r ** 2).sum())
    assert n == count
    for name in GRID_DETECTORS:
        assert sums[name] == pytest.approx(expected[name])


@pytest.mark.parametrize("pattern,detector", [("checker", "checkerboard"), ("rows", "row_stripes"),
                                              ("cols", "column_stripes")])
def test_grid_ratio_finds_checkerboards_and_stripes(pattern: str, detector: str) -> None:
    s = _scene(3)
    ref, cloud = s["ref"], s["cloud"]
    ii, jj = np.mgrid[0:ref.shape[1], 0:ref.shape[2]]
    wave = {"checker": (-1.0) ** (ii + jj), "rows": (-1.0) ** ii, "cols": (-1.0) ** jj}[pattern]
    pred = ref + 0.01 * wave[None]
    m = removal_measures(pred, ref, s["cloudy"], cloud)
    assert m.grid_ratios[detector] > 20
    assert m.grid_ratio == m.grid_ratios[detector]
    others = [v for k, v in m.grid_ratios.items() if k != detector]
    assert max(others) < 1.5  # a pure pattern of one kind leaves the other detectors (almost) alone
    assert m.checks()["grid_ratio"] is False
    # a smoothed result has less Nyquist energy than the reference
    from scipy.ndimage import uniform_filter

    blurred = uniform_filter(ref, size=(1, 3, 3))
    assert removal_measures(blurred, ref, s["cloudy"], cloud).grid_ratio < 1


def test_clear_pixel_change_counts_any_changed_pixel() -> None:
    s = _scene(4)
    ref, cloudy, cloud = s["ref"], s["cloudy"], s["cloud"]
    pred = np.where(cloud[None], ref, cloudy)
    m = removal_measures(pred, ref, cloudy, cloud)
    assert m.clear_change == 0 and m.clear_changed_fraction == 0 and m.checks()["clear_changed_fraction"]
    i, j = np.argwhere(~cloud)[0]
    pred[2, i, j] += 1e-4
    m = removal_measures(pred, ref, cloudy, cloud)
    assert m.clear_changed_fraction == pytest.approx(1 / (~cloud).sum())
    assert m.clear_change == pytest.approx(1e-4 / (4 * (~cloud).sum()))
    assert m.checks()["clear_changed_fraction"] is False


def test_pooling_over_images_and_undefined_cases() -> None:
    a, b = _scene(5), _scene(6)
    acc = RemovalAccumulator()
    for s in (a, b):
        acc.update(s["ref"], s["ref"], s["cloudy"], s["cloud"])
    assert acc.measures().cloudy_pixels == a["cloud"].sum() + b["cloud"].sum()
    # an image that is all cloud has no mean fill: it is left out of the ratio, not a division by zero
    full = np.ones(a["cloud"].shape, bool)
    m = removal_measures(a["ref"], a["ref"], a["cloudy"], full)
    assert m.mae_mean_fill is None and m.mae_ratio is None and m.clear_change is None
    m = removal_measures(a["ref"], a["ref"], a["cloudy"], ~full)
    assert m.mae_cloudy is None and m.band_bias == [] and m.grid_ratio is None
    text = format_measures(m)
    assert "n/a" in text
    with pytest.raises(ValueError, match="one grid"):
        removal_measures(a["ref"][:, :5], a["ref"], a["cloudy"], a["cloud"])


def enc(x: np.ndarray) -> np.ndarray:
    """Reflectance as uint16 x 10000 (0 is no-data)."""
    return np.clip(np.round(x * 10000), 1, 65535).astype(np.uint16)


def _write(path: Path, data: np.ndarray, transform: Affine, nodata: float | None = 0, tags: dict | None = None) -> None:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype.name, crs="EPSG:32633", transform=transform, nodata=nodata) as dst:
        dst.write(data)
        if tags:
            dst.update_tags(**tags)


def test_score_scene_strips_equal_the_whole_image(tmp_path: Path) -> None:
    s = _scene(7, h=45, w=38)
    t = Affine(3, 0, 400000, 0, -3, 5000000)
    rng = np.random.default_rng(7)
    pred = np.where(s["cloud"][None], s["ref"] + rng.normal(0, 0.01, s["ref"].shape), s["cloudy"])
    files = {k: tmp_path / f"{k}.tif" for k in ("cloudy", "ref", "pred", "mask")}
    _write(files["cloudy"], enc(s["cloudy"]), t)
    _write(files["ref"], enc(s["ref"]), t)
    _write(files["pred"], enc(pred), t)
    _write(files["mask"], s["cloud"].astype(np.uint8)[None], t, nodata=None)
    x, y, p = (enc(v).astype(np.float64) / 10000 for v in (s["cloudy"], s["ref"], pred))
    whole = removal_measures(p, y, x, s["cloud"])
    for strip in (2, 7, 45, 512):
        m = score_scene(files["pred"], files["cloudy"], files["ref"], files["mask"], strip=strip)
        for key in ("mae_cloudy", "mae_mean_fill", "mae_ratio", "grid_ratio", "clear_change"):
            assert getattr(m, key) == pytest.approx(getattr(whole, key), rel=1e-9), (strip, key)
        np.testing.assert_allclose(m.band_bias, whole.band_bias, rtol=1e-9)
        assert m.clear_changed_fraction == 0
    # the CLI prints the measures and, with --strict, fails on a missed target
    out = tmp_path / "m.json"
    argv = ["score-scene", "--result", str(files["pred"]), "--cloudy", str(files["cloudy"]), "--reference",
            str(files["ref"]), "--mask", str(files["mask"]), "--json", str(out), "--overwrite"]
    assert main(argv) == 0
    payload = json.loads(out.read_text())
    assert payload["mae_ratio"] == pytest.approx(whole.mae_ratio)
    assert set(payload["checks"]) == {"mae_ratio", "band_bias", "grid_ratio", "clear_changed_fraction"}
    assert main([*argv, "--strict"]) == (0 if all(payload["checks"].values()) else 1)
    _write(files["pred"], enc(np.where(s["cloud"][None], 0.6, s["cloudy"])), t)  # "removes" nothing
    assert main([*argv, "--strict"]) == 1


def test_score_scene_reads_predict_band_order_and_rejects_other_grids(tmp_path: Path, capsys) -> None:
    s = _scene(8)
    t = Affine(3, 0, 400000, 0, -3, 5000000)
    # a 5-band input with blue, green, red, NIR in bands 4, 3, 2, 5; predict writes them in file order 2,3,4,5
    five = np.concatenate([enc(s["cloudy"])[[2, 1, 0, 3]][:1] * 0 + 7, enc(s["cloudy"])[[2, 1, 0]],
                           enc(s["cloudy"])[3:]])
    ref5 = np.concatenate([five[:1], enc(s["ref"])[[2, 1, 0]], enc(s["ref"])[3:]])
    pred = np.where(s["cloud"][None], s["ref"], s["cloudy"])
    _write(tmp_path / "c.tif", five, t)
    _write(tmp_path / "r.tif", ref5, t)
    _write(tmp_path / "p.tif", enc(pred)[[2, 1, 0, 3]], t, tags={"M3RCR_BANDS": "2,3,4,5"})
    _write(tmp_path / "m.tif", s["cloud"].astype(np.uint8)[None], t, nodata=None)
    m = score_scene(tmp_path / "p.tif", tmp_path / "c.tif", tmp_path / "r.tif", tmp_path / "m.tif", bands="4,3,2,5")
    assert m.mae_cloudy == pytest.approx(0, abs=1e-12) and m.clear_changed_fraction == 0
    # another grid: a clear error naming the file
    _write(tmp_path / "shifted.tif", s["cloud"].astype(np.uint8)[None], t @ Affine.translation(1, 0), nodata=None)
    argv = ["score-scene", "--result", str(tmp_path / "p.tif"), "--cloudy", str(tmp_path / "c.tif"), "--reference",
            str(tmp_path / "r.tif"), "--mask", str(tmp_path / "shifted.tif"), "--bands", "4,3,2,5"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "shifted.tif" in err and "grid" in err
    argv[-1] = "1,2,3,4"  # bands the result does not hold
    argv[argv.index(str(tmp_path / "shifted.tif"))] = str(tmp_path / "m.tif")
    assert main(argv) == 2
    assert "p.tif" in capsys.readouterr().err
