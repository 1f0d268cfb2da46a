"""The one GeoTIFF writer of the data package (m3rcr.data.io.geotiff_writer / write_geotiff)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.windows import Window

from m3rcr.data.io import GeoTiffLayout, RasterSpec, geotiff_writer, write_geotiff

CRS = "EPSG:32633"
T = Affine(3, 0, 400_000, 0, -3, 5_000_000)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_default_layout_is_the_official_one(tmp_path: Path) -> None:
    a = np.arange(4 * 30 * 20, dtype=np.uint16).reshape(4, 30, 20)
    out = tmp_path / "x.tif"
    write_geotiff(out, a, CRS, T, 0, tags={"K": "v"}, descriptions=("blue", "green", "red", "nir"))
    with rasterio.open(out) as src:
        np.testing.assert_array_equal(src.read(), a)
        assert src.profile["interleave"] == "pixel" and not src.profile["tiled"]
        assert src.tags()["AREA_OR_POINT"] == "Area" and src.tags()["K"] == "v"
        assert src.descriptions == ("blue", "green", "red", "nir") and src.nodata == 0
        assert src.compression is None
    assert [p.name for p in tmp_path.iterdir()] == ["x.tif"]  # no temporary file left


def test_same_bytes_as_a_plain_rasterio_write(tmp_path: Path) -> None:
    """Metadata set after the pixels, like the writers it replaced: the same input gives the same file."""
    a = np.arange(2 * 40 * 40, dtype=np.float32).reshape(2, 40, 40)
    write_geotiff(tmp_path / "new.tif", a, CRS, T, np.nan, GeoTiffLayout(interleave="band"), descriptions=("VV", "VH"))
    with rasterio.open(tmp_path / "old.tif", "w", driver="GTiff", dtype="float32", count=2, height=40, width=40,
                       crs=CRS, transform=T, nodata=np.nan, interleave="band") as dst:
        dst.write(a)
        dst.update_tags(AREA_OR_POINT="Area")
        dst.descriptions = ("VV", "VH")
    assert _digest(tmp_path / "new.tif") == _digest(tmp_path / "old.tif")


def test_a_failed_block_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "x.tif"
    with pytest.raises(RuntimeError), geotiff_writer(out, RasterSpec(1, 8, 8, "uint8", CRS, T)) as dst:
        dst.write(np.ones((1, 8, 8), np.uint8))
        raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []


def test_cog_window_by_window_with_a_mask(tmp_path: Path) -> None:
    h, w = 700, 600
    a = (np.arange(h * w) % 9000 + 1).astype(np.uint16).reshape(1, h, w).repeat(4, 0)
    valid = np.ones((h, w), bool)
    valid[:50] = False
    layout = GeoTiffLayout(cog=True, compress="deflate", predictor=2, blocksize=512)
    out = tmp_path / "pred.tif"
    with geotiff_writer(out, RasterSpec(4, h, w, "uint16", CRS, T), layout, descriptions=("b", "g", "r", "n")) as dst:
        for r0 in range(0, h, 256):
            win = Window(0, r0, w, min(256, h - r0))
            dst.write(a[:, r0:r0 + 256], window=win)
            dst.write_mask(np.where(valid[r0:r0 + 256], 255, 0).astype(np.uint8), window=win)
    assert [p.name for p in tmp_path.iterdir()] == ["pred.tif"]  # neither work file nor .msk side-car left
    with rasterio.open(out) as src:
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert src.compression.name.lower() == "deflate" and src.block_shapes[0] == (512, 512)
        assert src.overviews(1) and src.descriptions == ("b", "g", "r", "n")
        np.testing.assert_array_equal(src.read(), a)
        np.testing.assert_array_equal(src.read_masks(1) > 0, valid)
