"""Datasets by name: the contract every dataset follows and the built-in datasets (importing this registers them)."""

from m3rcr.data.datasets.base import (
    DATASETS,
    SAMPLE_KEYS,
    BandGroup,
    CloudRemovalDataset,
    DatasetSpec,
    Sampling,
)
from m3rcr.data.datasets.m3rcr import M3RCRDataset, affine_to_tensor, tensor_to_affine
from m3rcr.data.datasets.sen12mscr import SEN12MSCRDataset

__all__ = ["DATASETS", "SAMPLE_KEYS", "BandGroup", "CloudRemovalDataset", "DatasetSpec", "M3RCRDataset", "SEN12MSCRDataset",
           "Sampling",
           "affine_to_tensor", "tensor_to_affine"]
