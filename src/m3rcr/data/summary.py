"""A split at a glance (``m3rcr info``): samples, AOIs (ROIs) and seasons; with a check, every sample read.

Works for every registered dataset: the counts come from the dataset's file records (its hold-out groups are
the AOIs, or SEN12MS-CR's ROI folders). SEN12MS-CR adds what its listing knows (layout, unpaired patches,
where the split comes from) and its check also reads every triplet's headers (band counts, CRS, one shared
grid) and, with cloud masks, reports the mean cloud cover.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from m3rcr.data.datasets import CloudRemovalDataset, SEN12MSCRDataset
from m3rcr.data.preprocess import CLOUD_COVER_BINS, cover_bin_label
from m3rcr.errors import DataError
from m3rcr.utils.progress import progress as progress_bar


@dataclass
class SplitCheck:
    """What reading every sample of a split found."""

    cloud_cover_bins: dict[str, int] | None = field(default_factory=dict)  #: samples per tile cloud-cover bin
    landcover_percent: dict[str, float] | None = field(default_factory=dict)  #: share of pixels per class (> 0)
    warnings: list[str] = field(default_factory=list)  #: data warnings raised while reading
    problems: list[str] = field(default_factory=list)  #: samples that could not be read, one error each
    #: mean cloud cover of the samples read (datasets whose masks are computed, not shipped: SEN12MS-CR)
    mean_cloud_cover: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The fields that apply (a dataset without land cover or without masks has none of those)."""
        out: dict[str, Any] = {}
        if self.cloud_cover_bins is not None:
            out["cloud_cover_bins"] = self.cloud_cover_bins
        if self.mean_cloud_cover is not None:
            out["mean_cloud_cover"] = self.mean_cloud_cover
        if self.landcover_percent is not None:
            out["landcover_percent"] = self.landcover_percent
        return {**out, "warnings": self.warnings, "problems": self.problems}


@dataclass
class SplitSummary:
    """A split's size, groups (AOIs or ROIs) and seasons, dataset-specific facts, and the check's findings."""

    root: str
    split: str
    samples: int
    aois: int  #: hold-out groups: M3R-CR's AOIs, SEN12MS-CR's ROI folders
    seasons: dict[str, int]
    check: SplitCheck | None = None
    dataset: str = "m3rcr"
    groups_name: str = "aois"  #: the key ``aois`` is printed under
    details: dict[str, Any] = field(default_factory=dict)  #: facts of the dataset's listing (SEN12MS-CR)

    def as_dict(self) -> dict[str, Any]:
        """Flat, JSON-ready: the check's fields follow the counts, and are absent without a check. M3R-CR's
        keys are root, split, samples, aois, seasons (as before other datasets came)."""
        head: dict[str, Any] = {} if self.dataset == "m3rcr" else {"dataset": self.dataset}
        out: dict[str, Any] = dict(**head, root=self.root, split=self.split, samples=self.samples,
                                   **{self.groups_name: self.aois}, seasons=self.seasons, **self.details)
        if self.check is not None:
            out.update(self.check.as_dict())
        return out


def _season(files: Any) -> str:
    """The season of a file record: SEN12MS-CR's season set ``ROIs1970_fall`` -> ``fall``; M3R-CR's AOI
    ``fall_1`` -> ``fall``."""
    season = getattr(files, "season", None)
    if season is not None:
        return str(season).split("_")[-1]
    return str(files.aoi).split("_")[0]


def summarize_split(ds: CloudRemovalDataset, *, check: bool = False, progress: bool = False,
                    csv: str | Path | None = None) -> SplitSummary:
    """Count ``ds``'s samples, hold-out groups and seasons (from the file lists); with ``check``, read every
    sample. ``csv``: the split CSV ``ds`` was opened with (SEN12MS-CR's flat layout), to report it."""
    samples: list[Any] = list(getattr(ds, "samples", []))
    is_s12 = isinstance(ds, SEN12MSCRDataset)
    return SplitSummary(
        root=str(getattr(ds, "root", "")), split=ds.split, samples=len(ds),
        aois=len({type(ds).holdout_group(s) for s in samples}),
        seasons=dict(Counter(_season(s) for s in samples)),
        check=check_split(ds, progress=progress) if check else None,
        dataset=ds.spec.name, groups_name="rois" if is_s12 else "aois",
        details=sen12mscr_details(ds, csv) if is_s12 else {})


def sen12mscr_details(ds: SEN12MSCRDataset, csv: str | Path | None = None) -> dict[str, Any]:
    """What SEN12MS-CR's listing says about a split: layout, the split's source (and the overlap a
    reference-compatible split creates), preprocessing, bands, masks, unpaired and ignored files."""
    from m3rcr.data.sen12mscr import list_triplets, reference_overlap, reference_splits_of

    listing = list_triplets(ds.root, ds.layout, csv)
    layout = "official" if listing.layout == "official" else f"flat ({listing.variant})"
    out: dict[str, Any] = {"layout": layout}
    if ds.split == "all":
        out["split_source"] = "every triplet of the root (no split)"
    elif listing.csv_splits:
        out["split_source"] = f"split CSV {listing.csv_file} (1 = train, 2 = val, 3 = test)"
    elif ds.reference_compatible:
        leaked = reference_overlap()
        out["split_source"] = ("published split, reference-compatible (the reference loader's substring rule; "
                               f"{len(leaked)} val/test ROIs also land in train): not the exact split")
        here = sum(len(reference_splits_of(t)) > 1 for t in ds.samples)
        out["reference_overlap"] = [str(o) for o in leaked]
        out["overlap_patches"] = f"{here} of this split's {len(ds)} patches belong to more than one split"
    else:
        out["split_source"] = "published split, ROI folders matched exactly (155 train, 10 val, 10 test ROIs)"
    masks = "none" if ds.cloud_masks == "none" else f"s2cloudless (cache: {ds.mask_cache or 'default'})"
    out.update(preprocessing=ds.preprocessing, bands=" ".join(ds.bands), cloud_masks=masks,
               unpaired=[str(u) for u in listing.unpaired])
    if listing.ignored:
        out["ignored"] = [str(p) for p in listing.ignored]
    return out


def _header_check(ds: CloudRemovalDataset) -> Callable[[Any], Any] | None:
    """A check of one file record's headers, for datasets that have one (SEN12MS-CR's triplets)."""
    if isinstance(ds, SEN12MSCRDataset):
        from m3rcr.data.sen12mscr import check_triplet

        return check_triplet
    return None


def check_split(ds: CloudRemovalDataset, *, progress: bool = False) -> SplitCheck:
    """Read every sample: the ones that fail (each problem names its file), the warnings, cloud-cover bins
    and land-cover shares (datasets with land cover), and the mean cloud cover (SEN12MS-CR with masks)."""
    from m3rcr.data.sen12mscr.masks import S2CloudlessUnavailable

    result = SplitCheck()
    bins: Counter[str] = Counter()
    covers: list[float] = []
    has_landcover = any(g.role == "landcover" for g in ds.spec.groups)
    names = [*ds.spec.landcover_classes, "no data"]
    classes = np.zeros(len(names), dtype=np.int64)
    headers = _header_check(ds)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in progress_bar(range(len(ds)), desc="check", unit="sample", enabled=progress):
            try:
                if headers is not None:
                    headers(ds.samples[i])  # type: ignore[attr-defined]
                sample = ds[i]
            except S2CloudlessUnavailable:
                raise  # the same for every sample: one error, not one problem per sample
            except DataError as exc:
                result.problems.append(str(exc))
                continue
            cover = float(sample["cloud_cover_tile"])
            if math.isfinite(cover):  # SEN12MS-CR without masks has none
                bins[cover_bin_label(cover)] += 1
                covers.append(cover)
            if has_landcover:
                lc = sample["landcover"].numpy().ravel()
                classes += np.bincount(np.minimum(lc, len(classes) - 1), minlength=len(classes))[: len(classes)]
    masks_computed = isinstance(ds, SEN12MSCRDataset)
    if masks_computed and ds.cloud_masks == "none":  # type: ignore[attr-defined]
        result.cloud_cover_bins = None
    else:
        result.cloud_cover_bins = {b: bins.get(b, 0) for b in CLOUD_COVER_BINS}
    if masks_computed and covers:
        result.mean_cloud_cover = round(float(np.mean(covers)), 4)
    if has_landcover:
        total = max(int(classes.sum()), 1)
        result.landcover_percent = {n: round(100 * int(c) / total, 2) for n, c in zip(names, classes) if c}
    else:
        result.landcover_percent = None
    result.warnings = [str(w.message) for w in caught]
    return result
