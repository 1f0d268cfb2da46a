"""DSen2-CR (Meraner et al., ISPRS J. 2020), at the M3R-CR setting (optical 4 + SAR 2 in, 4 out).

An EDSR-style residual network at full resolution: optical and SAR stacked (optical first), a 3x3
head + ReLU, B residual blocks (conv, ReLU, conv, scaled by 0.1, plus input), a 3x3 tail, and a long
skip to the cloudy optical input. No normalisation, no size constraint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from m3rcr.models.base import CloudRemovalModel, ModelSpec
from m3rcr.models.blocks import check_inputs, conv3x3


class ScaledResBlock(nn.Module):
    """``x + scale * conv3(relu(conv3(x)))`` (EDSR residual scaling)."""

    def __init__(self, channels: int, scale: float = 0.1) -> None:
        super().__init__()
        self.scale = scale
        self.body = nn.Sequential(conv3x3(channels, channels), nn.ReLU(inplace=True), conv3x3(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.scale


class DSen2CR(CloudRemovalModel):
    """DSen2-CR; the defaults are the published configuration (B = 16 blocks, F = 256 features, 0.1 scaling).

    ``use_sar=False`` drops the SAR input (an optical-only variant, not in the paper). ``residual_init``
    zeroes the tail so the untrained network is the identity (False: PyTorch's default initialisation).
    """

    def __init__(self, in_channels: int = 4, sar_channels: int = 2, out_channels: int = 4, features: int = 256,
                 blocks: int = 16, res_scale: float = 0.1, use_sar: bool = True, residual_init: bool = True) -> None:
        super().__init__()
        if out_channels != in_channels:
            raise ValueError("the long skip adds the cloudy input: out_channels must equal in_channels")
        self.spec = ModelSpec(in_channels, out_channels, sar_channels if use_sar else 0)
        self.head = conv3x3(in_channels + (sar_channels if use_sar else 0), features)
        self.body = nn.Sequential(*(ScaledResBlock(features, res_scale) for _ in range(blocks)))
        self.tail = conv3x3(features, out_channels)
        if residual_init:  # start as the identity: the long skip carries the cloudy input through
            nn.init.zeros_(self.tail.weight)
            nn.init.zeros_(self.tail.bias)

    def forward(self, cloudy: torch.Tensor, sar: torch.Tensor | None = None) -> torch.Tensor:
        """``cloudy`` (B, 4, H, W) and ``sar`` (B, 2, H, W) on the same grid -> (B, 4, H, W)."""
        check_inputs(cloudy, sar, self.spec.uses_sar)
        x = self.to_compute(torch.cat([cloudy, sar], dim=1) if self.spec.uses_sar else cloudy)
        return cloudy + self.tail(self.body(F.relu(self.head(x)))).to(cloudy.dtype)

