"""SEN12MS-CR files: layouts and pairing (:mod:`.layout`), the published split (:mod:`.splits`), header checks
(:mod:`.checks`, which loads rasterio on first use), value conventions (:mod:`.preprocess`) and s2cloudless cloud
masks (:mod:`.masks`)."""

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

__all__ = ["MASK_SETTINGS", "CloudMasker", "Listing", "Overlap", "Triplet", "Unpaired", "check_triplet",
           "default_cache_dir", "detect_layout", "flat_variant",
           "list_flat", "list_official", "list_triplets", "reference_overlap", "reference_splits_of",
           "select",
           "split_of", "split_table"]


def __getattr__(name: str) -> Any:
    if name == "check_triplet":
        from m3rcr.data.sen12mscr.checks import check_triplet

        return check_triplet
    if name in ("CloudMasker", "MASK_SETTINGS", "default_cache_dir"):
        from m3rcr.data.sen12mscr import masks

        return getattr(masks, name)
    raise AttributeError(f"module 'm3rcr.data.sen12mscr' has no attribute {name!r}")
