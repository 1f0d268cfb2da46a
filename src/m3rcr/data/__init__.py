"""Data: dataset layouts, preprocessing, the datasets (by name), their options and synthetic data.

The names below load on first use, so that the command line's ``--help`` and the layout and build modules do not
pay for torch. The Lightning DataModule lives in :mod:`m3rcr.data.datamodule`.
"""

from typing import Any

__all__ = ["DATASETS", "CloudRemovalDataset", "DataOptions", "DatasetSpec", "M3RCRDataset", "SEN12MSCRDataset", "SampleFiles",
           "Sampling",
           "affine_to_tensor", "check_data_config", "list_split", "tensor_to_affine"]


def __getattr__(name: str) -> Any:
    if name in ("SampleFiles", "list_split"):
        from m3rcr.data import layout

        return getattr(layout, name)
    if name in ("DataOptions", "check_data_config"):
        from m3rcr.data import options

        return getattr(options, name)
    if name in __all__:
        from m3rcr.data import datasets

        return getattr(datasets, name)
    raise AttributeError(f"module 'm3rcr.data' has no attribute {name!r}")
