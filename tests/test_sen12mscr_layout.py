"""SEN12MS-CR files: official and flat layouts, exact pairing, the published split, header checks."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from paths import SHARED, require_shared

from m3rcr.data.sen12mscr import (
    Triplet,
    check_triplet,
    detect_layout,
    flat_variant,
    list_flat,
    list_official,
    list_triplets,
    reference_overlap,
    reference_splits_of,
    select,
    split_of,
    split_table,
)
from m3rcr.data.sen12mscr.layout import read_flat_csv
from m3rcr.errors import DataError

SPEC_SPLITS = SHARED / "specs" / "sen12mscr_splits.tsv"
OFFICIAL = SHARED / "data" / "sen12mscr-official"
FLAT = SHARED / "data" / "sen12mscr-samples"
TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)
#: (modality, band count, dtype) of the three files
FILES = {"s1": (2, "float32"), "s2": (13, "uint16"), "s2_cloudy": (13, "uint16")}
OFFICIAL_SUFFIX = {"s1": "s1", "s2": "s2", "s2_cloudy": "s2_cloudy"}
FLAT_NAME = {"s1": "s1", "s2": "s2_cloudfree", "s2_cloudy": "s2_cloudy"}


def write_tif(path: Path, bands: int, dtype: str, *, size: int = 8, crs: str | None = "EPSG:32631",
              transform: Affine = TRANSFORM) -> Path:
    """A tiny GeoTIFF (``crs=None``: not georeferenced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": bands, "dtype": dtype,
               "transform": transform}
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.ones((bands, size, size), dtype=dtype))
    return path


def official_path(root: Path, season: str, mod: str, roi: int, patch: int) -> Path:
    s = OFFICIAL_SUFFIX[mod]
    return root / f"{season}_{s}" / f"{s}_{roi}" / f"{season}_{s}_{roi}_p{patch}.tif"


def make_official(root: Path, keys: list[tuple[str, int, int]],
                  skip: set[tuple[str, int, int, str]] = frozenset()) -> Path:
    """An official-layout tree with a triplet per key, less the (season, roi, patch, modality) files in
    ``skip``."""
    for season, roi, patch in keys:
        for mod, (bands, dtype) in FILES.items():
            if (season, roi, patch, mod) not in skip:
                write_tif(official_path(root, season, mod, roi, patch), bands, dtype)
    return root


def make_flat(root: Path, names: list[str], variant: str, skip: set[tuple[str, str]] = frozenset()) -> Path:
    """A flat-layout tree (``modality_folders`` or ``patch_folders``), less the (name, modality) files in
    ``skip``."""
    for name in names:
        for mod, (bands, dtype) in FILES.items():
            if (name, mod) in skip:
                continue
            if variant == "modality_folders":
                write_tif(root / FLAT_NAME[mod] / f"{name}.tif", bands, dtype)
            else:
                write_tif(root / name / f"{FLAT_NAME[mod]}.tif", bands, dtype)
    for folder in FLAT_NAME.values() if variant == "modality_folders" else ():
        (root / folder).mkdir(parents=True, exist_ok=True)
    return root


# ---------------------------------------------------------------- the published split


def test_split_counts_match_the_table() -> None:
    table = split_table()
    assert {s: len(f) for s, f in table.items()} == {"train": 155, "val": 10, "test": 10}
    assert len({f for folders in table.values() for f in folders}) == 175  # no ROI folder in two splits


def test_packaged_table_equals_the_spec() -> None:
    text = require_shared(SPEC_SPLITS).read_text().splitlines()[1:]
    rows = [line.split("\t") for line in text if line]
    assert {s: tuple(f for sp, f in rows if sp == s) for s in ("train", "val", "test")} == split_table()


def triplet_of(folder: str, patch: str = "7") -> Triplet:
    season, roi = folder.split("_s1/s1_")
    return Triplet(season, roi, patch, Path("a"), Path("b"), Path("c"))


def test_exact_matching_puts_every_roi_in_its_own_split_only() -> None:
    for split, folders in split_table().items():
        for folder in folders:
            t = triplet_of(folder)
            assert t.roi_folder == folder and split_of(t) == split
    assert split_of(triplet_of("ROIs1158_spring_s1/s1_9999")) is None


def test_reference_overlap_is_the_one_the_spec_measured() -> None:
    overlap = reference_overlap()
    test_rois = {o.roi_folder for o in overlap if o.split == "test"}
    val_rois = {o.roi_folder for o in overlap if o.split == "val"}
    assert test_rois == {"ROIs1158_spring_s1/s1_106", "ROIs1158_spring_s1/s1_123",
                         "ROIs1158_spring_s1/s1_140", "ROIs1868_summer_s1/s1_119",
                         "ROIs1868_summer_s1/s1_73", "ROIs1970_fall_s1/s1_139"}
    assert val_rois == {"ROIs1970_fall_s1/s1_65", "ROIs1158_spring_s1/s1_17", "ROIs2017_winter_s1/s1_84"}
    by_roi = {o.roi_folder: o for o in overlap}
    assert by_roi["ROIs1158_spring_s1/s1_106"].train_rois == ("ROIs1158_spring_s1/s1_1",)
    assert "also lands in train" in str(by_roi["ROIs1970_fall_s1/s1_139"])


def test_reference_compatible_selection_reproduces_the_substring_rule() -> None:
    leaked = triplet_of("ROIs1970_fall_s1/s1_139", "839")  # the real test sample's ROI
    clean = triplet_of("ROIs2017_winter_s1/s1_112", "797")  # the real train sample's ROI
    assert split_of(leaked) == "test" and reference_splits_of(leaked) == ("train", "test")
    assert reference_splits_of(clean) == ("train",)
    triplets = [triplet_of(f) for folders in split_table().values() for f in folders]
    assert len(select(triplets, "test")) == 10 and len(select(triplets, "val")) == 10
    assert len(select(triplets, "train")) == 155
    ref_train = select(triplets, "train", reference_compatible=True)
    assert len(ref_train) == 155 + 6 + 3  # the leaked val and test ROIs come on top
    assert len(select(triplets, "test", reference_compatible=True)) == 10
    with pytest.raises(ValueError, match="unknown SEN12MS-CR split"):
        select(triplets, "holdout")


# ---------------------------------------------------------------- listing and pairing on fake trees


def test_official_listing_pairs_by_key_and_reports_unpaired(tmp_path: Path) -> None:
    keys = [("ROIs1158_spring", 106, 30), ("ROIs1158_spring", 1, 5), ("ROIs2017_winter", 84, 2)]
    root = make_official(tmp_path / "off", keys + [("ROIs1158_spring", 17, 3)],
                         skip={("ROIs1158_spring", 17, 3, "s2_cloudy"), ("ROIs1158_spring", 17, 3, "s1")})
    (root / "ROIs1158_spring_s1" / "s1_1" / "notes.tif").write_bytes(b"")  # outside the naming scheme
    assert detect_layout(root) == "official"
    listing = list_triplets(root)
    assert (listing.layout, listing.variant) == ("official", "official")
    assert [t.name for t in listing.triplets] == ["ROIs1158_spring_1_p5", "ROIs1158_spring_106_p30",
                                                  "ROIs2017_winter_84_p2"]
    t = listing.triplets[1]
    assert t.s1 == official_path(root, "ROIs1158_spring", "s1", 106, 30)
    assert t.s2_cloudy == official_path(root, "ROIs1158_spring", "s2_cloudy", 106, 30)
    assert t.roi_folder == "ROIs1158_spring_s1/s1_106"
    (u,) = listing.unpaired
    assert u.name == "ROIs1158_spring_17_p3" and u.missing == ("s1", "s2_cloudy")
    assert [m for m, _ in u.present] == ["s2"]
    assert "missing s1, s2_cloudy" in listing.unpaired_report()
    assert listing.ignored == (root / "ROIs1158_spring_s1" / "s1_1" / "notes.tif",)
    assert pickle.loads(pickle.dumps(t)) == t
    assert pickle.loads(pickle.dumps(listing)).triplets == listing.triplets


def test_a_file_in_the_wrong_roi_folder_is_not_paired(tmp_path: Path) -> None:
    root = make_official(tmp_path / "off", [("ROIs1970_fall", 139, 839)])
    bad = official_path(root, "ROIs1970_fall", "s1", 139, 839)
    (bad.parent.parent / "s1_13").mkdir()
    bad.rename(bad.parent.parent / "s1_13" / bad.name)  # its name says ROI 139, its folder ROI 13
    with pytest.raises(DataError, match="no complete SEN12MS-CR triplet.*missing s1"):
        list_official(root)


@pytest.mark.parametrize("variant", ["modality_folders", "patch_folders"])
def test_flat_listing_pairs_and_reports_unpaired(tmp_path: Path, variant: str) -> None:
    names = ["ROIs1970_fall_139_p839", "ROIs2017_winter_112_p797", "ROIs1158_spring_1_p2"]
    root = make_flat(tmp_path / variant, names, variant, skip={("ROIs1158_spring_1_p2", "s2")})
    assert detect_layout(root) == "flat" and flat_variant(root) == variant
    listing = list_triplets(root)
    assert listing.variant == variant and listing.csv_file is None
    assert [t.name for t in listing.triplets] == ["ROIs1970_fall_139_p839", "ROIs2017_winter_112_p797"]
    t = listing.triplets[0]
    assert (t.season, t.roi, t.patch) == ("ROIs1970_fall", "139", "839")
    expected = root / "s2_cloudfree" / f"{t.name}.tif" if variant == "modality_folders" else root / t.name / \
        "s2_cloudfree.tif"
    assert t.s2 == expected
    (u,) = listing.unpaired
    assert u.name == "ROIs1158_spring_1_p2" and u.missing == ("s2",)


def test_flat_names_outside_the_scheme_are_ignored_and_duplicates_refused(tmp_path: Path) -> None:
    root = make_flat(tmp_path / "p", ["ROIs1970_fall_139_p839"], "patch_folders")
    write_tif(root / "my_patch" / "s1.tif", 2, "float32")
    assert list_flat(root).ignored == (root / "my_patch",)
    root = make_flat(tmp_path / "m", ["ROIs1970_fall_139_p839"], "modality_folders")
    write_tif(root / "s1" / "ROIs1970_fall_s1_139_p839.tif", 2, "float32")  # the same key under a second name
    with pytest.raises(DataError, match="second s1 file of patch ROIs1970_fall_139_p839"):
        list_flat(root)


def test_flat_csv_gives_splits_and_reports_listed_but_absent_patches(tmp_path: Path) -> None:
    names = ["ROIs1970_fall_139_p839", "ROIs2017_winter_112_p797"]
    root = make_flat(tmp_path / "flat", names, "modality_folders")
    (root / "data.csv").write_text("3, s1, s2_cloudfree, s2_cloudy, ROIs1970_fall_139_p839.tif\n"
                                   "1, s1, s2_cloudfree, s2_cloudy, ROIs2017_winter_112_p797.tif\n"
                                   "2, s1, s2_cloudfree, s2_cloudy, ROIs1868_summer_73_p1.tif\n")
    listing = list_flat(root)
    assert listing.csv_file == root / "data.csv"
    assert [listing.csv_split_of(t) for t in listing.triplets] == ["test", "train"]
    (u,) = listing.unpaired
    assert u.name == "ROIs1868_summer_73_p1" and u.missing == ("s1", "s2", "s2_cloudy") and "row 3" in str(u)
    two_col = tmp_path / "two.csv"
    two_col.write_text("split,name\n2,ROIs1970_fall_139_p839\n")
    assert read_flat_csv(two_col) == {"ROIs1970_fall_139_p839": ("val", f"{two_col} row 2")}


@pytest.mark.parametrize("text, match", [
    ("1, s1, s2_cloudfree, s2_cloudy, ROIs1970_fall_139_p839.tif\n4, ROIs1970_fall_1_p1\n",
     "row 2: expected"),
    ("1, s1, s2, s2_cloudy, ROIs1970_fall_139_p839.tif\n", "only the standard flat folders"),
    ("1, foo.tif\n", "not a SEN12MS-CR patch name"),
    ("1, ROIs1970_fall_139_p839\n3, ROIs1970_fall_139_p839.tif\n", "listed twice"),
])
def test_bad_flat_csv(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "data.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=match):
        read_flat_csv(path)


def test_layout_detection_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dataset root not found"):
        detect_layout(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither a SEN12MS-CR official layout"):
        detect_layout(tmp_path / "empty")
    both = make_official(tmp_path / "both", [("ROIs1970_fall", 1, 1)])
    (both / "s1").mkdir()
    with pytest.raises(DataError, match="holds both"):
        detect_layout(both)
    with pytest.raises(DataError, match="unknown SEN12MS-CR layout"):
        list_triplets(tmp_path / "empty", layout="zip")


def test_missing_modality_folder(tmp_path: Path) -> None:
    root = make_official(tmp_path / "off", [("ROIs1970_fall", 1, 1)],
                         skip={("ROIs1970_fall", 1, 1, "s2_cloudy")})
    with pytest.raises(DataError, match="ROIs1970_fall_s2_cloudy: modality folder missing"):
        list_official(root)
    flat = make_flat(tmp_path / "flat", ["ROIs1970_fall_1_p1"], "modality_folders")
    for p in (flat / "s2_cloudy").iterdir():
        p.unlink()
    (flat / "s2_cloudy").rmdir()
    with pytest.raises(DataError, match="s2_cloudy: modality folder missing"):
        list_flat(flat)


# ---------------------------------------------------------------- header checks


def fake_triplet(tmp_path: Path, **override: dict[str, object]) -> Triplet:
    """A triplet of tiny files; ``override[modality]`` changes that file's write_tif arguments."""
    paths = {}
    for mod, (bands, dtype) in FILES.items():
        kwargs = {"bands": bands, "dtype": dtype, **override.get(mod, {})}
        paths[mod] = write_tif(tmp_path / f"{mod}.tif", **kwargs)
    return Triplet("ROIs1970_fall", "139", "839", **paths)


def test_check_accepts_a_good_triplet(tmp_path: Path) -> None:
    headers = check_triplet(fake_triplet(tmp_path))
    assert headers["s1"].count == 2 and headers["s2"].count == 13


@pytest.mark.parametrize("override, bad, match", [
    ({"s1": {"bands": 3}}, "s1", "has 3 band\\(s\\); a SEN12MS-CR Sentinel-1 file has 2"),
    ({"s2": {"bands": 4}}, "s2", "has 4 band\\(s\\); a SEN12MS-CR cloud-free Sentinel-2 file has 13"),
    ({"s2_cloudy": {"crs": None}}, "s2_cloudy", "has no CRS"),
    ({"s1": {"size": 16}}, "s1", "grid differs .* size 16x16 vs 8x8"),
    ({"s2_cloudy": {"crs": "EPSG:32632"}}, "s2_cloudy", "grid differs .* CRS EPSG:32632 vs EPSG:32631"),
    ({"s1": {"transform": TRANSFORM @ Affine.translation(1, 0)}}, "s1", "grid differs .* transform"),
])
def test_check_errors_name_the_file(tmp_path: Path, override: dict, bad: str, match: str) -> None:
    t = fake_triplet(tmp_path, **override)
    with pytest.raises(DataError, match=match) as info:
        check_triplet(t)
    assert info.value.where == str(getattr(t, bad))


def test_check_missing_and_unreadable_files(tmp_path: Path) -> None:
    t = fake_triplet(tmp_path)
    t.s2_cloudy.write_bytes(b"not a tiff")
    with pytest.raises(DataError, match="cannot be read as a GeoTIFF") as info:
        check_triplet(t)
    assert info.value.where == str(t.s2_cloudy)
    t.s1.unlink()
    with pytest.raises(DataError, match="missing SEN12MS-CR Sentinel-1 file"):
        check_triplet(t)


# ---------------------------------------------------------------- the real samples in both layouts


def test_real_samples_in_both_layouts_agree() -> None:
    official = list_triplets(require_shared(OFFICIAL))
    flat = list_triplets(require_shared(FLAT))
    assert (official.layout, flat.layout, flat.variant) == ("official", "flat", "patch_folders")
    assert not official.unpaired and not flat.unpaired and not official.ignored and not flat.ignored
    names = ["ROIs1970_fall_139_p839", "ROIs2017_winter_112_p797"]
    assert [t.name for t in official.triplets] == [t.name for t in flat.triplets] == names
    assert [split_of(t) for t in official.triplets] == ["test", "train"]
    assert [reference_splits_of(t) for t in flat.triplets] == [("train", "test"), ("train",)]
    for a, b in zip(official.triplets, flat.triplets):
        assert a.roi_folder == b.roi_folder
        ha, hb = check_triplet(a), check_triplet(b)
        for mod in FILES:
            a_grid = (ha[mod].count, ha[mod].crs, ha[mod].transform)
            assert a_grid == (hb[mod].count, hb[mod].crs, hb[mod].transform)
        # S1 and S2 share CRS and transform exactly (check_triplet enforces it; asserted here explicitly)
        assert ha["s1"].crs == ha["s2"].crs == ha["s2_cloudy"].crs and ha["s1"].crs.is_projected
        assert tuple(ha["s1"].transform) == tuple(ha["s2"].transform) == tuple(ha["s2_cloudy"].transform)
        assert (ha["s1"].width, ha["s1"].height) == (256, 256)
