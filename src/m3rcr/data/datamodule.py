"""A Lightning DataModule over the train / validation / test splits of any registered dataset."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from m3rcr.data.datasets import DATASETS, CloudRemovalDataset, Sampling
from m3rcr.data.options import DataOptions
from m3rcr.errors import DataError

Item = TypeVar("Item")


def holdout_by_group(items: Sequence[Item], fraction: float, seed: int, group: Callable[[Item], str]
                     ) -> tuple[list[Item], list[Item]]:
    """Split items into (kept, held out) so that no group (an AOI) is on both sides; about ``fraction`` of the
    groups are held out, chosen with ``seed``."""
    groups = sorted({group(s) for s in items})
    if fraction <= 0:
        return list(items), []
    if len(groups) < 2:
        where = getattr(items[0], "source", "split") if items else "split"
        raise DataError(where, "cannot hold out AOIs for validation: the split has a single AOI "
                               "(give a validation split or set val_fraction to 0)")
    n_val = min(len(groups) - 1, max(1, math.ceil(fraction * len(groups))))
    held = set(np.random.default_rng(seed).permutation(len(groups))[:n_val].tolist())
    val_groups = {g for i, g in enumerate(groups) if i in held}
    return [s for s in items if group(s) not in val_groups], [s for s in items if group(s) in val_groups]


class CloudRemovalDataModule(L.LightningDataModule):
    """Train, validation and test loaders over the dataset that ``options.name`` names.

    Training uses random crops of ``crop_size`` (and optional flips / quarter turns); validation and test use
    centred crops of ``eval_crop_size`` (None = whole items). Validation comes from ``val_split`` if given,
    otherwise from ``val_fraction`` of the training groups (AOIs), held out whole (seeded).

    Args:
        options: :class:`~m3rcr.data.options.DataOptions`, or a flat ``data`` configuration section such as
            ``{"root": "data/m3rcr", "batch_size": 12, "crop_size": 160, "sar_mode": "nearest"}``.
    """

    def __init__(self, options: DataOptions | Mapping[str, Any]) -> None:
        super().__init__()
        if not isinstance(options, DataOptions):
            options = DataOptions.from_section(options)
        self.options = options
        # plain values only: Lightning stores them in checkpoints, which are read with weights_only=True
        self.save_hyperparameters(options.to_section())
        self.dataset_class: type[CloudRemovalDataset] = DATASETS.entry(options.name).target  # type: ignore[assignment]
        self.train_dataset: CloudRemovalDataset | None = None
        self.val_dataset: CloudRemovalDataset | None = None
        self.test_dataset: CloudRemovalDataset | None = None

    def use_batch_size(self, batch_size: int) -> None:
        """Load ``batch_size`` items per training step in this process (the global batch over the processes)."""
        batching = dataclasses.replace(self.options.batching, batch_size=batch_size)
        self.options = dataclasses.replace(self.options, batching=batching)
        self.hparams.batch_size = batch_size

    def _dataset(self, files: Sequence[Any], split: str, train: bool) -> CloudRemovalDataset:
        o = self.options
        sampling = Sampling(crop_size=o.crop_size if train else o.eval_crop_size,
                            crop="random" if train else "center", augment=o.augment and train)
        return DATASETS.build(o.name, root=o.root, split=split, files=files, sampling=sampling, **o.dataset)

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets the stage needs (``fit``, ``validate``, ``test`` or ``predict``)."""
        o, plan, cls = self.options, self.options.splits, self.dataset_class
        if stage in (None, "fit", "validate") and self.train_dataset is None:
            train = cls.list_files(o.root, plan.train_split, plan.train_csv, **o.dataset)
            if plan.val_split is not None:
                val = cls.list_files(o.root, plan.val_split, plan.val_csv, **o.dataset)
            else:
                train, val = holdout_by_group(train, plan.val_fraction, plan.seed, cls.holdout_group)
            self.train_dataset = self._dataset(train, plan.train_split, train=True)
            self.val_dataset = self._dataset(val, plan.val_split or plan.train_split, train=False) if val else None
        if stage in (None, "test", "predict") and self.test_dataset is None:
            test = cls.list_files(o.root, plan.test_split, plan.test_csv, **o.dataset)
            self.test_dataset = self._dataset(test, plan.test_split, train=False)

    def _loader(self, dataset: CloudRemovalDataset | None, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("call setup() for this stage first")
        b = self.options.batching
        return DataLoader(
            dataset,
            batch_size=b.batch_size if train else (b.eval_batch_size or b.batch_size),
            shuffle=train,
            drop_last=train and len(dataset) > b.batch_size,
            num_workers=b.num_workers,
            # training workers restart every epoch so that their seeds come from the main generator,
            # which the training state saves: a resumed run then draws the same crops and flips
            persistent_workers=b.num_workers > 0 and not train,
            pin_memory=b.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, train=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_dataset, train=False) if self.val_dataset is not None else []

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, train=False)
