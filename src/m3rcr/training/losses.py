"""Reconstruction losses, registered by name in :data:`LOSSES`.

Every loss is computed per sample (mean over bands and pixels), then averaged over the batch, and
takes ``(pred, target, cloudmask, cloudy)`` with the mask (B, H, W) and the cloudy input (B, C, H, W),
either of which may be None for losses that do not use it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from m3rcr.utils.registry import Registry

#: the reconstruction losses by name: ``LOSSES.build("cloud_charbonnier", weight=5.0)``
LOSSES: Registry[nn.Module] = Registry("loss")


def _per_sample_mean(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(1).mean()


@LOSSES.register("cloud_charbonnier")
class CloudWeightedCharbonnier(nn.Module):
    """``mean((1 + w M) ((y - y_ref)^2 + eps^2)^alpha)``: Charbonnier with extra weight on cloudy pixels.

    The paper's recipe: w = 5, eps = 1e-3, alpha = 0.45 (spec section 3).
    """

    def __init__(self, weight: float = 5.0, eps: float = 1e-3, alpha: float = 0.45) -> None:
        super().__init__()
        self.weight, self.eps, self.alpha = weight, eps, alpha

    def forward(self, pred: torch.Tensor, target: torch.Tensor, cloudmask: torch.Tensor | None = None,
                cloudy: torch.Tensor | None = None) -> torch.Tensor:
        loss = ((pred - target) ** 2 + self.eps**2) ** self.alpha
        if cloudmask is not None:
            loss = loss * (1 + self.weight * cloudmask.to(loss.dtype).unsqueeze(1))
        return _per_sample_mean(loss)


@LOSSES.register("l1")
class L1(nn.Module):
    """Mean absolute error."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor, cloudmask: torch.Tensor | None = None,
                cloudy: torch.Tensor | None = None) -> torch.Tensor:
        return _per_sample_mean((pred - target).abs())


@LOSSES.register("l2")
class L2(nn.Module):
    """Mean squared error."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor, cloudmask: torch.Tensor | None = None,
                cloudy: torch.Tensor | None = None) -> torch.Tensor:
        return _per_sample_mean((pred - target) ** 2)


@LOSSES.register("carl")
class CloudAdaptiveL1(nn.Module):
    """DSen2-CR's cloud-adaptive regularised L1 loss (CARL)::

        mean[(1 - M) |P - I| + M |P - T|] + lambda * mean|P - T|

    with M the cloud mask, P the prediction, I the cloudy input and T the cloud-free target (lambda = 1).
    """

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor, cloudmask: torch.Tensor | None = None,
                cloudy: torch.Tensor | None = None) -> torch.Tensor:
        if cloudmask is None or cloudy is None:
            raise ValueError("the CARL loss needs the cloud mask and the cloudy input")
        m = cloudmask.to(pred.dtype).unsqueeze(1)
        err_t = (pred - target).abs()
        return _per_sample_mean((1 - m) * (pred - cloudy).abs() + m * err_t) + self.weight * _per_sample_mean(err_t)


def adversarial_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Non-saturating GAN loss on discriminator logits: BCE-with-logits against 1 (real) or 0 (fake).

    Equal to the softplus form McGAN and SpA-GAN write (softplus(-x) for real, softplus(x) for fake).
    """
    logits = logits.float()  # float32 under bf16-mixed too
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, 1.0 if real else 0.0))
