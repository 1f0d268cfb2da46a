"""SEN12MS-CR folder layouts: finding the (S1, cloud-free S2, cloudy S2) triplets of a dataset root.

Official release layout (``official``)::

    ROOT/ROIs1158_spring_s1/s1_<roi>/ROIs1158_spring_s1_<roi>_p<patch>.tif
    ROOT/ROIs1158_spring_s2/s2_<roi>/ROIs1158_spring_s2_<roi>_p<patch>.tif
    ROOT/ROIs1158_spring_s2_cloudy/s2_cloudy_<roi>/ROIs1158_spring_s2_cloudy_<roi>_p<patch>.tif
    (and ROIs1868_summer_*, ROIs1970_fall_*, ROIs2017_winter_*)

Flat layout of the GLF-CR / DSen2-CR code (``flat``), in two variants that differ only in where the files lie:

* ``modality_folders``: ``ROOT/s1/<name>.tif``, ``ROOT/s2_cloudfree/<name>.tif``,
  ``ROOT/s2_cloudy/<name>.tif`` (identically named files);
* ``patch_folders``: ``ROOT/<name>/s1.tif``, ``ROOT/<name>/s2_cloudfree.tif``, ``ROOT/<name>/s2_cloudy.tif``
  (the GLF-CR sample release, e.g. ``ROIs1970_fall_139_p839/s1.tif``).

Either may come with a CSV whose first column is the split (1 = train, 2 = val, 3 = test) and whose last
column is the file (or patch) name; GLF-CR's five-column form puts the three folder names in between.

Triplets are paired by (season set, ROI, patch) exactly; a patch with a file missing is reported as
:class:`Unpaired`, never completed by guessing.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from m3rcr.errors import DataError

#: The three files of a triplet (the :class:`Triplet` field names).
MODALITIES: tuple[str, ...] = ("s1", "s2", "s2_cloudy")
#: Folder (modality_folders) or file stem (patch_folders) of each modality in the flat layout.
FLAT_NAMES: dict[str, str] = {"s1": "s1", "s2": "s2_cloudfree", "s2_cloudy": "s2_cloudy"}
#: Split codes of the flat layout's CSV.
CSV_SPLITS: dict[str, str] = {"1": "train", "2": "val", "3": "test"}
LAYOUTS: tuple[str, ...] = ("official", "flat")
FLAT_VARIANTS: tuple[str, ...] = ("modality_folders", "patch_folders")

_SEASON = r"ROIs\d+_[a-z]+"  # a season set, e.g. ROIs1158_spring
_MOD = r"s1|s2|s2_cloudy"
_OFFICIAL_TOP = re.compile(rf"^(?P<season>{_SEASON})_(?P<mod>{_MOD})$")
_OFFICIAL_ROI = re.compile(rf"^(?P<mod>{_MOD})_(?P<roi>\d+)$")
_OFFICIAL_FILE = re.compile(rf"^(?P<season>{_SEASON})_(?P<mod>{_MOD})_(?P<roi>\d+)_p(?P<patch>\d+)\.tif$")
# flat names usually carry no modality, but tolerate one (``ROIs1158_spring_s1_106_p30``): pairing is by key
_FLAT_NAME = re.compile(rf"^(?P<season>{_SEASON})_(?:(?:s1|s2|s2_cloudy|s2_cloudfree)_)?"
                        r"(?P<roi>\d+)_p(?P<patch>\d+)$")
_OFFICIAL_HINT = "ROIs1158_spring_s1/s1_<roi>/ROIs1158_spring_s1_<roi>_p<patch>.tif, ..."
_FLAT_HINT = "s1/, s2_cloudfree/, s2_cloudy/ folders, or <name>/s1.tif, s2_cloudfree.tif, s2_cloudy.tif"

Key = tuple[str, str, str]  # (season set, ROI, patch), as written in the file names


@dataclass(frozen=True)
class Triplet:
    """One SEN12MS-CR patch: its key and the absolute paths of its three files."""

    season: str  # the season set, e.g. ROIs1970_fall
    roi: str  # e.g. "139" (kept as written, so that pairing never equates "p07" with "p7")
    patch: str  # e.g. "839"
    s1: Path
    s2: Path  # cloud-free
    s2_cloudy: Path

    @property
    def name(self) -> str:
        """``ROIs1970_fall_139_p839``: the flat layout's name of the patch."""
        return f"{self.season}_{self.roi}_p{self.patch}"

    @property
    def roi_folder(self) -> str:
        """``ROIs1970_fall_s1/s1_139``: the ROI as the splits table names it."""
        return f"{self.season}_s1/s1_{self.roi}"

    @property
    def key(self) -> Key:
        """(season set, ROI, patch)."""
        return self.season, self.roi, self.patch

    def paths(self) -> dict[str, Path]:
        """The three paths keyed by modality (:data:`MODALITIES`)."""
        return {m: getattr(self, m) for m in MODALITIES}


@dataclass(frozen=True)
class Unpaired:
    """A patch of which some files were found and others not (or that a CSV lists without its files)."""

    name: str
    present: tuple[tuple[str, Path], ...]  # (modality, path) of the files found
    missing: tuple[str, ...]  # modalities not found
    source: str = ""  # "data.csv row 3" when a CSV listed it

    def __str__(self) -> str:
        found = ", ".join(f"{m} {p}" for m, p in self.present) or "no file"
        listed = f" (listed in {self.source})" if self.source else ""
        return f"{self.name}{listed}: missing {', '.join(self.missing)}; found {found}"


@dataclass(frozen=True)
class Listing:
    """What a dataset root holds: its complete triplets, sorted, and what could not be paired."""

    root: Path
    layout: str  # "official" or "flat"
    variant: str  # "official", "modality_folders" or "patch_folders"
    triplets: tuple[Triplet, ...]
    unpaired: tuple[Unpaired, ...] = ()
    ignored: tuple[Path, ...] = ()  # .tif files (or patch folders) named outside the SEN12MS-CR scheme
    csv_file: Path | None = None
    csv_splits: dict[str, str] = field(default_factory=dict)  # triplet name -> split, from the flat CSV

    def csv_split_of(self, triplet: Triplet) -> str | None:
        """The split the flat layout's CSV gives ``triplet`` (None without a CSV or when it is not listed)."""
        return self.csv_splits.get(triplet.name)

    def unpaired_report(self) -> str:
        """One line per unpaired patch (empty when every patch is complete)."""
        return "\n".join(str(u) for u in self.unpaired)


def _sort_key(key: Key) -> tuple[str, int, int, str, str]:
    season, roi, patch = key
    return season, int(roi), int(patch), roi, patch


def _subdirs(folder: Path) -> list[os.DirEntry[str]]:
    with os.scandir(folder) as it:
        return sorted((e for e in it if e.is_dir()), key=lambda e: e.name)


def _tifs(folder: Path) -> list[os.DirEntry[str]]:
    with os.scandir(folder) as it:
        return sorted((e for e in it if e.is_file() and e.name.lower().endswith((".tif", ".tiff"))),
                      key=lambda e: e.name)


def _require_root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "SEN12MS-CR dataset root not found (or not a folder)")
    return root


def _official_seasons(root: Path) -> dict[str, set[str]]:
    seasons: dict[str, set[str]] = {}
    for entry in _subdirs(root):
        m = _OFFICIAL_TOP.match(entry.name)
        if m:
            seasons.setdefault(m["season"], set()).add(m["mod"])
    return seasons


def _flat_variants(root: Path) -> list[str]:
    variants = []
    if any((root / f).is_dir() for f in FLAT_NAMES.values()):
        variants.append("modality_folders")
    for entry in _subdirs(root):
        if _FLAT_NAME.match(entry.name) and any(
                os.path.isfile(os.path.join(entry.path, f"{s}.tif")) for s in FLAT_NAMES.values()):
            variants.append("patch_folders")
            break
    return variants


def detect_layout(root: str | Path) -> str:
    """``"official"`` or ``"flat"``, from the folders directly under ``root``; a :class:`DataError` when it
    holds neither, or both."""
    root = _require_root(root)
    official, flat = bool(_official_seasons(root)), bool(_flat_variants(root))
    if official and flat:
        raise DataError(root, "holds both the official layout (ROIs*_s1/, ...) and the flat layout "
                              "(s1/, s2_cloudfree/, ... or <name>/s1.tif); give one of them as the root")
    if official:
        return "official"
    if flat:
        return "flat"
    raise DataError(root, f"is neither a SEN12MS-CR official layout ({_OFFICIAL_HINT}) nor a flat one "
                          f"({_FLAT_HINT})")


def flat_variant(root: str | Path) -> str:
    """``"modality_folders"`` or ``"patch_folders"``: how a flat-layout root stores its files."""
    root = _require_root(root)
    variants = _flat_variants(root)
    if len(variants) == 1:
        return variants[0]
    if variants:
        raise DataError(root, "mixes the two flat variants (s1/, s2_cloudfree/, s2_cloudy/ folders and "
                              "per-patch folders <name>/s1.tif); keep one")
    raise DataError(root, f"is not a SEN12MS-CR flat layout ({_FLAT_HINT})")


def _pair(found: dict[Key, dict[str, Path]]) -> tuple[tuple[Triplet, ...], list[Unpaired]]:
    """Complete triplets and the unpaired rest, both sorted by key."""
    triplets, unpaired = [], []
    for key in sorted(found, key=_sort_key):
        files = found[key]
        missing = tuple(m for m in MODALITIES if m not in files)
        if missing:
            name = f"{key[0]}_{key[1]}_p{key[2]}"
            unpaired.append(Unpaired(name, tuple((m, files[m]) for m in MODALITIES if m in files), missing))
        else:
            triplets.append(Triplet(*key, **files))
    return tuple(triplets), unpaired


def _add(found: dict[Key, dict[str, Path]], key: Key, modality: str, path: Path) -> None:
    files = found.setdefault(key, {})
    if modality in files:  # e.g. ROIs1158_spring_1_p5.tif and ROIs1158_spring_s1_1_p5.tif in s1/
        raise DataError(path, f"is a second {modality} file of patch {key[0]}_{key[1]}_p{key[2]} "
                              f"(the first is {files[modality]})")
    files[modality] = path


def _scan_official(root: Path, season: str, mod: str, found: dict[Key, dict[str, Path]],
                   ignored: list[Path]) -> None:
    """Add the files of one modality folder (``ROIs1158_spring_s1``) to ``found``."""
    for roi_dir in _subdirs(root / f"{season}_{mod}"):
        m_roi = _OFFICIAL_ROI.match(roi_dir.name)
        for tif in _tifs(Path(roi_dir.path)):
            m = _OFFICIAL_FILE.match(tif.name)
            # a file is only taken where its name agrees with both folders it lies in
            if m_roi is None or m is None or (m["season"], m["mod"], m_roi["mod"], m_roi["roi"]) != (
                    season, mod, mod, m["roi"]):
                ignored.append(Path(tif.path))
                continue
            _add(found, (season, m["roi"], m["patch"]), mod, Path(tif.path))


def list_official(root: str | Path) -> Listing:
    """The triplets of an official-layout root; a season set lacking one of its three modality folders is a
    :class:`DataError` (a patchwork of season sets is fine: a download may hold only some)."""
    root = _require_root(root)
    seasons = _official_seasons(root)
    if not seasons:
        raise DataError(root, f"holds no official-layout modality folder ({_OFFICIAL_HINT})")
    found: dict[Key, dict[str, Path]] = {}
    ignored: list[Path] = []
    for season, mods in sorted(seasons.items()):
        for mod in MODALITIES:
            if mod not in mods:
                raise DataError(root / f"{season}_{mod}", f"modality folder missing: season set {season} has "
                                                          f"{', '.join(sorted(mods))} but no {mod} folder")
        for mod in MODALITIES:
            _scan_official(root, season, mod, found, ignored)
    triplets, unpaired = _pair(found)
    return _finish(Listing(root, "official", "official", triplets, tuple(unpaired), tuple(ignored)))


def _scan_flat(root: Path, variant: str, found: dict[Key, dict[str, Path]], ignored: list[Path]) -> None:
    if variant == "modality_folders":
        for mod, folder in FLAT_NAMES.items():
            if not (root / folder).is_dir():
                raise DataError(root / folder, f"modality folder missing: the flat layout needs "
                                               f"{', '.join(f + '/' for f in FLAT_NAMES.values())}")
            for tif in _tifs(root / folder):
                m = _FLAT_NAME.match(Path(tif.name).stem)
                if m is None:
                    ignored.append(Path(tif.path))
                else:
                    _add(found, (m["season"], m["roi"], m["patch"]), mod, Path(tif.path))
        return
    for entry in _subdirs(root):
        m = _FLAT_NAME.match(entry.name)
        files = {mod: Path(entry.path) / f"{stem}.tif" for mod, stem in FLAT_NAMES.items()}
        files = {mod: p for mod, p in files.items() if p.is_file()}
        if m is None:
            if files:  # looks like a patch folder, but its name carries no key
                ignored.append(Path(entry.path))
            continue
        for mod, path in files.items():
            _add(found, (m["season"], m["roi"], m["patch"]), mod, path)
        found.setdefault((m["season"], m["roi"], m["patch"]), {})


def list_flat(root: str | Path, csv_file: str | Path | None = None) -> Listing:
    """The triplets of a flat-layout root (either variant), with the splits of its CSV.

    The CSV is ``csv_file`` if given, else ``ROOT/data.csv``, else the only ``*.csv`` directly in ROOT, else
    none.
    A name the CSV lists without its three files is reported as unpaired.
    """
    root = _require_root(root)
    variant = flat_variant(root)
    found: dict[Key, dict[str, Path]] = {}
    ignored: list[Path] = []
    _scan_flat(root, variant, found, ignored)
    triplets, unpaired = _pair(found)
    csv_path = Path(csv_file) if csv_file is not None else _default_csv(root)
    splits: dict[str, str] = {}
    if csv_path is not None:
        rows = read_flat_csv(csv_path)
        have = {t.name for t in triplets} | {u.name for u in unpaired}
        for name, (split, source) in rows.items():
            splits[name] = split
            if name not in have:
                unpaired.append(Unpaired(name, (), MODALITIES, source))
    listing = Listing(root, "flat", variant, triplets, tuple(unpaired), tuple(ignored), csv_path, splits)
    return _finish(listing)


def _default_csv(root: Path) -> Path | None:
    if (root / "data.csv").is_file():
        return root / "data.csv"
    found = sorted(p for p in root.glob("*.csv") if p.is_file())
    return found[0] if len(found) == 1 else None


def read_flat_csv(csv_file: str | Path) -> dict[str, tuple[str, str]]:
    """``{patch name: (split, "FILE row N")}`` from a flat layout's split CSV.

    Rows are ``split, name`` or GLF-CR's ``split, s1 folder, s2 folder, s2_cloudy folder, file name``; the
    split is 1 (train), 2 (val) or 3 (test); a header row is tolerated. Only the standard folder names
    are accepted.
    """
    csv_file = Path(csv_file)
    try:
        with open(csv_file, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh, skipinitialspace=True))  # GLF-CR writes "1, s1, ..."
    except FileNotFoundError:
        raise DataError(csv_file, "split CSV not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(csv_file, f"cannot be read as a CSV file ({exc})") from None
    out: dict[str, tuple[str, str]] = {}
    for i, row in enumerate(rows, start=1):
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        where = f"{csv_file} row {i}"
        if i == 1 and cells[0] not in CSV_SPLITS:
            continue  # a header
        if len(cells) not in (2, 5) or cells[0] not in CSV_SPLITS:
            raise DataError(where, "expected 'split, name' or 'split, s1 folder, s2 folder, s2_cloudy "
                                   "folder, file name' with split 1 (train), 2 (val) or 3 (test)")
        if len(cells) == 5 and tuple(c.strip("/") for c in cells[1:4]) != tuple(FLAT_NAMES.values()):
            raise DataError(where, f"lists folders {', '.join(cells[1:4])}; only the standard flat folders "
                                   f"{', '.join(FLAT_NAMES.values())} are supported")
        stem = Path(cells[-1]).stem if cells[-1].lower().endswith((".tif", ".tiff")) else cells[-1]
        m = _FLAT_NAME.match(stem)
        if m is None:
            raise DataError(where, f"{cells[-1]} is not a SEN12MS-CR patch name "
                                   "(e.g. ROIs1970_fall_139_p839.tif)")
        name = f"{m['season']}_{m['roi']}_p{m['patch']}"
        if name in out:
            raise DataError(where, f"patch {name} is listed twice (first in {out[name][1]})")
        out[name] = (CSV_SPLITS[cells[0]], where)
    return out


def _finish(listing: Listing) -> Listing:
    if not listing.triplets:
        n = len(listing.unpaired)
        extra = f"; {n} unpaired patch(es), e.g. {listing.unpaired[0]}" if n else ""
        raise DataError(listing.root, f"no complete SEN12MS-CR triplet found ({listing.layout} layout)"
                                      f"{extra}")
    return listing


def list_triplets(root: str | Path, layout: str | None = None, csv_file: str | Path | None = None) -> Listing:
    """The triplets under ``root`` in ``layout`` (``"official"`` or ``"flat"``; detected when None)."""
    layout = detect_layout(root) if layout is None else layout
    if layout == "official":
        if csv_file is not None:
            raise DataError(Path(csv_file), "a split CSV belongs to the flat layout; the official layout "
                                            "uses the published split table")
        return list_official(root)
    if layout == "flat":
        return list_flat(root, csv_file)
    raise DataError(Path(root), f"unknown SEN12MS-CR layout {layout!r} (choose from {', '.join(LAYOUTS)})")
