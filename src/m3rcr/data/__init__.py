"""M3R-CR data: the official layout, preprocessing, the dataset class, the DataModule and synthetic data."""

from m3rcr.data.dataset import M3RCRDataset, affine_to_tensor, tensor_to_affine
from m3rcr.data.layout import SampleFiles, list_split

__all__ = ["M3RCRDataset", "SampleFiles", "affine_to_tensor", "list_split", "tensor_to_affine"]
