"""The M3R-CR dataset: cloudy and cloud-free PlanetScope, Sentinel-1, WorldCover and cloud masks."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from affine import Affine

from m3rcr.data import io
from m3rcr.data.datasets.base import (
    DATASETS,
    BandGroup,
    CloudRemovalDataset,
    DatasetSpec,
    Sampling,
    size_pair,
)
from m3rcr.data.layout import SampleFiles, check_files_exist, list_split
from m3rcr.data.preprocess import (
    LEVEL1_CLASSES,
    OPTICAL_BANDS,
    OPTICAL_SCALE,
    SAR_BANDS,
    SAR_DB_RANGE,
    NanFill,
    class_names,
    cloud_cover,
    fill_nan,
    landcover_ids,
    normalize_optical,
    normalize_sar,
)
from m3rcr.data.resample import Interpolation, check_same_crs, reproject_to_grid, upsample_nearest
from m3rcr.data.sar_units import check_sar_units
from m3rcr.data.scene import Grid
from m3rcr.data.transforms import Dihedral, crop_window, grid_step
from m3rcr.errors import DataError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Placement = Literal["native", "nearest", "geo"]

#: Official M3R-CR tile sizes: optical 300x300 at 3 m, SAR and land cover 90x90 at 10 m.
OPTICAL_SIZE = (300, 300)
SAR_SIZE = (90, 90)
#: What to do with S1 tiles that look like linear power: the loader reads sigma0 in dB, as M3R-CR stores it.
SAR_TILE_ADVICE = {"linear": "M3R-CR S1 tiles hold sigma0 in dB: convert linear power with 10 * log10(value) "
                             "(m3rcr build-dataset does it when given --sar-units linear)"}


def affine_to_tensor(transform: Affine) -> torch.Tensor:
    """An affine georeference as a float64 tensor (a, b, c, d, e, f), so that it batches."""
    return torch.tensor(tuple(transform)[:6], dtype=torch.float64)


def tensor_to_affine(values: torch.Tensor | Sequence[float]) -> Affine:
    """Inverse of :func:`affine_to_tensor`."""
    return Affine(*(float(v) for v in values))


@DATASETS.register("m3rcr")
class M3RCRDataset(CloudRemovalDataset):
    """One split of an M3R-CR dataset in the official layout.

    Each item is a dict:

    ========================  ==========================================================================
    ``cloudy``                (4, H, W) float32, reflectance in [0, 1] (blue, green, red, NIR)
    ``cloudfree``             (4, H, W) float32, the cloud-free reference
    ``sar``                   (2, H, W) float32 in [0, 1] (VV, VH); (2, h, w) at 10 m in ``native`` mode
    ``landcover``             (H, W) int64 class ids of ``landcover_level`` (WorldCover no-data: 6 at level 1,
                              255 at level 2); (h, w) in ``native`` mode
    ``cloudmask``             (H, W) float32, 1 = cloudy
    ``cloud_cover``           float, cloudy fraction of the returned ``cloudmask``
    ``cloud_cover_tile``      float, cloudy fraction of the whole tile (what the benchmark bins by)
    ``name``                  str, e.g. ``fall_1_p_457``
    ``crs``                   str, CRS of the optical grid (e.g. ``EPSG:32646``); empty if none
    ``transform``             (6,) float64 affine (a, b, c, d, e, f) of the returned optical grid
    ``sar_transform``         (6,) float64 affine of the returned ``sar`` array's grid
    ``landcover_transform``   (6,) float64 affine of the returned ``landcover`` array's grid
    ========================  ==========================================================================

    Args:
        root: dataset root holding ``<split>/`` folders and ``<split>.csv`` lists.
        split: split name, e.g. ``train`` or ``test``.
        files: a split list (CSV) to use instead of ``ROOT/<split>.csv``, or the samples themselves; without
            either, the folder is scanned. Every listed file must exist.
        sampling: crop and augmentation (:class:`~m3rcr.data.datasets.base.Sampling`; default: whole tiles).
            In ``native`` mode crops start on multiples of 10 optical pixels (3 SAR pixels), so both grids cover
            the same ground, and the crop size must be such a multiple.
        sar_mode: ``nearest`` resizes the 90x90 SAR array to the optical size by nearest neighbour
            (the paper's protocol); ``geo`` reprojects it onto the optical grid from both files'
            georeferences; ``native`` keeps the 10 m grid.
        sar_resampling: ``nearest`` or ``bilinear``, for ``geo`` mode.
        landcover_mode: as ``sar_mode`` for the land-cover map (always nearest); default: ``sar_mode``.
        landcover_level: 1 (7 DeepGlobe classes, 6 = unknown) or 2 (the 11 WorldCover classes).
        nan_fill: fill NaN pixels with the whole ``image`` mean (the authors' rule) or each ``band``'s.
        official_sizes: require the official 300x300 optical and 90x90 SAR tiles; False accepts any size
            (tiles cut by ``m3rcr build-dataset`` with another ``--tile``).
    """

    spec: ClassVar[DatasetSpec] = DatasetSpec(
        name="m3rcr",
        groups=(BandGroup("optical", OPTICAL_BANDS, 3.0), BandGroup("sar", SAR_BANDS, 10.0),
                BandGroup("landcover", ("class",), 10.0), BandGroup("mask", ("cloud",), 3.0)),
        rgb=("red", "green", "blue"),
        nir="nir",
        landcover_classes=LEVEL1_CLASSES,
        optical_scale=OPTICAL_SCALE,
        sar_db_range=SAR_DB_RANGE,
    )

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        files: str | Path | Sequence[SampleFiles] | None = None,
        *,
        sampling: Sampling | None = None,
        sar_mode: Placement = "nearest",
        sar_resampling: Interpolation = "nearest",
        landcover_mode: Placement | None = None,
        landcover_level: int = 1,
        nan_fill: NanFill = "image",
        official_sizes: bool = True,
    ) -> None:
        for name, value, allowed in (
            ("sar_mode", sar_mode, ("native", "nearest", "geo")),
            ("landcover_mode", landcover_mode, ("native", "nearest", "geo", None)),
            ("sar_resampling", sar_resampling, ("nearest", "bilinear")),
            ("nan_fill", nan_fill, ("image", "band")),
            ("landcover_level", landcover_level, (1, 2)),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        super().__init__(split, sampling)
        # the land-cover ids the items carry follow the level
        self.spec = dataclasses.replace(type(self).spec, landcover_classes=class_names(landcover_level))
        self.root = Path(root)
        self.sar_mode = sar_mode
        self.sar_resampling = sar_resampling
        self.landcover_mode = landcover_mode or sar_mode
        self.landcover_level = landcover_level
        self.nan_fill = nan_fill
        self.optical_size = size_pair(OPTICAL_SIZE) if official_sizes else None
        self.sar_size = size_pair(SAR_SIZE) if official_sizes else None
        if files is None or isinstance(files, str | Path):
            self.samples: list[SampleFiles] = list_split(root, split, files)
        else:
            self.samples = list(files)
        check_files_exist(self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, samples={len(self)}, "
                f"sar_mode={self.sar_mode!r}, landcover_mode={self.landcover_mode!r}, sampling={self.sampling})")

    @classmethod
    def list_files(cls, root: str | Path, split: str, csv: str | Path | None = None, **options: Any
                   ) -> list[SampleFiles]:
        """The split's samples from ``ROOT/<split>.csv`` (or ``csv``), or from scanning ``ROOT/<split>/``."""
        return list_split(root, split, csv)

    @classmethod
    def holdout_group(cls, files: SampleFiles) -> str:
        """M3R-CR holds out whole AOIs (the tiles of one AOI overlap in place and time)."""
        return str(files.aoi)

    @property
    def names(self) -> list[str]:
        """Sample names in dataset order."""
        return [s.name for s in self.samples]

    # ------------------------------------------------------------------ reading
    def read_raw(self, index: int) -> dict[str, Any]:
        """The sample's files as read, before any preprocessing: :class:`~m3rcr.data.io.Raster` objects and the mask."""
        files = self.samples[index]
        cloudy = io.read_geotiff(files.cloudy, what="cloudy optical image", bands=4, size=self.optical_size)
        cloudfree = io.read_geotiff(files.cloudfree, what="cloud-free optical image", bands=4, size=cloudy.shape)
        if cloudfree.transform != cloudy.transform or cloudfree.crs != cloudy.crs:
            raise DataError(files.cloudfree, f"grid (CRS and transform) differs from the cloudy image {files.cloudy}")
        sar = io.read_geotiff(files.sar, what="SAR image (VV, VH)", bands=2, size=self.sar_size)
        # linear power read as dB would clip to a constant 0 dB (SAR = 1.0 everywhere) without a word
        # (the fill-value rule is for whole input scenes: a dark tile of calm water must not stop a training run)
        check_sar_units(sar.array, "db", files.sar, nodata=sar.nodata, advice=SAR_TILE_ADVICE, fill=False)
        landcover = io.read_geotiff(files.landcover, what="land-cover map", bands=1, size=self.sar_size)
        if landcover.shape != sar.shape:
            raise DataError(files.landcover, f"land-cover map is {landcover.shape[0]}x{landcover.shape[1]} pixels "
                                             f"but the SAR image is {sar.shape[0]}x{sar.shape[1]}")
        mask = io.read_cloudmask(files.cloudmask, size=cloudy.shape)
        return {"files": files, "cloudy": cloudy, "cloudfree": cloudfree, "sar": sar, "landcover": landcover,
                "cloudmask": mask}

    def _place(self, raster: io.Raster, mode: Placement, resampling: Interpolation, optical: io.Raster
               ) -> tuple[np.ndarray, Affine]:
        """Bring a 10 m raster to the optical grid (or keep it); return the array and its grid's transform."""
        if mode == "native":
            return raster.array, raster.transform
        if mode == "nearest":
            h, w = raster.shape
            H, W = optical.shape
            # the resized array spans the raster's own footprint with pixels of the new size
            return upsample_nearest(raster.array, optical.shape), raster.transform @ Affine.scale(w / W, h / H)
        check_same_crs(raster.crs, optical.crs, raster.path, optical.path)
        out = reproject_to_grid(raster.array, raster.transform, raster.crs,
                                Grid(optical.crs, optical.transform, *optical.shape), resampling=resampling,
                                where=raster.path)
        return out, optical.transform

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        raw = self.read_raw(index)
        files: SampleFiles = raw["files"]
        cloudy_r: io.Raster = raw["cloudy"]
        cloudy = normalize_optical(fill_nan(cloudy_r.array, files.cloudy, self.nan_fill))
        cloudfree = normalize_optical(fill_nan(raw["cloudfree"].array, files.cloudfree, self.nan_fill))
        mask = raw["cloudmask"]

        sar_r: io.Raster = raw["sar"]
        if self.sar_mode == "nearest":
            # the authors resize first and fill NaN afterwards; keep their order to reproduce them exactly
            sar, sar_tf = self._place(sar_r, "nearest", "nearest", cloudy_r)
            sar = fill_nan(sar, files.sar, self.nan_fill, file_image=sar_r.array)
        else:
            filled = io.Raster(fill_nan(sar_r.array, files.sar, self.nan_fill), sar_r.transform, sar_r.crs,
                               sar_r.nodata, sar_r.path)
            sar, sar_tf = self._place(filled, self.sar_mode, self.sar_resampling, cloudy_r)
        sar = normalize_sar(sar)
        lc_r: io.Raster = raw["landcover"]
        lc_ids = io.Raster(landcover_ids(lc_r.array, self.landcover_level, files.landcover), lc_r.transform,
                           lc_r.crs, lc_r.nodata, lc_r.path)
        landcover, lc_tf = self._place(lc_ids, self.landcover_mode, "nearest", cloudy_r)
        landcover = landcover[0]

        opt_tf = cloudy_r.transform
        tile_cover = cloud_cover(mask)
        rng = self.item_rng(index)
        sampling = self.sampling
        arrays = {"cloudy": cloudy, "cloudfree": cloudfree, "cloudmask": mask, "sar": sar, "landcover": landcover}
        grids = {"cloudy": opt_tf, "sar": sar_tf, "landcover": lc_tf}
        native = {k for k, m in (("sar", self.sar_mode), ("landcover", self.landcover_mode)) if m == "native"}

        if sampling.crop_size is not None:
            step, fine, coarse = 1, 1, 1
            if native:
                fine, coarse = grid_step(cloudy_r.shape[0], sar_r.shape[0])
                if grid_step(cloudy_r.shape[1], sar_r.shape[1]) != (fine, coarse):
                    raise DataError(files.sar, "SAR and optical grids have different aspect ratios")
                step = fine
                if any(s % fine for s in sampling.crop_size):
                    raise ValueError(f"in native mode the crop size must be a multiple of {fine} optical pixels "
                                     f"({coarse} SAR pixels) so both grids cover the same ground; got {sampling.crop_size}")
            try:
                win = crop_window(cloudy_r.shape, sampling.crop_size, mode=sampling.crop, step=step, rng=rng)
            except ValueError as exc:
                raise DataError(files.cloudy, str(exc)) from None
            for key in arrays:
                w = win.scaled(coarse, fine) if key in native else win
                arrays[key] = arrays[key][..., w.slices()[0], w.slices()[1]]
            for key in grids:
                w = win.scaled(coarse, fine) if key in native else win
                grids[key] = w.transform(grids[key])

        if sampling.augment:
            h, w = arrays["cloudy"].shape[-2:]
            aug = Dihedral.random(rng, square=(h == w))
            for key in grids:
                grids[key] = aug.transform(grids[key], arrays[key].shape[-2:])
            for key in arrays:
                arrays[key] = aug.apply(arrays[key])

        out_mask = arrays["cloudmask"].astype(np.float32)
        return {
            "cloudy": torch.from_numpy(np.ascontiguousarray(arrays["cloudy"])),
            "cloudfree": torch.from_numpy(np.ascontiguousarray(arrays["cloudfree"])),
            "sar": torch.from_numpy(np.ascontiguousarray(arrays["sar"])),
            "landcover": torch.from_numpy(np.ascontiguousarray(arrays["landcover"])),
            "cloudmask": torch.from_numpy(np.ascontiguousarray(out_mask)),
            "cloud_cover": cloud_cover(out_mask),
            "cloud_cover_tile": tile_cover,
            "name": files.name,
            "crs": cloudy_r.crs.to_string() if cloudy_r.crs is not None else "",
            "transform": affine_to_tensor(grids["cloudy"]),
            "sar_transform": affine_to_tensor(grids["sar"]),
            "landcover_transform": affine_to_tensor(grids["landcover"]),
        }

    def plot(self, sample: dict[str, Any], prediction: torch.Tensor | np.ndarray | None = None, **kwargs: Any
             ) -> Figure:
        """Figure of a sample (and optionally a prediction); see :func:`m3rcr.data.plot.plot_sample`."""
        from m3rcr.data.plot import plot_sample

        return plot_sample(sample, prediction, landcover_level=self.landcover_level, **kwargs)
