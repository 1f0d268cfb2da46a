"""The dataset contract and registry: datasets by name, their spec, the ``data`` config section, and a second
dataset of another band layout going through the DataModule unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from paths import CONFIGS

from m3rcr.data import DATASETS, DataOptions, M3RCRDataset, Sampling, check_data_config
from m3rcr.data.datamodule import CloudRemovalDataModule
from m3rcr.data.datasets import SAMPLE_KEYS, BandGroup, CloudRemovalDataset, DatasetSpec


def test_m3rcr_is_registered_with_its_spec(synth_root: Path) -> None:
    assert "m3rcr" in DATASETS.names()
    ds = DATASETS.build("m3rcr", root=synth_root, split="test", sampling=Sampling(crop_size=64), sar_mode="geo")
    assert isinstance(ds, M3RCRDataset) and ds.registry_name == "m3rcr"
    spec = ds.spec
    assert spec.optical_bands == ("blue", "green", "red", "nir") and spec.sar_bands == ("VV", "VH")
    assert spec.rgb_indices() == (2, 1, 0)
    assert spec.resolution_ratio() == pytest.approx(10 / 3)
    item = ds[0]
    assert set(SAMPLE_KEYS) <= set(item)
    assert item["cloudy"].shape == (len(spec.optical_bands), 64, 64)
    assert item["sar"].shape[0] == len(spec.sar_bands)


def test_sampling_is_validated_and_seeded(synth_root: Path) -> None:
    with pytest.raises(ValueError, match="crop must be one of"):
        Sampling(crop="middle")
    with pytest.raises(ValueError, match="positive size"):
        Sampling(crop_size=0)
    s = Sampling(crop_size=64, crop="random", augment=True, seed=3)
    a = M3RCRDataset(synth_root, "train", sampling=s)
    b = M3RCRDataset(synth_root, "train", sampling=s)
    assert torch.equal(a[1]["cloudy"], b[1]["cloudy"])
    a.set_epoch(1)
    assert not torch.equal(a[1]["cloudy"], b[1]["cloudy"])


def test_data_section_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match="unknown key 'sar_mod' \\(did you mean 'sar_mode'\\?\\) for dataset 'm3rcr'"):
        check_data_config({"root": "x", "sar_mod": "geo"})
    with pytest.raises(ValueError, match="data.name: unknown dataset 'sen2'"):
        check_data_config({"name": "sen2"})
    with pytest.raises(ValueError, match="data.batch_size must be a whole number >= 1"):
        check_data_config({"batch_size": 0})
    with pytest.raises(ValueError, match="split cannot be set"):
        check_data_config({"split": "train"})
    opts = DataOptions.from_section({"root": "r", "batch_size": 4, "sar_mode": "geo", "val_fraction": 0.2})
    assert opts.batching.batch_size == 4 and opts.splits.val_fraction == 0.2 and opts.dataset == {"sar_mode": "geo"}
    assert DataOptions.from_section(opts.to_section()) == opts


EXPERIMENTS = sorted(p for p in CONFIGS.glob("*.yaml") if "model" in (yaml.safe_load(p.read_text()) or {}))


def test_experiment_configs_are_found() -> None:
    assert len(EXPERIMENTS) >= 9, EXPERIMENTS


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_every_shipped_data_section_is_valid(path: Path) -> None:
    check_data_config(yaml.safe_load(path.read_text()).get("data") or {})


class ToyS2(CloudRemovalDataset):
    """A stand-in for a 13-band dataset with SAR on the optical grid: what a second dataset must provide."""

    spec = DatasetSpec(
        name="toy_s2",
        groups=(BandGroup("optical", tuple(f"B{i}" for i in range(1, 14)), 10.0), BandGroup("sar", ("VV", "VH"), 10.0),
                BandGroup("landcover", ("class",), 10.0), BandGroup("mask", ("cloud",), 10.0)),
        rgb=("B4", "B3", "B2"), nir="B8", landcover_classes=("any",), optical_scale=10000.0,
    )

    def __init__(self, root: str | Path, split: str = "train", files: Any = None, *,
                 sampling: Sampling | None = None, size: int = 32) -> None:
        super().__init__(split, sampling)
        self.files = list(files) if files is not None else self.list_files(root, split)
        self.size = size

    @classmethod
    def list_files(cls, root: str | Path, split: str, csv: str | Path | None = None, **options: Any) -> list[str]:
        # the DataModule hands over the dataset's options: a split may depend on them (SEN12MS-CR's layout)
        return [f"roi{i % 3}_{split}_{i}" for i in range(options.get("size", 32) // 4)]

    @classmethod
    def holdout_group(cls, files: str) -> str:
        return files.split("_")[0]

    @property
    def names(self) -> list[str]:
        return list(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = self.item_rng(index) or np.random.default_rng(index)
        s = self.sampling.crop_size or (self.size, self.size)
        img = torch.from_numpy(rng.random((13, *s), dtype=np.float32))
        return {"cloudy": img, "cloudfree": img, "sar": torch.zeros(2, *s), "landcover": torch.zeros(s, dtype=torch.int64),
                "cloudmask": torch.zeros(s), "cloud_cover": 0.0, "cloud_cover_tile": 0.0, "name": self.files[index],
                "crs": "", "transform": torch.zeros(6, dtype=torch.float64)}

    def plot(self, sample: dict[str, Any], prediction: Any = None, **kwargs: Any) -> Any:
        raise NotImplementedError


def test_a_second_dataset_fits_the_datamodule() -> None:
    DATASETS.register("toy_s2", ToyS2)
    try:
        with pytest.raises(ValueError, match="unknown key 'sar_mode'"):
            check_data_config({"name": "toy_s2", "sar_mode": "geo"})
        dm = CloudRemovalDataModule({"name": "toy_s2", "root": "nowhere", "batch_size": 2, "crop_size": 16,
                                     "size": 24, "val_fraction": 0.34})
        dm.setup("fit")
        train_groups = {ToyS2.holdout_group(n) for n in dm.train_dataset.names}
        val_groups = {ToyS2.holdout_group(n) for n in dm.val_dataset.names}
        assert train_groups and val_groups and not train_groups & val_groups
        assert len(dm.train_dataset) + len(dm.val_dataset) == 6  # size 24 reached list_files
        batch = next(iter(dm.train_dataloader()))
        assert batch["cloudy"].shape == (2, 13, 16, 16)
        assert next(iter(dm.val_dataloader()))["cloudy"].shape == (2, 13, 24, 24)
    finally:
        DATASETS.unregister("toy_s2")
    assert "toy_s2" not in DATASETS


def test_select_items_by_index_and_name(synth_root: Path) -> None:
    ds = M3RCRDataset(synth_root, "test")
    assert ds.select() == [0]
    assert ds.select([2], [ds.names[2], ds.names[4]]) == [2, 4]  # asked twice: once
    assert ds.select([1], every=True) == list(range(len(ds)))
    with pytest.raises(ValueError, match="no sample named nope in split 'test'"):
        ds.select(names=["nope"])
    with pytest.raises(ValueError, match=f"index 99 out of range \\({len(ds)} samples"):
        ds.select([99])
