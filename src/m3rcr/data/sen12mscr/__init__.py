"""SEN12MS-CR files: layouts and pairing (:mod:`.layout`), the published split (:mod:`.splits`) and header
checks (:mod:`.checks`, which loads rasterio on first use)."""

from typing import Any

from m3rcr.data.sen12mscr.layout import (
    Listing,
    Triplet,
    Unpaired,
    detect_layout,
    flat_variant,
    list_flat,
    list_official,
    list_triplets,
)
from m3rcr.data.sen12mscr.splits import (
    Overlap,
    reference_overlap,
    reference_splits_of,
    select,
    split_of,
    split_table,
)

__all__ = ["Listing", "Overlap", "Triplet", "Unpaired", "check_triplet", "detect_layout", "flat_variant",
           "list_flat", "list_official", "list_triplets", "reference_overlap", "reference_splits_of",
           "select",
           "split_of", "split_table"]


def __getattr__(name: str) -> Any:
    if name == "check_triplet":
        from m3rcr.data.sen12mscr.checks import check_triplet

        return check_triplet
    raise AttributeError(f"module 'm3rcr.data.sen12mscr' has no attribute {name!r}")
