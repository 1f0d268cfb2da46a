"""NDVI agreement (spec section 4.3): NDVI RMSE and the mIoU of five NDVI levels."""

from __future__ import annotations

import torch

from m3rcr.evaluation.confusion import confusion_matrix

#: Band indices of red and near infrared in the 4-band (B, G, R, NIR) images.
RED, NIR = 2, 3
#: Upper edges of the NDVI levels: < -0.1 (cloud, water, snow), [-0.1, 0.1) (rock, soil),
#: [0.1, 0.4) (sparse vegetation), [0.4, 0.8) (dense vegetation), >= 0.8 (very dense vegetation).
LEVEL_EDGES = (-0.1, 0.1, 0.4, 0.8)
LEVEL_NAMES = ("< -0.1", "-0.1-0.1", "0.1-0.4", "0.4-0.8", ">= 0.8")
#: Bins of the predicted-vs-reference NDVI histogram (Fig. 8): 200 x 200 over [-1, 1].
HIST_BINS = 200


def ndvi(image: torch.Tensor) -> torch.Tensor:
    """(NIR - red) / (NIR + red) of (B, 4, H, W) images -> (B, H, W) in [-1, 1]; 0 where NIR + red = 0.

    Negative reflectance (which a prediction may contain) is set to 0 first: it would otherwise make the
    ratio unbounded near NIR + red = 0. Computed and returned in float64.
    """
    red, nir = image[:, RED].double().clamp(min=0), image[:, NIR].double().clamp(min=0)
    total = nir + red
    return torch.where(total != 0, (nir - red) / torch.where(total != 0, total, torch.ones_like(total)),
                       torch.zeros_like(total))


def ndvi_levels(values: torch.Tensor) -> torch.Tensor:
    """Level index 0..4 of each NDVI value (edges belong to the upper level).

    Values are rounded to 1e-6 first: float32 reflectance puts a ratio such as 1100 / 900 DN about
    2e-8 below its edge (0.1), which would otherwise land it one level too low.
    """
    edges = torch.tensor(LEVEL_EDGES, dtype=torch.float64, device=values.device)
    return torch.bucketize(torch.round(values.double() * 1e6) / 1e6, edges, right=True)


def level_confusion(pred_ndvi: torch.Tensor, ref_ndvi: torch.Tensor) -> torch.Tensor:
    """5 x 5 confusion matrix of NDVI levels (rows = reference)."""
    return confusion_matrix(ndvi_levels(pred_ndvi), ndvi_levels(ref_ndvi), len(LEVEL_NAMES))


def ndvi_histogram(pred_ndvi: torch.Tensor, ref_ndvi: torch.Tensor, bins: int = HIST_BINS) -> torch.Tensor:
    """(bins, bins) counts of (reference, predicted) NDVI pairs over [-1, 1] (rows = reference)."""
    def index(v: torch.Tensor) -> torch.Tensor:
        return ((v.clamp(-1, 1) + 1) / 2 * bins).long().clamp(0, bins - 1).reshape(-1)

    return torch.bincount(index(ref_ndvi) * bins + index(pred_ndvi), minlength=bins * bins).reshape(bins, bins)
