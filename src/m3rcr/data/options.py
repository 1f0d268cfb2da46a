"""The ``data`` section of an experiment: which dataset, which splits, how items are batched and cropped.

A configuration's ``data`` section is one flat mapping, as in every YAML of ``configs/``::

    data: {name: m3rcr, root: data/m3rcr, batch_size: 12, crop_size: 160, sar_mode: nearest, val_fraction: 0.05}

:meth:`DataOptions.from_section` sorts its keys: the fields of :class:`SplitPlan` and :class:`Batching`, the crop
sizes and ``augment`` belong to the DataModule; every other key is an argument of the dataset named by ``name``
and is checked against that dataset's constructor (so ``sar_mode`` is valid for ``m3rcr`` and a typo is an error).
No key list is kept by hand: the dataclass fields and the constructor signature are the lists.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from m3rcr.data.datasets import DATASETS
from m3rcr.utils.plain import plain
from m3rcr.utils.registry import RegistryError
from m3rcr.utils.text import spelled

#: dataset constructor arguments the DataModule sets itself (a config that sets them is an error)
_SET_BY_DATAMODULE = ("root", "split", "files", "sampling")


@dataclass(frozen=True)
class SplitPlan:
    """Which splits train, validate and test; validation comes from ``val_split`` or, if None, from
    ``val_fraction`` of the training groups (AOIs for M3R-CR) held out whole with ``seed``."""

    train_split: str = "train"
    val_split: str | None = None
    test_split: str = "test"
    train_csv: str | Path | None = None
    val_csv: str | Path | None = None
    test_csv: str | Path | None = None
    val_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass(frozen=True)
class Batching:
    """Loader settings: ``batch_size`` for training (per process), ``eval_batch_size`` for validation and test
    (default: the same), worker processes and pinned memory."""

    batch_size: int = 12
    eval_batch_size: int | None = None
    num_workers: int = 0
    pin_memory: bool = False

    def __post_init__(self) -> None:
        for name in ("batch_size", "eval_batch_size", "num_workers"):
            value = getattr(self, name)
            least = 0 if name == "num_workers" else 1
            if value is None and name == "eval_batch_size":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}")


#: the fields of DataOptions that gather section keys of their own
_PARTS: dict[str, type] = {"splits": SplitPlan, "batching": Batching}


@dataclass(frozen=True)
class DataOptions:
    """Everything the DataModule needs: the dataset's name, root and own arguments, splits, batching, crops."""

    name: str = "m3rcr"
    root: str | Path = "data/m3rcr"
    splits: SplitPlan = field(default_factory=SplitPlan)
    batching: Batching = field(default_factory=Batching)
    crop_size: int | None = 160
    eval_crop_size: int | None = None
    augment: bool = False
    dataset: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> DataOptions:
        """Sort a flat ``data`` section into options; unknown keys are an error naming the valid ones."""
        rest = dict(section)
        parts: dict[str, Any] = {k: rest.pop(k) for k in list(rest) if k in _own_keys()}
        for key, kind in _PARTS.items():
            names = _field_names(kind)
            try:
                parts[key] = kind(**{k: rest.pop(k) for k in list(rest) if k in names})
            except ValueError as exc:  # the field's own message, under the section's name
                raise ValueError(f"data.{exc}") from None
        name = parts.get("name", cls.name)
        reserved = sorted(set(rest) & set(_SET_BY_DATAMODULE))
        if reserved:
            raise ValueError(f"data: {', '.join(reserved)} cannot be set (the DataModule sets them per split; use "
                             "train_split / val_split / test_split and train_csv / val_csv / test_csv)")
        try:
            entry = DATASETS.entry(name)
        except RegistryError as exc:
            raise ValueError(f"data.name: {exc}") from None
        valid = section_keys() | (set(entry.parameters()) - set(_SET_BY_DATAMODULE))
        unknown = sorted(set(rest) - valid)
        if unknown:
            raise ValueError(f"data: unknown key {', '.join(spelled(k, valid) for k in unknown)} for dataset {name!r}; "
                             f"keys: {', '.join(sorted(valid))}")
        return cls(**parts, dataset=rest)

    def to_section(self) -> dict[str, Any]:
        """The flat ``data`` section these options come from (plain values: it is saved in checkpoints)."""
        out: dict[str, Any] = {"name": self.name, "root": self.root, **plain(self.splits), **plain(self.batching),
                               "crop_size": self.crop_size, "eval_crop_size": self.eval_crop_size,
                               "augment": self.augment, **self.dataset}
        return plain(out)


def _field_names(kind: type) -> set[str]:
    return {f.name for f in dataclasses.fields(kind)}


def _own_keys() -> set[str]:
    """The section keys that are fields of DataOptions itself (not its parts, not the dataset's arguments)."""
    return _field_names(DataOptions) - {*_PARTS, "dataset"}


def section_keys() -> set[str]:
    """The DataModule's own keys of a ``data`` section (the dataset's arguments come on top)."""
    return _own_keys().union(*(_field_names(kind) for kind in _PARTS.values()))


def check_data_config(section: Mapping[str, Any]) -> None:
    """Raise ValueError with a clear message if a ``data`` section is not valid (no file is read)."""
    DataOptions.from_section(section)
