"""A Lightning DataModule over the train / validation / test splits of an M3R-CR dataset."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from m3rcr.data.dataset import M3RCRDataset, Placement
from m3rcr.data.layout import SampleFiles, check_files_exist, list_split
from m3rcr.data.resample import Interpolation
from m3rcr.errors import DataError


def holdout_by_aoi(samples: Sequence[SampleFiles], fraction: float, seed: int
                   ) -> tuple[list[SampleFiles], list[SampleFiles]]:
    """Split samples into (kept, held out) so that no AOI is on both sides; about ``fraction`` of AOIs held out."""
    aois = sorted({s.aoi for s in samples})
    if fraction <= 0:
        return list(samples), []
    if len(aois) < 2:
        raise DataError(samples[0].source if samples else "split",
                        "cannot hold out AOIs for validation: the split has a single AOI "
                        "(give a validation split or set val_fraction to 0)")
    n_val = min(len(aois) - 1, max(1, math.ceil(fraction * len(aois))))
    held = set(np.random.default_rng(seed).permutation(len(aois))[:n_val].tolist())
    val_aois = {a for i, a in enumerate(aois) if i in held}
    return [s for s in samples if s.aoi not in val_aois], [s for s in samples if s.aoi in val_aois]


class M3RCRDataModule(L.LightningDataModule):
    """Train, validation and test loaders for an M3R-CR dataset root.

    Training uses random crops (and optional flips / quarter turns); validation and test use centred
    crops of ``eval_crop_size`` (None = full tiles). Validation comes from ``val_split`` if given,
    otherwise from ``val_fraction`` of the training AOIs, held out whole (seeded).

    Args:
        root: dataset root with ``<split>/`` folders and ``<split>.csv`` lists.
        train_split, val_split, test_split: split names (``val_split=None``: hold out training AOIs).
        train_csv, val_csv, test_csv: split lists overriding ``ROOT/<split>.csv``.
        val_fraction: share of training AOIs held out for validation when there is no ``val_split``.
        batch_size: training batch size; ``eval_batch_size`` for validation/test (default: the same).
        num_workers: DataLoader worker processes.
        crop_size: training crop size on the optical grid (paper: 160).
        eval_crop_size: validation/test crop size; None evaluates whole tiles.
        sar_mode, sar_resampling, landcover_mode, landcover_level: see :class:`M3RCRDataset`.
        augment: random flips and quarter turns for training.
        seed: seed of the validation hold-out.
    """

    def __init__(
        self,
        root: str | Path,
        train_split: str = "train",
        val_split: str | None = None,
        test_split: str = "test",
        train_csv: str | Path | None = None,
        val_csv: str | Path | None = None,
        test_csv: str | Path | None = None,
        val_fraction: float = 0.1,
        batch_size: int = 12,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        crop_size: int | None = 160,
        eval_crop_size: int | None = None,
        sar_mode: Placement = "nearest",
        sar_resampling: Interpolation = "nearest",
        landcover_mode: Placement | None = None,
        landcover_level: int = 1,
        augment: bool = False,
        seed: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.root = Path(root)
        self.train_dataset: M3RCRDataset | None = None
        self.val_dataset: M3RCRDataset | None = None
        self.test_dataset: M3RCRDataset | None = None

    def _dataset(self, samples: Sequence[SampleFiles], split: str, train: bool) -> M3RCRDataset:
        hp = self.hparams
        return M3RCRDataset(
            self.root, split, samples=samples, check_files=False,
            sar_mode=hp.sar_mode, sar_resampling=hp.sar_resampling, landcover_mode=hp.landcover_mode,
            landcover_level=hp.landcover_level,
            crop_size=hp.crop_size if train else hp.eval_crop_size,
            crop="random" if train else "center", augment=hp.augment and train,
        )

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets the stage needs (``fit``, ``validate``, ``test`` or ``predict``)."""
        hp = self.hparams
        if stage in (None, "fit", "validate") and self.train_dataset is None:
            train = list_split(self.root, hp.train_split, hp.train_csv)
            if hp.val_split is not None:
                val = list_split(self.root, hp.val_split, hp.val_csv)
            else:
                train, val = holdout_by_aoi(train, hp.val_fraction, hp.seed)
            check_files_exist(train + val)
            self.train_dataset = self._dataset(train, hp.train_split, train=True)
            self.val_dataset = self._dataset(val, hp.val_split or hp.train_split, train=False) if val else None
        if stage in (None, "test", "predict") and self.test_dataset is None:
            test = list_split(self.root, hp.test_split, hp.test_csv)
            check_files_exist(test)
            self.test_dataset = self._dataset(test, hp.test_split, train=False)

    def _loader(self, dataset: M3RCRDataset | None, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("call setup() for this stage first")
        hp = self.hparams
        return DataLoader(
            dataset,
            batch_size=hp.batch_size if train else (hp.eval_batch_size or hp.batch_size),
            shuffle=train,
            drop_last=train and len(dataset) > hp.batch_size,
            num_workers=hp.num_workers,
            # training workers restart every epoch so that their seeds come from the main generator,
            # which the training state saves: a resumed run then draws the same crops and flips
            persistent_workers=hp.num_workers > 0 and not train,
            pin_memory=hp.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, train=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_dataset, train=False) if self.val_dataset is not None else []

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, train=False)
