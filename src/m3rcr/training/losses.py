"""Reconstruction losses, registered by name.

Every loss is computed per sample (mean over bands and pixels), then averaged over the batch, and
takes ``(pred, target, cloudmask)`` with the mask (B, H, W) or None.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

_LOSSES: dict[str, type[nn.Module]] = {}


def register_loss(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator registering a loss under ``name``."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        _LOSSES[name] = cls
        return cls

    return wrap


def create_loss(name: str, **config: Any) -> nn.Module:
    """Build a registered loss."""
    if name not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(sorted(_LOSSES))}")
    return _LOSSES[name](**config)


def _per_sample_mean(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(1).mean()


@register_loss("cloud_charbonnier")
class CloudWeightedCharbonnier(nn.Module):
    """``mean((1 + w M) ((y - y_ref)^2 + eps^2)^alpha)``: Charbonnier with extra weight on cloudy pixels.

    The paper's recipe: w = 5, eps = 1e-3, alpha = 0.45 (spec section 3).
    """

    def __init__(self, weight: float = 5.0, eps: float = 1e-3, alpha: float = 0.45) -> None:
        super().__init__()
        self.weight, self.eps, self.alpha = weight, eps, alpha

    def forward(self, pred: torch.Tensor, target: torch.Tensor, cloudmask: torch.Tensor | None = None) -> torch.Tensor:
        loss = ((pred - target) ** 2 + self.eps**2) ** self.alpha
        if cloudmask is not None:
            loss = loss * (1 + self.weight * cloudmask.to(loss.dtype).unsqueeze(1))
        return _per_sample_mean(loss)


@register_loss("l1")
class L1(nn.Module):
    """Mean absolute error."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor, cloudmask: torch.Tensor | None = None) -> torch.Tensor:
        return _per_sample_mean((pred - target).abs())


@register_loss("l2")
class L2(nn.Module):
    """Mean squared error."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor, cloudmask: torch.Tensor | None = None) -> torch.Tensor:
        return _per_sample_mean((pred - target) ** 2)
