"""A split at a glance (``m3rcr info``): samples, AOIs and seasons; with a check, every sample read."""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from m3rcr.data.datasets import M3RCRDataset
from m3rcr.data.preprocess import CLOUD_COVER_BINS, class_names, cover_bin_label
from m3rcr.errors import DataError
from m3rcr.utils.progress import progress as progress_bar


@dataclass
class SplitCheck:
    """What reading every sample of a split found."""

    cloud_cover_bins: dict[str, int] = field(default_factory=dict)  #: samples per tile cloud-cover bin
    landcover_percent: dict[str, float] = field(default_factory=dict)  #: share of pixels per class (> 0 only)
    warnings: list[str] = field(default_factory=list)  #: data warnings raised while reading
    problems: list[str] = field(default_factory=list)  #: samples that could not be read, one error each


@dataclass
class SplitSummary:
    """A split's size, AOIs and seasons, and the check's findings when one ran."""

    root: str
    split: str
    samples: int
    aois: int
    seasons: dict[str, int]
    check: SplitCheck | None = None

    def as_dict(self) -> dict[str, Any]:
        """Flat, JSON-ready: the check's fields follow the counts, and are absent without a check."""
        out: dict[str, Any] = dict(root=self.root, split=self.split, samples=self.samples, aois=self.aois,
                                   seasons=self.seasons)
        if self.check is not None:
            out.update(cloud_cover_bins=self.check.cloud_cover_bins,
                       landcover_percent=self.check.landcover_percent, warnings=self.check.warnings,
                       problems=self.check.problems)
        return out


def summarize_split(ds: M3RCRDataset, *, check: bool = False, progress: bool = False) -> SplitSummary:
    """Count ``ds``'s samples, AOIs and seasons (from the file lists); with ``check``, read every sample."""
    return SplitSummary(root=str(ds.root), split=ds.split, samples=len(ds), aois=len({s.aoi for s in ds.samples}),
                        seasons=dict(Counter(s.aoi.split("_")[0] for s in ds.samples)),
                        check=check_split(ds, progress=progress) if check else None)


def check_split(ds: M3RCRDataset, *, progress: bool = False) -> SplitCheck:
    """Read every sample: the ones that fail, the warnings, cloud-cover bins and land-cover shares."""
    result = SplitCheck()
    bins: Counter[str] = Counter()
    names = [*class_names(ds.landcover_level), "no data"]
    classes = np.zeros(len(names), dtype=np.int64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in progress_bar(range(len(ds)), desc="check", unit="sample", enabled=progress):
            try:
                sample = ds[i]
            except DataError as exc:
                result.problems.append(str(exc))
                continue
            bins[cover_bin_label(sample["cloud_cover_tile"])] += 1
            lc = sample["landcover"].numpy().ravel()
            classes += np.bincount(np.minimum(lc, len(classes) - 1), minlength=len(classes))[: len(classes)]
    result.cloud_cover_bins = {b: bins.get(b, 0) for b in CLOUD_COVER_BINS}
    total = max(int(classes.sum()), 1)
    result.landcover_percent = {n: round(100 * int(c) / total, 2) for n, c in zip(names, classes) if c}
    result.warnings = [str(w.message) for w in caught]
    return result
