"""The published SEN12MS-CR split (155 train / 10 val / 10 test ROI folders, from the UnCRtainTS loader).

:func:`split_of` matches ROI folders exactly. The reference loader instead selects a patch for a split when
any listed ROI string is a *substring* of the patch's path, so ``ROIs1158_spring_s1/s1_1`` (train) also takes
``ROIs1158_spring_s1/s1_106/...`` (test). :func:`reference_splits_of` and
``select(..., reference_compatible=True)`` reproduce that rule, only so that numbers can be compared with
published ones; :func:`reference_overlap` reports the val and test ROIs it leaks into train.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from m3rcr.data.sen12mscr.layout import Triplet
from m3rcr.errors import DataError

SPLITS: tuple[str, ...] = ("train", "val", "test")
_TABLE = "splits.tsv"


@lru_cache(maxsize=1)
def split_table() -> dict[str, tuple[str, ...]]:
    """``{split: ROI folders}`` of the published split, in the table's order."""
    where = f"{__package__}/{_TABLE}"
    text = resources.files(__package__).joinpath(_TABLE).read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text), delimiter="\t"))
    if not rows or rows[0] != ["split", "roi_folder"]:
        raise DataError(where, "expected the header 'split<TAB>roi_folder'")
    table: dict[str, list[str]] = {s: [] for s in SPLITS}
    seen: set[str] = set()
    for i, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2 or row[0] not in table:
            raise DataError(f"{where} row {i}", f"expected a split ({', '.join(SPLITS)}) and a ROI folder")
        if row[1] in seen:
            raise DataError(f"{where} row {i}", f"ROI folder {row[1]} is listed twice")
        seen.add(row[1])
        table[row[0]].append(row[1])
    return {s: tuple(f) for s, f in table.items()}


@lru_cache(maxsize=1)
def _split_by_folder() -> dict[str, str]:
    return {folder: split for split, folders in split_table().items() for folder in folders}


def split_of(triplet: Triplet) -> str | None:
    """The published split of ``triplet``, by exact ROI folder; None for a ROI the table does not list."""
    return _split_by_folder().get(triplet.roi_folder)


def reference_path(triplet: Triplet) -> str:
    """The path the reference loader matches ROI strings against: the S1 file's, relative to an official
    root."""
    return f"{triplet.roi_folder}/{triplet.season}_s1_{triplet.roi}_p{triplet.patch}.tif"


def reference_splits_of(triplet: Triplet) -> tuple[str, ...]:
    """Every split the reference loader's substring rule puts ``triplet`` into (none, one, or several)."""
    path = reference_path(triplet)
    return tuple(s for s, folders in split_table().items() if any(f in path for f in folders))


def select(triplets: Iterable[Triplet], split: str, *, reference_compatible: bool = False) -> list[Triplet]:
    """The triplets of ``split``: by exact ROI folder, or, with ``reference_compatible``, by the reference
    loader's substring rule (which puts some val and test patches into train as well: see
    :func:`reference_overlap`)."""
    if split not in SPLITS:
        raise ValueError(f"unknown SEN12MS-CR split {split!r} (choose from {', '.join(SPLITS)})")
    if reference_compatible:
        return [t for t in triplets if split in reference_splits_of(t)]
    return [t for t in triplets if split_of(t) == split]


@dataclass(frozen=True)
class Overlap:
    """A val or test ROI whose patches the reference loader also puts into train, and the train ROIs that
    take it."""

    split: str
    roi_folder: str
    train_rois: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.split} ROI {self.roi_folder} also lands in train (via {', '.join(self.train_rois)})"


def _triplet_of_folder(folder: str) -> Triplet:
    season_mod, roi_dir = folder.split("/")
    # the patch number cannot matter: a ROI string contains a "/", so it can only match across the folder part
    return Triplet(season_mod.removesuffix("_s1"), roi_dir.removeprefix("s1_"), "0", *((Path(),) * 3))


def reference_overlap() -> tuple[Overlap, ...]:
    """The val and test ROIs whose patches the reference loader's substring rule also selects for train."""
    train = split_table()["train"]
    out = []
    for split in ("val", "test"):
        for folder in split_table()[split]:
            path = reference_path(_triplet_of_folder(folder))
            hits = tuple(t for t in train if t in path)
            if hits:
                out.append(Overlap(split, folder, hits))
    return tuple(out)
