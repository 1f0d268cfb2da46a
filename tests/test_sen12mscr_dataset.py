"""The SEN12MS-CR dataset: items, the preprocessing conventions on known values, band selection, seeded crops and
augmentation, splits (exact and reference-compatible), the DataModule, bad input, and the sample figure.

Bad-input tests break copies of the two real patches (``../shared/data/sen12mscr-official``) or, without the
shared folder, of a small synthetic stand-in of the same make-up (one test ROI, one train ROI).
"""

from __future__ import annotations

import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from paths import SHARED

from m3rcr.data import DATASETS, Sampling
from m3rcr.data.datasets import SAMPLE_KEYS, SEN12MSCRDataset, tensor_to_affine
from m3rcr.data.sen12mscr import Triplet, list_triplets, split_of
from m3rcr.data.sen12mscr.preprocess import S2_BANDS
from m3rcr.errors import DataError, DataWarning

S12_OFFICIAL = SHARED / "data" / "sen12mscr-official"
S12_FLAT = SHARED / "data" / "sen12mscr-samples"

# --------------------------------------------------------------------------- data helpers (also used by the CLI tests)


def make_synthetic(out: Path, *, seasons: tuple[str, ...] = ("fall", "winter"), rois: int = 1, patches: int = 1,
                   size: int = 64, seed: int = 0) -> Path:
    """A synthetic SEN12MS-CR root in the official layout. The defaults stand in for the two real patches:
    fall ROI 139 (test) and winter ROI 8 (train), one patch each."""
    from m3rcr.data.synthetic import Sen12mscrSynthConfig, generate_sen12mscr

    config = Sen12mscrSynthConfig(size=size, rois_per_season=rois, patches_per_roi=patches, seasons=seasons)
    return generate_sen12mscr(out, config, seed=seed)


def copy_tree(src: Path, dst: Path) -> Path:
    """A writable copy of ``src``."""
    shutil.copytree(src, dst)
    for p in dst.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


def s12_copy(tmp: Path, pristine: Path | None = None) -> tuple[Path, bool]:
    """A writable official-layout root of two triplets (one test, one train), and whether it holds the real
    patches; without ``../shared`` a copy of ``pristine`` (a synthetic stand-in from :func:`make_synthetic`)."""
    if S12_OFFICIAL.is_dir():
        return copy_tree(S12_OFFICIAL, tmp / "s12"), True
    assert pristine is not None
    return copy_tree(pristine, tmp / "s12"), False


def by_split(root: Path) -> dict[str, Triplet]:
    """The root's triplets by published split (one each in the two-triplet roots)."""
    return {split_of(t) or "": t for t in list_triplets(root).triplets}


def rewrite(path: Path, data: np.ndarray | None = None, **profile: object) -> None:
    """Rewrite a GeoTIFF with new pixels and/or header fields (``crs=None`` drops the CRS)."""
    with rasterio.open(path) as src:
        old, prof = src.read(), src.profile
    data = old if data is None else data
    prof.update(count=data.shape[0], dtype=data.dtype.name, **profile)
    if prof.get("crs") is None:
        prof.pop("crs", None)
    path.unlink()
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data)


def read(path: Path) -> tuple[np.ndarray, Affine]:
    with rasterio.open(path) as src:
        return src.read(), src.transform


#: one way to break each file, as (file of the triplet, change, what the error says)
def break_file(t: Triplet, how: str) -> tuple[Path, str]:
    """Break one file of ``t``; returns the file and a regular expression of the error."""
    if how == "s2_bands":
        rewrite(t.s2, read(t.s2)[0][:4])  # a 4-band S2 (e.g. an RGBN export)
        return t.s2, r"must have 13 band\(s\), found 4|has 4 band"
    if how == "grid":
        data, tr = read(t.s1)
        rewrite(t.s1, transform=Affine(tr.a, tr.b, tr.c + 10.0, tr.d, tr.e, tr.f))  # one pixel east
        return t.s1, "grid"
    if how == "no_crs":
        rewrite(t.s2_cloudy, crs=None)
        return t.s2_cloudy, "no georeference|no CRS"
    if how == "linear":
        data = read(t.s1)[0]
        rewrite(t.s1, (10 ** (data / 10)).astype(np.float32))  # linear power where SEN12MS-CR has dB
        return t.s1, "linear power"
    raise ValueError(how)


BREAKS = ("s2_bands", "grid", "no_crs", "linear")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """The synthetic stand-in, generated once (None when the real patches are there)."""
    if S12_OFFICIAL.is_dir():
        return None
    return make_synthetic(tmp_path_factory.mktemp("s12synth") / "s12")


@pytest.fixture
def s12(tmp_path: Path, pristine: Path | None) -> Path:
    return s12_copy(tmp_path, pristine)[0]


@pytest.fixture(scope="module")
def colliding(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic: spring ROIs 1 (train) and 106 (test), summer ROIs 19 (val) and 4 (train); 2 patches each, 32 px.
    ``ROIs1158_spring_s1/s1_1`` is a prefix of ``.../s1_106``: the reference loader's substring rule collides."""
    return make_synthetic(tmp_path_factory.mktemp("collide") / "s12", seasons=("spring", "summer"), rois=2,
                          patches=2, size=32, seed=1)


def one_triplet(root: Path, s2: np.ndarray, s1: np.ndarray) -> Path:
    """An official-layout root with one train triplet (winter ROI 112) holding the given arrays."""
    crs, transform = "EPSG:32631", Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5000000.0)
    for kind, data in (("s1", s1), ("s2", s2), ("s2_cloudy", s2)):
        path = root / f"ROIs2017_winter_{kind}" / f"{kind}_112" / f"ROIs2017_winter_{kind}_112_p1.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                           dtype=data.dtype.name, crs=crs, transform=transform) as dst:
            dst.write(data)
    return root


# --------------------------------------------------------------------------- items


def test_item_keys_shapes_and_dtypes(s12: Path) -> None:
    ds = SEN12MSCRDataset(s12, "all", cloud_masks="none")
    assert len(ds) == 2 and ds.spec.protocol == "sen12mscr" and ds.spec.optical_bands == S2_BANDS
    for i, t in enumerate(ds.samples):
        item = ds[i]
        assert set(SAMPLE_KEYS) <= set(item)
        size = read(t.s2)[0].shape[1]
        assert item["cloudy"].shape == item["cloudfree"].shape == (13, size, size)
        assert item["sar"].shape == (2, size, size) and item["sar"].dtype == torch.float32
        assert item["cloudy"].dtype == item["cloudfree"].dtype == item["cloudmask"].dtype == torch.float32
        assert item["landcover"].dtype == torch.int64 and not item["landcover"].any()
        assert item["cloudmask"].shape == (size, size) and not item["cloudmask"].any()
        assert math.isnan(item["cloud_cover"]) and math.isnan(item["cloud_cover_tile"])  # no masks asked for
        assert item["name"] == t.name and item["crs"].startswith("EPSG:32")
        assert tensor_to_affine(item["transform"]) == read(t.s2)[1]
        assert item["transform"].dtype == torch.float64
        for key in ("cloudy", "cloudfree", "sar"):
            assert torch.isfinite(item[key]).all() and item[key].min() >= 0 and item[key].max() <= 1


def test_the_registry_builds_it_and_split_names_are_checked(s12: Path) -> None:
    ds = DATASETS.build("sen12mscr", root=s12, split="test", cloud_masks="none")
    assert isinstance(ds, SEN12MSCRDataset) and [t.roi for t in ds.samples] == ["139"]
    with pytest.raises(ValueError, match="unknown SEN12MS-CR split 'holdout'"):
        SEN12MSCRDataset(s12, "holdout")
    with pytest.raises(ValueError, match="cloud_masks"):
        SEN12MSCRDataset(s12, "test", cloud_masks="fmask")  # type: ignore[arg-type]


#: (S2 DN, expected default, resnet, glfcr) per pixel column
S2_CASES = [(0, 0.0, 0.0, 0.0), (2000, 0.2, 1.0, 0.2), (5000, 0.5, 2.5, 0.5), (10000, 1.0, 5.0, 1.0),
            (12000, 1.0, 5.0, 1.0)]
#: (VV dB, VH dB, expected VV / VH in default, resnet, glfcr), spec section 4
S1_CASES = [(-30.0, -40.0, (0.0, 0.0), (0.0, 0.0), (0.0, 0.0)),
            (-25.0, -32.5, (0.0, 0.0), (0.0, 0.0), (0.0, 0.0)),
            (-12.5, -25.0, (0.5, 0.0), (1.0, 2 * 7.5 / 32.5), (0.5, 7.5 / 32.5)),
            (-5.0, -16.25, (0.8, 0.35), (1.6, 1.0), (0.8, 0.5)),
            (0.0, 0.0, (1.0, 1.0), (2.0, 2.0), (1.0, 1.0)),
            (3.0, float("nan"), (1.0, 0.0), (2.0, 0.0), (1.0, 0.0))]  # NaN -> 0 after scaling


@pytest.mark.parametrize("k, name", [(1, "default"), (2, "resnet"), (3, "glfcr")])
def test_preprocessing_conventions_give_the_spec_values(tmp_path: Path, k: int, name: str) -> None:
    n = 16
    s2 = np.zeros((13, n, n), np.uint16)
    s1 = np.full((2, n, n), -12.0, np.float32)  # plausible dB around the known values
    for col, case in enumerate(S2_CASES):
        s2[:, :, col] = case[0]
    for col, (vv, vh, *_) in enumerate(S1_CASES):
        s1[0, :, col], s1[1, :, col] = vv, vh
    root = one_triplet(tmp_path / "known", s2, s1)
    ds = SEN12MSCRDataset(root, "train", preprocessing=name, cloud_masks="none")
    item = ds[0]
    for col, case in enumerate(S2_CASES):
        for key in ("cloudy", "cloudfree"):
            np.testing.assert_allclose(item[key][:, :, col].numpy(), case[k], rtol=1e-6, atol=0)
    for col, case in enumerate(S1_CASES):
        vv, vh = case[1 + k]
        np.testing.assert_allclose(item["sar"][0, :, col].numpy(), vv, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(item["sar"][1, :, col].numpy(), vh, rtol=1e-6, atol=1e-7)
    assert ds.spec.reflectance_per_unit == {"default": 1.0, "resnet": 0.2, "glfcr": 1.0}[name]
    assert ds.spec.sar_db_range == {"VV": (-25.0, 0.0), "VH": (-25.0, 0.0) if name == "default" else (-32.5, 0.0)}
    with pytest.raises(ValueError, match="unknown SEN12MS-CR preprocessing 'dsen2'"):
        SEN12MSCRDataset(root, "train", preprocessing="dsen2")


def test_band_selection_and_its_spec(s12: Path) -> None:
    full = SEN12MSCRDataset(s12, "test", cloud_masks="none")[0]
    ds = SEN12MSCRDataset(s12, "test", bands="rgbn", cloud_masks="none")
    assert ds.bands == ds.spec.optical_bands == ("B2", "B3", "B4", "B8")
    assert ds.spec.rgb == ("B4", "B3", "B2") and ds.spec.rgb_indices() == (2, 1, 0) and ds.spec.nir == "B8"
    item = ds[0]
    assert torch.equal(item["cloudy"], full["cloudy"][[1, 2, 3, 7]])
    assert torch.equal(item["cloudfree"], full["cloudfree"][[1, 2, 3, 7]])
    ds = SEN12MSCRDataset(s12, "test", bands=["B8", "b4", "B3"], cloud_masks="none")  # any order, any case
    assert ds.bands == ("B8", "B4", "B3") and torch.equal(ds[0]["cloudy"], full["cloudy"][[7, 3, 2]])
    assert ds.spec.nir == "B8" and ds.spec.rgb == ("B8", "B4", "B3")  # no blue: a false-colour composite
    ds = SEN12MSCRDataset(s12, "test", bands=["B4", "B3", "B2"], cloud_masks="none")
    assert ds.spec.rgb_indices() == (0, 1, 2) and ds.spec.nir is None
    assert SEN12MSCRDataset.spec.optical_bands == S2_BANDS  # the class's spec is left alone
    for bad, match in ((["B2", "B13"], "unknown band"), (["B2", "B2"], "each band once"), ("rgbnir", "band set")):
        with pytest.raises(ValueError, match=match):
            SEN12MSCRDataset(s12, "test", bands=bad)


def _grid_pixels(item: dict, full_transform: Affine) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the full patch under each pixel of a cropped / augmented item (from its transform)."""
    h, w = item["cloudy"].shape[-2:]
    t = tensor_to_affine(item["transform"])
    rows, cols = np.mgrid[0:h, 0:w] + 0.5
    xs, ys = t.a * cols + t.b * rows + t.c, t.d * cols + t.e * rows + t.f
    inv = ~full_transform
    fc, fr = inv.a * xs + inv.b * ys + inv.c, inv.d * xs + inv.e * ys + inv.f
    return np.floor(fr).astype(int), np.floor(fc).astype(int)


def test_seeded_random_crop_and_augmentation_stay_aligned(s12: Path, tmp_path: Path) -> None:
    options = {"split": "all", "mask_cache": tmp_path / "masks"}  # real s2cloudless masks: a modality to align
    full_ds = SEN12MSCRDataset(s12, **options)
    sampling = Sampling(crop_size=24, crop="random", augment=True, seed=5)
    ds = SEN12MSCRDataset(s12, sampling=sampling, **options)
    turned = 0
    for i in range(len(ds)):
        full = full_ds[i]
        full_t = tensor_to_affine(full["transform"])
        for epoch in range(4):
            ds.set_epoch(epoch)
            item = ds[i]
            rows, cols = _grid_pixels(item, full_t)
            for key in ("cloudy", "cloudfree", "sar", "cloudmask", "landcover"):
                assert torch.equal(item[key], full[key][..., rows, cols]), (key, i, epoch)
            assert item["cloud_cover"] == pytest.approx(float(item["cloudmask"].mean()))
            assert item["cloud_cover_tile"] == full["cloud_cover_tile"]
            t = tensor_to_affine(item["transform"])
            turned += (t.b, t.d) != (0, 0) or t.a < 0 or t.e > 0
        ds.set_epoch(1)
        again = SEN12MSCRDataset(s12, sampling=sampling, **options)
        again.set_epoch(1)
        assert torch.equal(again[i]["cloudy"], ds[i]["cloudy"])  # the seed decides, nothing else
    assert turned > 0  # the augmentation did flip or turn some of them
    with pytest.raises(DataError, match="crop"):
        SEN12MSCRDataset(s12, split="all", cloud_masks="none", sampling=Sampling(crop_size=1000))[0]


# --------------------------------------------------------------------------- splits


def test_published_split_on_the_two_patches(s12: Path) -> None:
    test, train = (SEN12MSCRDataset(s12, s, cloud_masks="none") for s in ("test", "train"))
    assert [t.roi_folder for t in test.samples] == ["ROIs1970_fall_s1/s1_139"]
    assert [t.season for t in train.samples] == ["ROIs2017_winter"]
    with pytest.raises(DataError, match="no triplet of split 'val'"):
        SEN12MSCRDataset(s12, "val")
    # the reference loader's rule also puts the fall ROI 139 (test) into train, via ROIs1970_fall_s1/s1_1
    leaky = SEN12MSCRDataset(s12, "train", reference_compatible=True, cloud_masks="none")
    assert {t.season for t in leaky.samples} == {"ROIs1970_fall", "ROIs2017_winter"}


def test_reference_compatible_split_on_colliding_roi_numbers(colliding: Path) -> None:
    def rois(split: str, **kw: bool) -> set[str]:
        return {t.roi_folder for t in SEN12MSCRDataset(colliding, split, cloud_masks="none", **kw).samples}

    assert rois("train") == {"ROIs1158_spring_s1/s1_1", "ROIs1868_summer_s1/s1_4"}
    assert rois("test") == {"ROIs1158_spring_s1/s1_106"} == rois("test", reference_compatible=True)
    assert rois("val") == {"ROIs1868_summer_s1/s1_19"}
    # s1_1 (train) is a prefix of s1_106 (test): the substring rule takes the test ROI's patches into train
    assert rois("train", reference_compatible=True) == rois("train") | {"ROIs1158_spring_s1/s1_106"}
    train = SEN12MSCRDataset(colliding, "train", reference_compatible=True, cloud_masks="none")
    assert len(train) == 6 and len(SEN12MSCRDataset(colliding, "all", cloud_masks="none")) == 8


def test_datamodule_yields_batches(colliding: Path) -> None:
    from m3rcr.data.datamodule import CloudRemovalDataModule

    dm = CloudRemovalDataModule({"name": "sen12mscr", "root": str(colliding), "val_split": "val",
                                 "cloud_masks": "none", "batch_size": 2, "crop_size": 16, "augment": True,
                                 "preprocessing": "resnet", "bands": "rgbn"})
    dm.setup("fit")
    assert len(dm.train_dataset) == 4 and len(dm.val_dataset) == 2
    batch = next(iter(dm.train_dataloader()))
    assert batch["cloudy"].shape == (2, 4, 16, 16) and batch["sar"].shape == (2, 2, 16, 16)
    assert batch["cloudy"].max() <= 5.0 and batch["sar"].max() <= 2.0  # resnet scaling reached the items
    val = next(iter(dm.val_dataloader()))
    assert val["cloudy"].shape == (2, 4, 32, 32) and len(val["name"]) == 2
    dm.setup("test")
    assert {t.roi for t in dm.test_dataset.samples} == {"106"}
    with pytest.raises(ValueError, match="unknown key"):
        CloudRemovalDataModule({"name": "sen12mscr", "root": str(colliding), "sar_mode": "geo"})


# --------------------------------------------------------------------------- bad input


def test_an_unpaired_patch_is_warned_about_and_skipped(s12: Path) -> None:
    train = by_split(s12)["train"]
    train.s1.unlink()
    with pytest.warns(DataWarning, match="without all three files") as caught:
        ds = SEN12MSCRDataset(s12, "all", cloud_masks="none")
    assert [t.roi for t in ds.samples] == ["139"] and "missing s1" in str(caught[0].message)
    assert str(train.s2) in str(caught[0].message)  # what was found is named
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(DataError, match="no triplet of split 'train'") as err:
            SEN12MSCRDataset(s12, "train")  # nothing left of the split
    assert str(s12) in str(err.value)


@pytest.mark.parametrize("how", BREAKS)
def test_bad_files_are_data_errors_naming_the_file(s12: Path, how: str) -> None:
    t = by_split(s12)["test"]
    path, match = break_file(t, how)
    ds = SEN12MSCRDataset(s12, "test", cloud_masks="none")  # listing reads no header
    with pytest.raises(DataError, match=match) as err:
        ds[0]
    assert str(err.value).startswith(f"{path}: ")
    if how != "linear":  # the header check finds the others without reading pixels
        from m3rcr.data.sen12mscr import check_triplet

        with pytest.raises(DataError, match=match.replace("no georeference|", "")) as err:
            check_triplet(ds.samples[0])
        assert str(err.value).startswith(f"{path}: ")


# --------------------------------------------------------------------------- the figure


def test_plot_shows_true_colour_without_a_landcover_panel(s12: Path, tmp_path: Path) -> None:
    from m3rcr.data.plot import apply_stretch, rgb_stretch_limits

    ds = SEN12MSCRDataset(s12, "test", mask_cache=tmp_path / "masks")
    item = ds[0]
    fig = ds.plot(item)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:3] == ["Cloudy", "Cloud-free", "SAR VV"] and titles[3].startswith("Cloud mask (white: ")
    assert len(titles) == 4 and "false colour" not in fig.get_suptitle()
    # the composite is B4, B3, B2 on the stretch of the clear pixels of the cloudy image and the reference
    rgb = [3, 2, 1]
    limits = rgb_stretch_limits([(item["cloudy"][rgb], item["cloudmask"]), (item["cloudfree"][rgb], None)])
    shown = np.asarray(fig.axes[1].images[0].get_array())
    np.testing.assert_allclose(shown, apply_stretch(item["cloudfree"][rgb], limits), atol=1e-6)
    sar = np.asarray(fig.axes[2].images[0].get_array())
    np.testing.assert_array_equal(sar, item["sar"][0].numpy())
    assert fig.axes[2].images[0].get_clim() == (0, 1)
    # no computed mask: no mask panel; a prediction gets its own panel
    bare = SEN12MSCRDataset(s12, "test", cloud_masks="none")
    fig = bare.plot(bare[0], prediction=bare[0]["cloudfree"])
    assert [ax.get_title() for ax in fig.axes] == ["Cloudy", "Cloud-free", "Prediction", "SAR VV"]


def test_plot_means_the_same_on_the_resnet_scale(s12: Path) -> None:
    """resnet items hold S2 / 2000 and S1 in [0, 2]: shown as reflectance, the figures equal the default's."""
    shown = {}
    for name in ("default", "resnet"):
        ds = SEN12MSCRDataset(s12, "test", preprocessing=name, cloud_masks="none")
        for stretch in ("fixed", "percentile"):
            fig = ds.plot(ds[0], stretch=stretch)
            shown[name, stretch] = [np.asarray(ax.images[0].get_array(), dtype=np.float64) for ax in fig.axes]
    for stretch in ("fixed", "percentile"):
        for a, b in zip(shown["default", stretch], shown["resnet", stretch]):
            np.testing.assert_allclose(a, b / (2.0 if a.ndim == 2 else 1.0), atol=1e-5)  # SAR: [0, 2] vs [0, 1]
    # 'fixed' is reflectance 0-0.3: DN 1500 in B4, B3, B2 shows at half brightness on both scales
    fixed = shown["default", "fixed"][0]
    ds = SEN12MSCRDataset(s12, "test", cloud_masks="none")
    cloudy = ds[0]["cloudy"][[3, 2, 1]].numpy().transpose(1, 2, 0)
    np.testing.assert_allclose(fixed, np.clip(cloudy / 0.3, 0, 1), atol=1e-6)


def test_stretch_helpers_take_band_positions_and_a_scale() -> None:
    from m3rcr.data.plot import RGB_BANDS, rgb_composite, stretch_limits

    rng = np.random.default_rng(0)
    bgrn = rng.uniform(0, 0.3, (4, 20, 20))  # M3R-CR's blue, green, red, NIR
    s2 = np.zeros((13, 20, 20))
    s2[[1, 2, 3]] = bgrn[:3]  # the same blue, green, red as Sentinel-2's B2, B3, B4
    assert RGB_BANDS == (2, 1, 0)
    m3 = stretch_limits([(bgrn, None)])
    s12 = stretch_limits([(s2 / 0.2, None)], rgb=(3, 2, 1), scale=0.2)  # resnet-scaled values
    np.testing.assert_allclose(m3, s12)
    np.testing.assert_allclose(rgb_composite(bgrn, m3), rgb_composite(s2 / 0.2, s12, rgb=(3, 2, 1), scale=0.2))
