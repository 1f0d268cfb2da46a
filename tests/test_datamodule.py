"""The Lightning DataModule."""

from __future__ import annotations

from pathlib import Path

import pytest

from m3rcr.data.datamodule import CloudRemovalDataModule, holdout_by_group
from m3rcr.data.datasets import M3RCRDataset
from m3rcr.data.layout import list_split
from m3rcr.errors import DataError


def test_fit_and_test_loaders(synth_root: Path) -> None:
    dm = CloudRemovalDataModule({"root": synth_root, "batch_size": 3, "crop_size": 80, "eval_batch_size": 2,
                                 "val_fraction": 0.3, "augment": True})
    dm.setup("fit")
    train_aois = {s.aoi for s in dm.train_dataset.samples}
    val_aois = {s.aoi for s in dm.val_dataset.samples}
    assert train_aois and val_aois and not train_aois & val_aois
    assert len(dm.train_dataset) + len(dm.val_dataset) == 10
    batch = next(iter(dm.train_dataloader()))
    assert batch["cloudy"].shape == (3, 4, 80, 80) and batch["sar"].shape == (3, 2, 80, 80)
    val = next(iter(dm.val_dataloader()))
    assert val["cloudy"].shape[-2:] == (300, 300)  # whole tiles unless eval_crop_size is set
    dm.setup("test")
    test = next(iter(dm.test_dataloader()))
    assert test["cloudy"].shape == (2, 4, 300, 300)
    assert dm.test_dataset.sampling.crop == "center" and not dm.test_dataset.sampling.augment
    assert dm.train_dataset.sampling.crop == "random" and dm.train_dataset.sampling.augment


def test_native_mode_and_eval_crops(synth_root: Path) -> None:
    dm = CloudRemovalDataModule({"root": synth_root, "batch_size": 2, "crop_size": 160, "eval_crop_size": 160,
                                 "sar_mode": "native", "val_fraction": 0.0})
    dm.setup("fit")
    assert dm.val_dataset is None and dm.val_dataloader() == []
    batch = next(iter(dm.train_dataloader()))
    assert batch["sar"].shape == (2, 2, 48, 48) and batch["landcover"].shape == (2, 48, 48)
    dm.setup("test")
    assert next(iter(dm.test_dataloader()))["cloudy"].shape == (2, 4, 160, 160)


def test_explicit_validation_split(synth_root: Path) -> None:
    dm = CloudRemovalDataModule({"root": synth_root, "val_split": "test", "batch_size": 2})
    dm.setup("fit")
    assert len(dm.train_dataset) == 10 and len(dm.val_dataset) == 5


def test_holdout_is_seeded_and_needs_two_aois(synth_root: Path) -> None:
    samples = list_split(synth_root, "train")
    group = M3RCRDataset.holdout_group
    a = holdout_by_group(samples, 0.3, seed=1, group=group)
    assert a == holdout_by_group(samples, 0.3, seed=1, group=group)
    with pytest.raises(DataError, match="single AOI"):
        holdout_by_group([s for s in samples if s.aoi == samples[0].aoi], 0.1, seed=0, group=group)
