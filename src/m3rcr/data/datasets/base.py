"""What every dataset of the toolkit follows, and the registry that creates datasets by name.

A dataset is a map-style torch dataset over one split. Its items are dicts of named tensors with at least the keys of
:data:`SAMPLE_KEYS` (``cloudy``, ``cloudfree``, ``sar``, ``cloudmask`` ... see :class:`CloudRemovalDataset`), so models,
training, evaluation and reports work with any dataset without knowing where it came from. What differs between
datasets (bands, resolutions, land-cover classes, preprocessing constants) is described by its :class:`DatasetSpec`.

Cropping and augmentation are the same for every dataset and are chosen by the caller (the DataModule picks random
crops for training and centred ones for evaluation) through one :class:`Sampling` object.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from m3rcr.utils.registry import Registry

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CropMode = Literal["random", "center"]
Role = Literal["optical", "sar", "landcover", "mask"]

#: keys every dataset's items carry (datasets may add more, e.g. M3R-CR's ``sar_transform``)
SAMPLE_KEYS: tuple[str, ...] = ("cloudy", "cloudfree", "sar", "landcover", "cloudmask", "cloud_cover",
                                "cloud_cover_tile", "name", "crs", "transform")


def size_pair(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``size`` as a (height, width) pair of positive ints (None stays None)."""
    if size is None:
        return None
    if isinstance(size, int):
        size = (size, size)
    pair = tuple(int(s) for s in size)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"expected a positive size or (height, width) pair, got {size}")
    return pair  # type: ignore[return-value]


@dataclass(frozen=True)
class BandGroup:
    """One modality of a dataset: its role, band names in array order, and ground sampling distance."""

    role: Role
    bands: tuple[str, ...]
    resolution_m: float


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset holds, read by the code that must not guess it (display, metrics, model sizes).

    Attributes:
        name: the registry name (``m3rcr``).
        groups: the modalities (optical, SAR, land cover, mask).
        rgb: optical band names shown as red, green, blue.
        nir: the near-infrared band name (for NDVI), or None.
        landcover_classes: class names of the land-cover ids the items carry (level 1 for M3R-CR).
        optical_scale: raw optical DN per unit reflectance (10000 for PlanetScope and Sentinel-2 L1C).
        sar_db_range: per SAR band, the dB range mapped onto [0, 1].
        reflectance_per_unit: reflectance of one unit of the optical arrays the items carry (1 when they hold
            reflectance; 0.2 for SEN12MS-CR's ``resnet`` scaling to [0, 5]). Metrics and written predictions
            convert with it.
        protocol: the metric protocol the dataset is scored with (:mod:`m3rcr.evaluation.protocols`).
    """

    name: str
    groups: tuple[BandGroup, ...]
    rgb: tuple[str, str, str]
    nir: str | None
    landcover_classes: tuple[str, ...]
    optical_scale: float
    sar_db_range: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    reflectance_per_unit: float = 1.0
    protocol: str = "m3rcr"

    def group(self, role: Role) -> BandGroup:
        """The modality with this role."""
        for g in self.groups:
            if g.role == role:
                return g
        raise KeyError(f"dataset {self.name!r} has no {role} modality")

    @property
    def optical_bands(self) -> tuple[str, ...]:
        """Optical band names in array order."""
        return self.group("optical").bands

    @property
    def sar_bands(self) -> tuple[str, ...]:
        """SAR band names in array order."""
        return self.group("sar").bands

    def rgb_indices(self) -> tuple[int, int, int]:
        """Positions of the red, green and blue bands in the optical array."""
        bands = self.optical_bands
        return tuple(bands.index(b) for b in self.rgb)  # type: ignore[return-value]

    def resolution_ratio(self) -> float:
        """SAR pixel size over optical pixel size (10 m / 3 m for M3R-CR; 1 when both share a grid)."""
        return self.group("sar").resolution_m / self.group("optical").resolution_m


@dataclass(frozen=True)
class Sampling:
    """Which window of each item to return and how to augment it; the same for every dataset.

    Attributes:
        crop_size: crop to this size (int or (height, width)) on the optical grid; None keeps the whole item.
        crop: ``random`` (training) or ``center`` (evaluation).
        augment: random flips and quarter turns, the same for every modality.
        seed: if given, the random crop and augmentation of item ``i`` depend only on (seed, i, epoch); otherwise
            they come from torch's global generator, which DataLoader workers seed from the main process.
    """

    crop_size: int | tuple[int, int] | None = None
    crop: CropMode = "center"
    augment: bool = False
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.crop not in ("random", "center"):
            raise ValueError(f"crop must be one of ('random', 'center'), got {self.crop!r}")
        object.__setattr__(self, "crop_size", size_pair(self.crop_size))

    @property
    def random(self) -> bool:
        """Whether items draw random numbers (a random crop or augmentation)."""
        return self.augment or (self.crop_size is not None and self.crop == "random")

    def rng(self, index: int, epoch: int) -> np.random.Generator:
        """The generator of item ``index`` in ``epoch``."""
        if self.seed is None:
            # data-parallel processes share the main generator's seed: tell their draws apart by rank
            rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
            return np.random.default_rng([int(torch.randint(0, 2**62, ()).item()), rank])
        return np.random.default_rng([self.seed, index, epoch])


class CloudRemovalDataset(Dataset, ABC):
    """The contract of every dataset: one split, items as dicts of named tensors, a spec, a ``plot``.

    A subclass sets :attr:`spec`, takes ``(root, split, files, *, sampling, ...its own options)`` in its constructor
    (what the DataModule passes) and implements the abstract methods. Items hold at least :data:`SAMPLE_KEYS`: ``cloudy`` and ``cloudfree`` (C, H, W) float32
    reflectance, ``sar`` (S, H', W') float32 in [0, 1], ``landcover`` (H', W') int64 class ids, ``cloudmask``
    (H, W) float32 (1 = cloudy), ``cloud_cover`` / ``cloud_cover_tile`` floats, ``name`` and ``crs`` strings and
    ``transform`` a (6,) float64 affine of the optical grid.
    """

    spec: ClassVar[DatasetSpec]

    def __init__(self, split: str, sampling: Sampling | None = None) -> None:
        self.split = split
        self.sampling = sampling or Sampling()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make seeded random crops and augmentations differ between epochs."""
        self.epoch = int(epoch)

    def select(self, indices: Sequence[int] = (), names: Sequence[str] = (), every: bool = False) -> list[int]:
        """Item indices from positions and names (``every``: all items), each once, in the order asked; nothing
        asked gives item 0. An unknown name or an index out of range is a ValueError saying which."""
        known = self.names
        missing = [n for n in names if n not in known]
        if missing:
            raise ValueError(f"no sample named {', '.join(missing)} in split {self.split!r}")
        picked = list(range(len(self))) if every else [*indices, *(known.index(n) for n in names)]
        picked = list(dict.fromkeys(picked)) or [0]  # asked for twice (by index and by name): once
        for i in picked:
            if not 0 <= i < len(self):
                raise ValueError(f"index {i} out of range ({len(self)} samples in split {self.split!r})")
        return picked

    def item_rng(self, index: int) -> np.random.Generator | None:
        """The generator of item ``index`` (None when the sampling draws nothing)."""
        return self.sampling.rng(index, self.epoch) if self.sampling.random else None

    @classmethod
    @abstractmethod
    def list_files(cls, root: str | Path, split: str, csv: str | Path | None = None, **options: Any) -> list[Any]:
        """The items of a split as file records (no pixel is read), in dataset order; what ``files`` takes.

        ``options`` are the dataset's own constructor arguments (the DataModule passes its ``data`` section's);
        a dataset uses those that change what a split holds (SEN12MS-CR's ``layout``) and ignores the rest."""

    @classmethod
    @abstractmethod
    def holdout_group(cls, files: Any) -> str:
        """The unit a validation hold-out keeps whole (an AOI, a region of interest), so no place is on both
        sides."""

    @property
    @abstractmethod
    def names(self) -> list[str]:
        """Item names in dataset order."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @abstractmethod
    def plot(self, sample: dict[str, Any], prediction: Any = None, **kwargs: Any) -> Figure:
        """A figure of an item (and optionally a prediction)."""


#: datasets by name; ``m3rcr.data.datasets`` registers the built-in ones when imported
DATASETS: Registry[CloudRemovalDataset] = Registry("dataset")
