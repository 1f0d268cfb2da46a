"""SEN12MS-CR cloud masks: s2cloudless with UnCRtainTS's settings, the on-disk cache and its mismatch checks."""

from __future__ import annotations

import hashlib
import importlib.util
import multiprocessing
import pickle
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from paths import SHARED, require_shared

from m3rcr.data.sen12mscr import masks
from m3rcr.data.sen12mscr.masks import (
    MASK_SETTINGS,
    CloudMasker,
    S2CloudlessUnavailable,
    cloud_probability_and_mask,
    default_cache_dir,
)
from m3rcr.errors import DataError, DataWarning

OFFICIAL = SHARED / "data" / "sen12mscr-official"
# cloudy S2 file, and the range its s2cloudless coverage lies in: the fall patch is mostly thick cloud; the
# winter one is only dark haze, which s2cloudless (probability <= 0.3) does not call cloud
REAL = {"ROIs1970_fall_139_p839": ("ROIs1970_fall_s2_cloudy/s2_cloudy_139/ROIs1970_fall_s2_cloudy_139_p839.tif",
                                   (0.9, 1.0)),
        "ROIs2017_winter_112_p797": ("ROIs2017_winter_s2_cloudy/s2_cloudy_112/ROIs2017_winter_s2_cloudy_112_p797.tif",
                                     (0.0, 0.01))}

needs_s2cloudless = pytest.mark.skipif(importlib.util.find_spec("s2cloudless") is None,
                                       reason='s2cloudless is not installed (pip install "m3rcr[s2cloudless]")')

# L1C DN of green vegetation and of a thick cloud, bands B1..B12 (B10 = cirrus)
LAND = np.array([1300, 1000, 900, 700, 1100, 2200, 2600, 2700, 2900, 900, 15, 1800, 1000], np.float32)
CLOUD = np.array([6500, 6300, 6200, 6300, 6400, 6500, 6600, 6500, 6600, 3500, 300, 4200, 3000], np.float32)
BLOCK = (slice(20, 40), slice(24, 44))
# the averaging disk (radius 4) and the dilation (radius 2) widen the mask by a few pixels
MARGIN = 6


def cloud_over_land(seed: int = 0, size: int = 64) -> np.ndarray:
    """(13, size, size) uint16 DN: a bright cloud block over dark vegetation, with 3 % noise."""
    image = np.broadcast_to(LAND[:, None, None], (13, size, size)).copy()
    image[(slice(None), *BLOCK)] = CLOUD[:, None, None]
    image *= 1 + 0.03 * np.random.default_rng(seed).standard_normal(image.shape).astype(np.float32)
    return np.round(image).astype(np.uint16)


def read_real(name: str) -> np.ndarray:
    import rasterio

    with rasterio.open(require_shared(OFFICIAL / REAL[name][0])) as ds:
        return ds.read()


@needs_s2cloudless
def test_cloud_block_is_masked_and_land_is_not() -> None:
    prob, mask = cloud_probability_and_mask(cloud_over_land())
    assert prob.dtype == mask.dtype == np.float32 and prob.shape == mask.shape == (64, 64)
    assert set(np.unique(mask)) == {0.0, 1.0}
    assert mask[BLOCK].min() == 1 and prob[BLOCK].min() > 0.9
    outside = np.ones_like(mask, dtype=bool)
    outside[BLOCK[0].start - MARGIN:BLOCK[0].stop + MARGIN, BLOCK[1].start - MARGIN:BLOCK[1].stop + MARGIN] = False
    assert mask[outside].max() == 0 and prob[outside].max() < 0.4


@needs_s2cloudless
def test_float_input_nan_and_range() -> None:
    image = cloud_over_land().astype(np.float32)
    _, reference = cloud_probability_and_mask(image)
    dirty = image.copy()
    dirty[:, 0, 0] = np.nan  # NaN -> 0 before anything else
    dirty[:, 30, 30] = 60000  # clipped to 10000: still cloud
    zeroed = image.copy()
    zeroed[:, 0, 0] = 0
    zeroed[:, 30, 30] = 10000
    np.testing.assert_array_equal(cloud_probability_and_mask(dirty)[0], cloud_probability_and_mask(zeroed)[0])
    np.testing.assert_array_equal(cloud_probability_and_mask(image.astype(np.uint16))[1], reference)


def test_blank_image_is_all_cloudy_with_a_warning() -> None:
    with pytest.warns(DataWarning, match=r"patch\.tif: blank .*all cloudy"):
        prob, mask = cloud_probability_and_mask(np.zeros((13, 8, 8), np.uint16), where="patch.tif")
    assert mask.dtype == np.float32 and mask.shape == (8, 8) and mask.min() == 1 and prob.min() == 1
    with pytest.warns(DataWarning, match="blank"):  # NaN only is blank too
        cloud_probability_and_mask(np.full((13, 4, 4), np.nan, np.float32))


@pytest.mark.parametrize("shape", [(12, 8, 8), (8, 8), (1, 13, 8, 8)])
def test_wrong_shape_is_a_data_error(shape: tuple[int, ...]) -> None:
    with pytest.raises(DataError, match=r"x\.tif: .*13 Sentinel-2 L1C bands"):
        cloud_probability_and_mask(np.ones(shape, np.uint16), where="x.tif")


@needs_s2cloudless
def test_cache_hit_and_entry_content(tmp_path: Path) -> None:
    image = cloud_over_land()
    masker = CloudMasker(tmp_path / "cache")
    first = masker(image, "ROIs1_spring_1_p1", "a.tif")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = masker(image, "ROIs1_spring_1_p1", "a.tif")
    assert (masker.hits, masker.misses) == (1, 1)
    np.testing.assert_array_equal(first, second)
    assert second.dtype == np.float32
    with np.load(tmp_path / "cache" / "ROIs1_spring_1_p1.npz", allow_pickle=False) as entry:
        assert entry["mask"].dtype == np.uint8
        np.testing.assert_array_equal(entry["mask"], first)
        assert str(entry["image_sha256"]) == masks._image_sha256(image)
        assert str(entry["s2cloudless_version"]) == importlib.metadata.version("s2cloudless")
        assert '"threshold": 0.4' in str(entry["settings"])
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]  # no temporary left
    # a second masker (another process, another run) reads the same entry
    other = CloudMasker(tmp_path / "cache")
    other(image, "ROIs1_spring_1_p1", "a.tif")
    assert (other.hits, other.misses) == (1, 0)


@needs_s2cloudless
def test_changed_image_is_detected_and_recomputed(tmp_path: Path) -> None:
    image = cloud_over_land()
    masker = CloudMasker(tmp_path)
    masker(image, "p", "a.tif")
    changed = image.copy()
    changed[3, 50, 50] += 1  # one DN of one pixel
    with pytest.warns(DataWarning, match=r"p\.npz: the cached cloud mask of p did not match its image \(b\.tif\): "
                                         r"different image; recomputed"):
        masker(changed, "p", "b.tif")
    assert (masker.hits, masker.misses) == (0, 2)
    masker(changed, "p", "b.tif")  # the entry was overwritten with the new fingerprint
    assert masker.hits == 1
    with pytest.warns(DataWarning, match="different image"):  # same bytes, other dtype
        masker(changed.astype(np.float32), "p", "b.tif")


@needs_s2cloudless
def test_other_settings_or_version_are_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = cloud_over_land()
    masker = CloudMasker(tmp_path)
    base = masker(image, "p", "a.tif")
    monkeypatch.setitem(MASK_SETTINGS, "threshold", 0.9)
    with pytest.warns(DataWarning, match="different s2cloudless settings"):
        strict = masker(image, "p", "a.tif")
    assert strict.sum() < base.sum()  # the new settings were used, not the cached mask
    monkeypatch.setitem(MASK_SETTINGS, "threshold", 0.4)
    monkeypatch.setattr(masks, "_installed_version", lambda: "0.0.1")
    with pytest.warns(DataWarning, match="different s2cloudless settings, s2cloudless version"):
        again = masker(image, "p", "a.tif")
    np.testing.assert_array_equal(again, base)
    assert (masker.hits, masker.misses) == (0, 3)


@needs_s2cloudless
@pytest.mark.parametrize("content", [b"", b"not a zip file", "truncated", "object", "wrong shape"])
def test_corrupt_entry_is_recomputed(tmp_path: Path, content: bytes | str) -> None:
    image = cloud_over_land()
    masker = CloudMasker(tmp_path)
    reference = masker(image, "p", "a.tif")
    entry = tmp_path / "p.npz"
    if content == "truncated":
        entry.write_bytes(entry.read_bytes()[:200])
    elif content == "object":  # an entry that only pickle could read
        np.savez(entry, mask=np.zeros((64, 64), np.uint8), image_sha256=np.array([{"a": 1}], dtype=object))
    elif content == "wrong shape":  # a matching fingerprint around a mask of another size
        with np.load(entry, allow_pickle=False) as old:
            fields = {key: old[key] for key in old.files if key != "mask"}
        np.savez_compressed(entry, mask=np.zeros((8, 8), np.uint8), **fields)
    else:
        entry.write_bytes(content)
    with pytest.warns(DataWarning, match=r"p\.npz: the cached cloud mask of p (cannot be read|did not match)"):
        mask = masker(image, "p", "a.tif")
    np.testing.assert_array_equal(mask, reference)
    assert masker.misses == 2
    masker(image, "p", "a.tif")  # repaired
    assert masker.hits == 1


@needs_s2cloudless
def test_unwritable_cache_warns_once(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    masker = CloudMasker(blocker / "cache")  # a folder cannot be made under a file (even as root)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        first = masker(cloud_over_land(), "p", "a.tif")
        masker(cloud_over_land(1), "q", "b.tif")
    assert [type(w.message) for w in record] == [DataWarning]
    assert "file/cache: cloud masks cannot be cached there" in str(record[0].message)
    assert first[BLOCK].min() == 1 and (masker.hits, masker.misses) == (0, 2)


@needs_s2cloudless
def test_no_cache_computes_every_time(tmp_path: Path) -> None:
    masker = CloudMasker(None)
    masker(cloud_over_land(), "p", "a.tif")
    masker(cloud_over_land(), "p", "a.tif")
    assert (masker.hits, masker.misses) == (0, 2)


@pytest.mark.parametrize("name", ["", "../p", "a/b", ".hidden"])
def test_bad_patch_name_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="cache file name"):
        CloudMasker(tmp_path)(np.zeros((13, 4, 4), np.uint16), name, "a.tif")


def test_default_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "dataset"
    root.mkdir()
    assert default_cache_dir(root) == root.resolve() / ".m3rcr_cache" / "s2cloudless"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root.chmod(0o555)
    try:
        # root ignores permission bits: decide as an ordinary user would
        real_writable = masks._writable
        monkeypatch.setattr(masks, "_writable", lambda folder: real_writable(folder) and bool(
            next(p for p in [folder, *folder.parents] if p.exists()).stat().st_mode & 0o200))
        per_user = default_cache_dir(root)
    finally:
        root.chmod(0o755)
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    assert per_user == tmp_path / "xdg" / "m3rcr" / "s2cloudless" / digest
    assert not per_user.exists()  # nothing is created before a mask is written
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    missing = tmp_path / "not_there"
    assert default_cache_dir(missing).parent == tmp_path / "home" / ".cache" / "m3rcr" / "s2cloudless"
    assert default_cache_dir(missing) != default_cache_dir(tmp_path / "other")


def test_missing_s2cloudless_is_reported_when_a_mask_is_needed(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "s2cloudless", None)  # makes the import fail
    masks._detector.cache_clear()
    try:
        with pytest.raises(S2CloudlessUnavailable, match=r'a\.tif: cloud masks of SEN12MS-CR need s2cloudless.*'
                                                         r'pip install "m3rcr\[s2cloudless\]"') as info:
            CloudMasker(None)(cloud_over_land(), "p", "a.tif")
    finally:
        masks._detector.cache_clear()
    assert isinstance(info.value, DataError) and isinstance(info.value, ImportError)
    again = pickle.loads(pickle.dumps(info.value))  # DataLoader workers pickle their errors
    assert type(again) is S2CloudlessUnavailable and str(again) == str(info.value)
    # a blank image needs no model, so no error
    with pytest.warns(DataWarning, match="blank"):
        cloud_probability_and_mask(np.zeros((13, 4, 4), np.uint16))


def _mask_in_child(image: np.ndarray) -> tuple[float, dict[str, int]]:
    return float(cloud_probability_and_mask(image)[1].sum()), masks._predict_kwargs()


@needs_s2cloudless
def test_forked_worker_predicts_with_one_thread() -> None:
    """LightGBM's OpenMP pool does not survive fork: a forked worker must predict with one thread."""
    image = cloud_over_land()
    expected = float(cloud_probability_and_mask(image)[1].sum())  # the parent has predicted
    assert masks._predict_kwargs() == {}
    with multiprocessing.get_context("fork").Pool(1) as pool:
        total, kwargs = pool.apply_async(_mask_in_child, (image,)).get(timeout=120)
    assert kwargs == {"num_threads": 1} and total == expected


@needs_s2cloudless
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_sample_masks(name: str, tmp_path: Path) -> None:
    """The real cloudy patches: plausible coverage, and the same mask as s2cloudless called directly."""
    from s2cloudless import S2PixelCloudDetector

    image = read_real(name)
    assert image.shape == (13, 256, 256) and image.dtype == np.uint16
    prob, mask = cloud_probability_and_mask(image, where=name)
    # independent computation, as UnCRtainTS's loader does it (float32 DN, clip, / 10000, get_cloud_masks)
    detector = S2PixelCloudDetector(threshold=0.4, all_bands=True, average_over=4, dilation_size=2)
    scaled = np.clip(image.astype(np.float32), 0, 10000) / 10000
    direct = detector.get_cloud_masks(np.moveaxis(scaled, 0, -1)[None])[0]
    np.testing.assert_array_equal(mask, direct)
    coverage = float(mask.mean())
    print(f"{name}: coverage {coverage:.4f}, mean probability {prob.mean():.4f}")
    low, high = REAL[name][1]
    assert 0 <= low <= coverage <= high <= 1
    masker = CloudMasker(tmp_path)
    np.testing.assert_array_equal(masker(image, name, name), mask)
    np.testing.assert_array_equal(masker(image, name, name), mask)
    assert (masker.hits, masker.misses) == (1, 1)
