"""Every kind of bad input gets a clear DataError naming the file (or CSV row) and the problem."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from m3rcr.cli import main
from m3rcr.data import M3RCRDataset, Sampling
from m3rcr.data.layout import list_split
from m3rcr.errors import DataError, DataWarning


def _files(root: Path, split: str = "test"):
    (s,) = list_split(root, split)
    return s


def _rewrite(path: Path, array: np.ndarray | None = None, **changes) -> None:
    """Rewrite a GeoTIFF with new pixels and/or profile entries."""
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read()
    profile.update(changes)
    data = data if array is None else array
    profile.update(count=data.shape[0], height=data.shape[1], width=data.shape[2], dtype=data.dtype.name)
    path.unlink()
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def _raises(root: Path, match: str, path: Path | str, **kwargs) -> DataError:
    with pytest.raises(DataError) as exc:
        M3RCRDataset(root, "test", **kwargs)[0]
    assert str(path) in str(exc.value), str(exc.value)
    assert re.search(match, str(exc.value)), str(exc.value)
    return exc.value


def test_missing_file(real_copy: Path) -> None:
    f = _files(real_copy)
    ds = M3RCRDataset(real_copy, "test")
    f.sar.unlink()
    with pytest.raises(DataError, match=rf"{re.escape(str(f.sar))}: missing sar file \(listed in .*test\.csv row 1\)"):
        M3RCRDataset(real_copy, "test")
    # a file that goes missing after the up-front check: the read itself reports it
    with pytest.raises(DataError, match="missing SAR image"):
        ds[0]


def test_csv_row_with_wrong_column_count(real_copy: Path) -> None:
    csv = real_copy / "test.csv"
    csv.write_text(csv.read_text().strip() + ",extra.tif\n")
    with pytest.raises(DataError, match=r"test\.csv row 1: expected 5 columns .* found 6"):
        M3RCRDataset(real_copy, "test")


def test_wrong_band_count(real_copy: Path) -> None:
    f = _files(real_copy)
    with rasterio.open(f.cloudy) as src:
        _rewrite(f.cloudy, src.read()[:3])
    _raises(real_copy, "cloudy optical image must have 4 band\\(s\\), found 3", f.cloudy)
    with rasterio.open(f.sar) as src:
        _rewrite(f.sar, src.read()[:1])
    with rasterio.open(_files(real_copy).cloudfree) as src:
        _rewrite(f.cloudy, src.read())
    _raises(real_copy, "SAR image \\(VV, VH\\) must have 2 band\\(s\\), found 1", f.sar)


def test_wrong_raster_size(real_copy: Path) -> None:
    f = _files(real_copy)
    with rasterio.open(f.cloudfree) as src:
        _rewrite(f.cloudfree, src.read()[:, :200, :])
    _raises(real_copy, "cloud-free optical image must be 300x300 pixels, found 200x300", f.cloudfree)
    with rasterio.open(f.cloudy) as src:
        _rewrite(f.cloudfree, src.read())
        _rewrite(f.landcover, np.full((1, 80, 80), 10, np.uint8))
    _raises(real_copy, "land-cover map must be 90x90 pixels, found 80x80", f.landcover)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_not_a_geotiff(real_copy: Path) -> None:
    f = _files(real_copy)
    f.sar.write_bytes(b"this is not an image\n" * 10)
    _raises(real_copy, "not a readable GeoTIFF", f.sar)
    f.sar.unlink()
    with rasterio.open(f.sar, "w", driver="PNG", width=90, height=90, count=2, dtype="uint8") as dst:
        dst.write(np.zeros((2, 90, 90), np.uint8))
    _raises(real_copy, "not a GeoTIFF \\(GDAL reads it as PNG\\)", f.sar)


@pytest.mark.parametrize("mask,problem", [
    (np.full((300, 300), 2, np.uint8), "must be boolean or 0/1, found 90000 pixel\\(s\\) with other values, e.g. 2"),
    (np.full((300, 300), 0.5, np.float32), "must be boolean or 0/1.*0.5"),
    (np.zeros((200, 300), bool), "must be 300x300 pixels, found 200x300"),
    (np.zeros((2, 300, 300), bool), "must be a 2-D array"),
])
def test_bad_cloud_mask_values_and_shapes(real_copy: Path, mask: np.ndarray, problem: str) -> None:
    f = _files(real_copy)
    np.save(f.cloudmask, mask)
    _raises(real_copy, problem, f.cloudmask)


def test_cloud_mask_as_uint8_zero_one_is_accepted(real_copy: Path) -> None:
    f = _files(real_copy)
    mask = np.load(f.cloudmask)
    np.save(f.cloudmask, mask.astype(np.uint8))
    assert float(M3RCRDataset(real_copy, "test")[0]["cloudmask"].mean()) == pytest.approx(mask.mean())


def test_cloud_mask_needing_pickle_is_never_unpickled(real_copy: Path, tmp_path: Path) -> None:
    f = _files(real_copy)
    flag = tmp_path / "executed"
    # an object array whose unpickling would create a file: it must not be loaded
    obj = np.empty(1, dtype=object)
    obj[0] = _Trap(str(flag))
    np.save(f.cloudmask, obj, allow_pickle=True)
    _raises(real_copy, "needs pickle to load", f.cloudmask)
    f.cloudmask.write_bytes(pickle.dumps(_Trap(str(flag))))
    _raises(real_copy, "is a Python pickle", f.cloudmask)
    assert not flag.exists()
    f.cloudmask.write_bytes(b"\x93NUMPY\x01\x00garbage")
    _raises(real_copy, "cannot be read|corrupt", f.cloudmask)
    f.cloudmask.write_text("0,1,0\n")
    _raises(real_copy, "not a NumPy .npy file", f.cloudmask)


class _Trap:
    """Unpickling this would create a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_crs_mismatch_in_geo_mode(real_copy: Path) -> None:
    f = _files(real_copy)
    _rewrite(f.sar, crs="EPSG:32636")  # northern zone instead of 32736 (southern)
    _raises(real_copy, "CRS EPSG:32636 differs from the optical CRS EPSG:32736", f.sar, sar_mode="geo")
    # nearest mode ignores the georeference, as the paper's protocol does
    assert M3RCRDataset(real_copy, "test", sar_mode="nearest")[0]["sar"].shape == (2, 300, 300)


def test_sar_not_covering_the_optical_extent(real_copy: Path) -> None:
    f = _files(real_copy)
    with rasterio.open(f.sar) as src:
        t = src.transform
    _rewrite(f.sar, transform=Affine(t.a, t.b, t.c + 100.0, t.d, t.e, t.f))
    _raises(real_copy, "does not cover the optical extent .* falls short by 102.00", f.sar, sar_mode="geo")


@pytest.mark.parametrize("mode", ["native", "nearest", "geo"])
def test_nan_pixels_are_filled_and_counted(real_copy: Path, mode: str) -> None:
    f = _files(real_copy)
    with rasterio.open(f.sar) as src:
        raw = src.read()
    raw[:, 10:13, 20:22] = np.nan  # 6 pixels, in both bands
    raw[0, 50, 50] = np.nan  # and one value of VV only
    _rewrite(f.sar, raw)
    # counted in the file, whatever the placement does to the array
    msg = rf"{re.escape(str(f.sar))}: filled 13 NaN value\(s\) in 7 pixel\(s\) with the image mean"
    with pytest.warns(DataWarning, match=msg):
        s = M3RCRDataset(real_copy, "test", sar_mode=mode)[0]
    assert not torch_isnan_any(s)
    if mode == "native":
        vv = (np.clip(np.nanmean(raw), -25, 0) + 25) / 25
        assert s["sar"][0, 10, 20].item() == pytest.approx(vv, abs=1e-6)


def torch_isnan_any(sample: dict) -> bool:
    return any(bool(v.isnan().any()) for v in sample.values() if hasattr(v, "isnan") and v.is_floating_point())


def test_bad_landcover_codes(real_copy: Path) -> None:
    f = _files(real_copy)
    _rewrite(f.landcover, np.full((1, 90, 90), 37, np.uint8))
    _raises(real_copy, "land cover has values that are not WorldCover codes: 37", f.landcover)


def test_cli_reports_bad_input_without_traceback(real_copy: Path, tmp_path: Path, capsys) -> None:
    f = _files(real_copy)
    np.save(f.cloudmask, np.full((300, 300), 3, np.uint8))
    code = main(["show", "--data", str(real_copy), "--split", "test", "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.startswith("m3rcr show: error: ") and str(f.cloudmask) in err
    assert not (tmp_path / "x.png").exists() and not list(tmp_path.glob(".x.*"))
    code = main(["info", "--data", str(real_copy), "--split", "test", "--check"])
    out = capsys.readouterr().out
    assert code == 1 and "problems: 1" in out and str(f.cloudmask) in out


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_tiff_without_georeference(real_copy: Path) -> None:
    f = _files(real_copy)
    with rasterio.open(f.cloudy) as src:
        data, profile = src.read(), src.profile
    profile.update(crs=None, transform=Affine.identity())
    f.cloudy.unlink()
    with rasterio.open(f.cloudy, "w", **profile) as dst:
        dst.write(data)
    _raises(real_copy, "has no georeference \\(CRS and geotransform\\)", f.cloudy)


def test_csv_columns_in_the_wrong_order(real_copy: Path) -> None:
    csv = real_copy / "test.csv"
    cols = csv.read_text().strip().split(",")
    csv.write_text(",".join([cols[1], cols[0], *cols[2:]]) + "\n")
    with pytest.raises(DataError, match=r"test\.csv row 1: column 1 must be the planet_cloudfree file, found "
                                        r"planet_cloudy_summer_33_p_1\.tif"):
        M3RCRDataset(real_copy, "test")


def test_csv_with_a_byte_order_mark(real_copy: Path) -> None:
    csv = real_copy / "test.csv"
    csv.write_bytes(b"\xef\xbb\xbf" + csv.read_bytes())
    assert M3RCRDataset(real_copy, "test")[0]["name"] == "summer_33_p_1"


def test_unreadable_cloud_mask(real_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = _files(real_copy)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    # tests run as root here, so file modes cannot make the file unreadable: fail the open itself
    monkeypatch.setattr("m3rcr.data.io.open", denied, raising=False)
    _raises(real_copy, "cannot be read \\(Permission denied\\)", f.cloudmask)
    monkeypatch.undo()
    ds = M3RCRDataset(real_copy, "test")
    f.cloudmask.unlink()
    f.cloudmask.mkdir()  # a folder where the file should be
    with pytest.raises(DataError, match="missing cloud mask file"):
        ds[0]


def test_bad_crop_sizes(real_root: Path, tmp_path: Path, capsys) -> None:
    for size in (0, -5, (160, 0)):
        with pytest.raises(ValueError, match="positive size"):
            M3RCRDataset(real_root, "test", sampling=Sampling(crop_size=size))
    with pytest.raises(SystemExit) as exc:  # argparse names the flag
        main(["show", "--data", str(real_root), "--split", "test", "--crop", "0", "--out", str(tmp_path / "c.png")])
    assert exc.value.code == 2 and "argument --crop" in capsys.readouterr().err
    code = main(["show", "--data", str(real_root), "--split", "test", "--crop", "301", "--out", str(tmp_path / "c.png")])
    assert code == 2 and "does not fit" in capsys.readouterr().err
