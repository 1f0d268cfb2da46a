"""The SEN12MS-CR dataset: Sentinel-1, cloud-free and cloudy Sentinel-2 L1C on one 10 m grid.

Items follow the contract of :class:`~m3rcr.data.datasets.base.CloudRemovalDataset`, so every model, the training
loop and the reports take them as they take M3R-CR's. The dataset ships no cloud masks and no land cover: masks
come from s2cloudless on the cloudy image (cached on disk, :mod:`m3rcr.data.sen12mscr.masks`), and ``landcover``
is all 0 (class ``none``).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch

from m3rcr.data import io
from m3rcr.data.datasets.base import DATASETS, BandGroup, CloudRemovalDataset, DatasetSpec, Sampling
from m3rcr.data.datasets.m3rcr import affine_to_tensor
from m3rcr.data.sar_units import check_sar_units
from m3rcr.data.sen12mscr.layout import LAYOUTS, Listing, Triplet, list_triplets
from m3rcr.data.sen12mscr.preprocess import S1_BANDS, S2_BANDS, S2_DN_SCALE, band_indices, convention
from m3rcr.data.sen12mscr.splits import SPLITS, select
from m3rcr.data.transforms import crop_and_augment
from m3rcr.errors import DataError, DataWarning

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from m3rcr.data.sen12mscr.masks import CloudMasker

CloudMasks = Literal["s2cloudless", "none"]
#: the split names a SEN12MS-CR dataset takes: the published three, and every triplet of the root
SPLIT_NAMES: tuple[str, ...] = (*SPLITS, "all")
_S1_ADVICE = {"linear": "SEN12MS-CR S1 files hold sigma0 in dB: convert linear power with 10 * log10(value)"}


def split_triplets(listing: Listing, split: str, *, reference_compatible: bool = False) -> list[Triplet]:
    """The triplets of ``split`` in a listing: by the flat layout's CSV when it has one, else by the published
    split (ROI folders matched exactly, or by the reference loader's substring rule with
    ``reference_compatible``); ``all`` is every triplet."""
    if split not in SPLIT_NAMES:
        raise ValueError(f"unknown SEN12MS-CR split {split!r} (choose from {', '.join(SPLIT_NAMES)})")
    if split == "all":
        return list(listing.triplets)
    if listing.csv_splits:
        if reference_compatible:
            raise DataError(listing.csv_file or listing.root, "reference_compatible applies to the published "
                                                              "split; this flat layout's CSV gives its own")
        return [t for t in listing.triplets if listing.csv_split_of(t) == split]
    return select(listing.triplets, split, reference_compatible=reference_compatible)


@DATASETS.register("sen12mscr")
class SEN12MSCRDataset(CloudRemovalDataset):
    """One split of SEN12MS-CR, in the official release layout or the flat GLF-CR / DSen2-CR layout.

    Each item is a dict:

    ====================  ==================================================================================
    ``cloudy``            (C, H, W) float32, the cloudy S2 bands picked by ``bands``, scaled by ``preprocessing``
    ``cloudfree``         (C, H, W) float32, the cloud-free S2, scaled alike
    ``sar``               (2, H, W) float32, S1 VV and VH scaled by ``preprocessing``
    ``landcover``         (H, W) int64, all 0 (SEN12MS-CR has no land-cover map)
    ``cloudmask``         (H, W) float32, 1 = cloudy (s2cloudless on all 13 cloudy bands; 0 with masks ``none``)
    ``cloud_cover``       float, cloudy fraction of the returned mask (NaN with masks ``none``)
    ``cloud_cover_tile``  float, cloudy fraction of the whole patch (NaN with masks ``none``)
    ``name``              str, e.g. ``ROIs1970_fall_139_p839``
    ``crs``, ``transform``  the (shared) grid of the returned arrays
    ====================  ==================================================================================

    Args:
        root: the dataset folder.
        split: ``train``, ``val``, ``test`` (the published split, or the flat layout's CSV) or ``all``.
        files: a flat layout's split CSV, or the triplets themselves (e.g. from :meth:`list_files`).
        sampling: crop and augmentation (default: whole patches).
        layout: ``official`` or ``flat``; detected when None.
        preprocessing: ``default`` (UnCRtainTS), ``resnet`` (DSen2-CR) or ``glfcr`` (see
            :mod:`m3rcr.data.sen12mscr.preprocess`).
        bands: the S2 bands items carry: ``all`` (13), ``rgbn``, ``rgb`` or a list of names such as
            ``[B2, B3, B4, B8]``, in the order given.
        reference_compatible: select the published split by the reference loader's substring rule, which also
            puts patches of 6 test and 3 val ROIs into train; only to compare with published numbers.
        cloud_masks: ``s2cloudless`` (needs the ``m3rcr[s2cloudless]`` extra) or ``none``.
        mask_cache: folder of cached masks; None: ``ROOT/.m3rcr_cache/s2cloudless`` (or a per-user cache
            folder when ROOT is read-only); ``off``: compute every time.
    """

    spec: ClassVar[DatasetSpec] = DatasetSpec(
        name="sen12mscr",
        groups=(BandGroup("optical", S2_BANDS, 10.0), BandGroup("sar", S1_BANDS, 10.0),
                BandGroup("mask", ("cloud",), 10.0)),
        rgb=("B4", "B3", "B2"),
        nir="B8",
        landcover_classes=("none",),
        optical_scale=S2_DN_SCALE,
        sar_db_range={"VV": (-25.0, 0.0), "VH": (-25.0, 0.0)},
        protocol="sen12mscr",
    )

    def __init__(
        self,
        root: str | Path,
        split: str = "test",
        files: str | Path | Sequence[Triplet] | None = None,
        *,
        sampling: Sampling | None = None,
        layout: str | None = None,
        preprocessing: str = "default",
        bands: str | Sequence[str] | None = "all",
        reference_compatible: bool = False,
        cloud_masks: CloudMasks = "s2cloudless",
        mask_cache: str | Path | None = None,
    ) -> None:
        if cloud_masks not in ("s2cloudless", "none"):
            raise ValueError(f"cloud_masks must be one of ('s2cloudless', 'none'), got {cloud_masks!r}")
        if layout not in (None, *LAYOUTS):
            raise ValueError(f"layout must be one of {LAYOUTS} (or null: detected), got {layout!r}")
        if not isinstance(reference_compatible, bool):
            raise ValueError(f"reference_compatible must be true or false, got {reference_compatible!r}")
        if mask_cache is not None and not isinstance(mask_cache, str | Path):
            raise ValueError(f"mask_cache must be a folder, 'off' or null, got {mask_cache!r}")
        super().__init__(split, sampling)
        self.root = Path(root)
        self.layout = layout
        self.preprocessing = preprocessing
        self.convention = convention(preprocessing)
        self.band_index = band_indices(bands if bands is None or isinstance(bands, str) else tuple(bands))
        self.bands = tuple(S2_BANDS[i] for i in self.band_index)
        self.reference_compatible = reference_compatible
        self.cloud_masks = cloud_masks
        self.mask_cache = mask_cache
        self.spec = self.spec_for(self.bands, preprocessing)
        if files is None or isinstance(files, str | Path):
            files = self.list_files(root, split, files, layout=layout, reference_compatible=reference_compatible)
        self.samples: list[Triplet] = list(files)
        self._masker: CloudMasker | None = None

    @classmethod
    def spec_for(cls, bands: Sequence[str], preprocessing: str) -> DatasetSpec:
        """The spec of items with these S2 ``bands`` under ``preprocessing``."""
        conv = convention(preprocessing)
        rgb = cls.spec.rgb if set(cls.spec.rgb) <= set(bands) else (tuple(bands) * 3)[:3]
        groups = (BandGroup("optical", tuple(bands), 10.0), *cls.spec.groups[1:])
        db = dict(zip(S1_BANDS, conv.s1_db_range))
        return dataclasses.replace(cls.spec, groups=groups, rgb=rgb, nir="B8" if "B8" in bands else None,
                                   sar_db_range=db, reflectance_per_unit=conv.reflectance_per_unit)

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, samples={len(self)}, "
                f"preprocessing={self.preprocessing!r}, bands={len(self.bands)}, sampling={self.sampling})")

    @classmethod
    def list_files(cls, root: str | Path, split: str, csv: str | Path | None = None, **options: Any
                   ) -> list[Triplet]:
        """The triplets of ``split`` (see :func:`split_triplets`); ``options`` may give ``layout`` and
        ``reference_compatible``. Unpaired patches are skipped with a warning that lists them; an empty split
        is a DataError."""
        listing = list_triplets(root, options.get("layout"), csv)
        if listing.unpaired:
            report = listing.unpaired_report().splitlines()
            more = f"\n... and {len(report) - 5} more" if len(report) > 5 else ""
            warnings.warn(f"{root}: {len(report)} patch(es) without all three files skipped:\n"
                          + "\n".join(report[:5]) + more, DataWarning, stacklevel=2)
        try:
            picked = split_triplets(listing, split, reference_compatible=bool(options.get("reference_compatible")))
        except ValueError as exc:
            raise DataError(root, str(exc)) from None
        if not picked:
            how = f"the split CSV {listing.csv_file}" if listing.csv_splits else "the published split"
            raise DataError(root, f"no triplet of split {split!r} by {how} ({len(listing.triplets)} triplet(s) in "
                                  f"the {listing.layout} layout; split 'all' takes every one)")
        return picked

    @classmethod
    def holdout_group(cls, files: Triplet) -> str:
        """SEN12MS-CR holds out whole ROIs (the patches of one ROI overlap in place and time)."""
        return files.roi_folder

    @property
    def names(self) -> list[str]:
        """Patch names in dataset order."""
        return [t.name for t in self.samples]

    # ------------------------------------------------------------------ reading
    def read_raw(self, index: int) -> dict[str, Any]:
        """The triplet's rasters as stored (S2 in DN, S1 in dB), with the grids checked to agree exactly."""
        t = self.samples[index]
        cloudy = io.read_geotiff(t.s2_cloudy, what="cloudy Sentinel-2 L1C image", bands=len(S2_BANDS))
        cloudfree = io.read_geotiff(t.s2, what="cloud-free Sentinel-2 L1C image", bands=len(S2_BANDS),
                                    size=cloudy.shape)
        s1 = io.read_geotiff(t.s1, what="Sentinel-1 image (VV, VH in dB)", bands=len(S1_BANDS), size=cloudy.shape)
        for raster in (cloudfree, s1):
            if raster.crs != cloudy.crs or not raster.transform.almost_equals(cloudy.transform, 1e-9):
                raise DataError(raster.path, f"grid (CRS and transform) differs from the cloudy image {t.s2_cloudy}; "
                                             "the three files of a SEN12MS-CR patch share one grid")
        check_sar_units(s1.array, "db", t.s1, nodata=s1.nodata, advice=_S1_ADVICE, what="Sentinel-1", fill=False)
        return {"triplet": t, "cloudy": cloudy, "cloudfree": cloudfree, "sar": s1}

    def cloud_mask(self, cloudy_dn: np.ndarray, triplet: Triplet) -> np.ndarray | None:
        """The s2cloudless mask (H, W) of a patch's 13 cloudy bands in DN (None with ``cloud_masks="none"``)."""
        if self.cloud_masks == "none":
            return None
        if self._masker is None:  # built on first use, so that each DataLoader worker makes its own
            from m3rcr.data.sen12mscr.masks import CloudMasker, default_cache_dir

            cache = self.mask_cache
            folder = None if str(cache) == "off" else (default_cache_dir(self.root) if cache is None else Path(cache))
            self._masker = CloudMasker(folder)
        return self._masker(cloudy_dn, triplet.name, triplet.s2_cloudy)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        raw = self.read_raw(index)
        t: Triplet = raw["triplet"]
        cloudy_r: io.Raster = raw["cloudy"]
        conv, pick = self.convention, list(self.band_index)
        mask = self.cloud_mask(cloudy_r.array, t)
        arrays = {"cloudy": conv.scale_s2(cloudy_r.array[pick]), "cloudfree": conv.scale_s2(raw["cloudfree"].array[pick]),
                  "sar": conv.scale_s1(raw["sar"].array),
                  "cloudmask": np.zeros(cloudy_r.shape, np.float32) if mask is None else mask.astype(np.float32),
                  "landcover": np.zeros(cloudy_r.shape, np.int64)}
        s = self.sampling
        try:
            arrays, transform = crop_and_augment(arrays, cloudy_r.transform, size=s.crop_size, mode=s.crop,
                                                 augment=s.augment, rng=self.item_rng(index))
        except ValueError as exc:
            raise DataError(t.s2_cloudy, str(exc)) from None
        out = {k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in arrays.items()}
        return {
            **out,
            "cloud_cover": math.nan if mask is None else float(arrays["cloudmask"].mean()),
            "cloud_cover_tile": math.nan if mask is None else float(mask.mean()),
            "name": t.name,
            "crs": cloudy_r.crs.to_string() if cloudy_r.crs is not None else "",
            "transform": affine_to_tensor(transform),
        }

    def plot(self, sample: dict[str, Any], prediction: torch.Tensor | np.ndarray | None = None, **kwargs: Any
             ) -> Figure:
        """Figure of a sample (and optionally a prediction) in true colour (B4, B3, B2) with the S1 VV band and
        the s2cloudless mask; see :func:`m3rcr.data.plot.plot_sample`."""
        from m3rcr.data.plot import plot_sample

        kwargs.setdefault("sar_max", self.convention.s1_max)  # resnet scales S1 to [0, 2]
        return plot_sample(sample, prediction, spec=self.spec, landcover_level=None, **kwargs)
