"""The official M3R-CR folder and CSV layout.

A dataset root holds one folder per split and, optionally, one header-less CSV per split::

    ROOT/train.csv
    ROOT/train/planet_cloudy_fall/planet_cloudy_fall_1/planet_cloudy_fall_1_p_457.tif
    ROOT/train/planet_cloudfree_fall/...  S1_fall/...  landcover_fall/...  cloudmask_fall/... (.npy)

Every CSV row lists, in this order and relative to the split folder: cloud-free, cloudy, S1,
land-cover and cloud-mask paths. Without a CSV the split folder is scanned.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

from m3rcr.errors import DataError

#: The five files of a sample, in CSV column order.
KINDS: tuple[str, ...] = ("planet_cloudfree", "planet_cloudy", "S1", "landcover", "cloudmask")
#: File extension of each kind.
EXTENSIONS: dict[str, str] = {
    "planet_cloudfree": "tif",
    "planet_cloudy": "tif",
    "S1": "tif",
    "landcover": "tif",
    "cloudmask": "npy",
}
#: Field names of :class:`SampleFiles` for each kind.
FIELDS: dict[str, str] = {
    "planet_cloudfree": "cloudfree",
    "planet_cloudy": "cloudy",
    "S1": "sar",
    "landcover": "landcover",
    "cloudmask": "cloudmask",
}

_NAME_RE = re.compile(r"^(?P<kind>planet_cloudfree|planet_cloudy|S1|landcover|cloudmask)_"
                      r"(?P<season>[A-Za-z0-9]+)_(?P<aoi>[A-Za-z0-9-]+)_p_(?P<patch>[A-Za-z0-9-]+)$")


@dataclass(frozen=True)
class SampleFiles:
    """Absolute paths of one sample's five files, plus where the sample was listed."""

    cloudfree: Path
    cloudy: Path
    sar: Path
    landcover: Path
    cloudmask: Path
    source: str = ""  # "train.csv row 3" or the scanned folder; used in error messages

    @property
    def name(self) -> str:
        """Sample name without the modality prefix, e.g. ``fall_1_p_457``."""
        return sample_name(self.cloudy)

    @property
    def aoi(self) -> str:
        """Area-of-interest key, e.g. ``fall_1``; samples of one AOI must stay in one split."""
        m = _NAME_RE.match(self.cloudy.stem)
        return f"{m['season']}_{m['aoi']}" if m else self.cloudy.parent.name

    def paths(self) -> dict[str, Path]:
        """The five paths keyed by field name."""
        return {f: getattr(self, f) for f in FIELDS.values()}


def sample_name(path: str | Path) -> str:
    """Name of the sample a file belongs to: its stem without the ``planet_cloudy_``-style prefix."""
    stem = Path(path).stem
    m = _NAME_RE.match(stem)
    return f"{m['season']}_{m['aoi']}_p_{m['patch']}" if m else stem


def relative_paths(season: str, aoi: str | int, patch: str | int) -> list[str]:
    """The five CSV entries of a sample, relative to its split folder, in CSV column order."""
    out = []
    for kind in KINDS:
        folder = f"{kind}_{season}"
        out.append(f"{folder}/{folder}_{aoi}/{folder}_{aoi}_p_{patch}.{EXTENSIONS[kind]}")
    return out


def split_paths(root: str | Path, split: str, csv_file: str | Path | None = None) -> tuple[Path, Path]:
    """The split folder and the CSV that lists it (``ROOT/<split>.csv`` unless ``csv_file`` is given)."""
    root = Path(root)
    return root / split, Path(csv_file) if csv_file is not None else root / f"{split}.csv"


def read_csv(csv_file: str | Path, split_dir: str | Path) -> list[SampleFiles]:
    """Read a header-less 5-column split list; paths are relative to ``split_dir`` (or absolute)."""
    csv_file, split_dir = Path(csv_file), Path(split_dir)
    try:
        # utf-8-sig: spreadsheet programs often start CSV files with a byte-order mark
        with open(csv_file, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except FileNotFoundError:
        raise DataError(csv_file, "split list not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(csv_file, f"cannot be read as a CSV file ({exc})") from None
    samples = []
    first_row: dict[str, int] = {}
    for i, row in enumerate(rows, start=1):
        if not row or all(not c.strip() for c in row):
            continue  # tolerate blank lines, e.g. a trailing one
        if len(row) != len(KINDS):
            raise DataError(
                f"{csv_file} row {i}",
                f"expected {len(KINDS)} columns (cloud-free, cloudy, S1, land cover, cloud mask), found {len(row)}",
            )
        if i == 1 and not row[0].strip().lower().endswith((".tif", ".tiff")):
            raise DataError(f"{csv_file} row 1", "looks like a header; M3R-CR split lists have none")
        for col, (kind, cell) in enumerate(zip(KINDS, row), start=1):
            m = _NAME_RE.match(Path(cell.strip()).stem)
            if m and m["kind"] != kind:  # names outside the official scheme are not checked
                raise DataError(f"{csv_file} row {i}", f"column {col} must be the {kind} file, found "
                                                       f"{Path(cell.strip()).name} (columns: {', '.join(KINDS)})")
        paths = [split_dir / c.strip() for c in row]
        sample = SampleFiles(*paths, source=f"{csv_file} row {i}")
        if sample.name in first_row:  # listed twice, it would be scored (and trained on) twice
            raise DataError(f"{csv_file} row {i}", f"sample {sample.name} is listed twice (first in row "
                                                   f"{first_row[sample.name]})")
        first_row[sample.name] = i
        samples.append(sample)
    if not samples:
        raise DataError(csv_file, "lists no samples")
    return samples


def scan_split(split_dir: str | Path) -> list[SampleFiles]:
    """Find the samples of a split folder from its ``planet_cloudy_*`` files, sorted by path."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise DataError(split_dir, "split folder not found")
    samples = []
    for cloudy in sorted(split_dir.glob("planet_cloudy_*/planet_cloudy_*/planet_cloudy_*.tif")):
        m = _NAME_RE.match(cloudy.stem)
        if m is None:
            continue
        rel = relative_paths(m["season"], m["aoi"], m["patch"])
        samples.append(SampleFiles(*(split_dir / r for r in rel), source=f"scan of {split_dir}"))
    if not samples:
        raise DataError(split_dir, "no samples found (expected planet_cloudy_<season>/planet_cloudy_<season>_<aoi>/"
                                   "planet_cloudy_<season>_<aoi>_p_<patch>.tif)")
    return samples


def list_split(root: str | Path, split: str, csv_file: str | Path | None = None) -> list[SampleFiles]:
    """The samples of a split: from ``csv_file``, else ``ROOT/<split>.csv``, else by scanning ``ROOT/<split>/``."""
    split_dir, csv_path = split_paths(root, split, csv_file)
    if csv_file is not None or csv_path.is_file():
        return read_csv(csv_path, split_dir)
    if not split_dir.is_dir():
        raise DataError(Path(root), f"has neither {split}.csv nor a {split}/ folder")
    return scan_split(split_dir)


def check_files_exist(samples: list[SampleFiles]) -> None:
    """Raise a :class:`DataError` naming the first missing file and the row that lists it."""
    for s in samples:
        for field, path in s.paths().items():
            if not os.path.isfile(path):
                raise DataError(path, f"missing {field} file (listed in {s.source})")


def write_csv(csv_file: str | Path, rows: list[list[str]]) -> None:
    """Write a header-less split list atomically."""
    from m3rcr.utils.files import atomic_path

    with atomic_path(csv_file) as tmp, open(tmp, "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)
