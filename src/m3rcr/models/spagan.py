"""SpA-GAN (Pan, arXiv:2009.13015, 2020): a spatial-attention generator (SPANet variant) for single-image
cloud removal (optical only), trained against :class:`~m3rcr.models.discriminators.TwoStreamDiscriminator`
with an extra loss between its attention map and the cloud mask.

Every layer has stride 1, so any input size works. As in the reference code, one spatial attention
module is shared by the four attentive groups, its direction-attention branch has no effect on the
output (the reference computes it and discards it) and one of its convolutions is never used; both
are kept (``keep_unused=True``) so that parameter counts match, and receive no gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from m3rcr.models.base import CloudRemovalModel, ModelSpec
from m3rcr.models.blocks import check_inputs
from m3rcr.models.gan_layers import init_gan_weights


class Bottleneck(nn.Module):
    """conv1x1, ReLU, conv3x3 (dilation 2), ReLU, conv1x1; no biases."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 1, bias=False), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=2, dilation=2, bias=False), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1, bias=False),
        )

    def forward(self, x: torch.Tensor, attention: torch.Tensor | None = None) -> torch.Tensor:
        y = self.body(x)
        return F.relu((y * attention if attention is not None else y) + x)


class DirectionShift(nn.Module):
    """One step of SPANet's IRNN: for each direction, ``relu(w * neighbour + b + self)`` per channel.

    Returns [up, right, down, left] concatenated; the border row/column without a neighbour is copied.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.up, self.right, self.down, self.left = (nn.Conv2d(channels, channels, 1, groups=channels)
                                                     for _ in range(4))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        up = torch.cat([f[..., :1, :], F.relu(self.up(f)[..., :-1, :] + f[..., 1:, :])], dim=-2)
        down = torch.cat([F.relu(self.down(f)[..., 1:, :] + f[..., :-1, :]), f[..., -1:, :]], dim=-2)
        left = torch.cat([f[..., :1], F.relu(self.left(f)[..., :-1] + f[..., 1:])], dim=-1)
        right = torch.cat([F.relu(self.right(f)[..., 1:] + f[..., :-1]), f[..., -1:]], dim=-1)
        return torch.cat([up, right, down, left], dim=1)


class SpatialAttention(nn.Module):
    """SpA-GAN's spatial attention module: two direction-shift stages, then a 1-channel sigmoid map."""

    def __init__(self, channels: int, keep_unused: bool = True) -> None:
        super().__init__()
        self.inp = nn.Conv2d(channels, channels, 1)
        self.shift1 = DirectionShift(channels)
        self.merge1 = nn.Conv2d(4 * channels, channels, 1)
        self.shift2 = DirectionShift(channels)
        self.merge2 = nn.Conv2d(4 * channels, channels, 1)
        self.out = nn.Conv2d(channels, 1, 1, bias=False)
        if keep_unused:
            # the reference's direction-attention branch (its result is discarded) and an unused conv
            half = channels // 2
            self.direction_attention = nn.Sequential(
                nn.Conv2d(channels, half, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(half, half, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(half, 4, 1), nn.Sigmoid())
            self.unused_conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.merge1(self.shift1(self.inp(x)))
        y = F.relu(self.merge2(self.shift2(y)))
        return torch.sigmoid(self.out(y))


class SpAGAN(CloudRemovalModel):
    """The SpA-GAN generator.

    Args:
        in_channels, out_channels: 4 and 4 at the M3R-CR setting.
        channels: width everywhere (32).
        groups, blocks_per_group: attentive groups (4) of attentive residual blocks (3).
        keep_unused: keep the reference's parameters that never affect the output (see module docs).
        init_std: N(0, std) initialisation of every convolution (0.02).
    """

    def __init__(self, in_channels: int = 4, out_channels: int = 4, channels: int = 32, groups: int = 4,
                 blocks_per_group: int = 3, keep_unused: bool = True, init_std: float = 0.02) -> None:
        super().__init__()
        self.spec = ModelSpec(in_channels, out_channels)  # single-image method, any size
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        self.pre = nn.ModuleList(Bottleneck(channels) for _ in range(3))
        self.attention = SpatialAttention(channels, keep_unused)  # shared by all groups
        self.groups = nn.ModuleList(nn.ModuleList(Bottleneck(channels) for _ in range(blocks_per_group))
                                    for _ in range(groups))
        self.post = nn.ModuleList(Bottleneck(channels) for _ in range(2))
        self.conv_out = nn.Conv2d(channels, out_channels, 3, padding=1, bias=False)
        init_gan_weights(self, init_std)

    def forward_with_attention(self, cloudy: torch.Tensor, sar: torch.Tensor | None = None
                               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(restored image (B, 4, H, W), last attention map (B, 1, H, W))."""
        check_inputs(cloudy, sar, False)
        x = F.relu(self.conv_in(self.to_compute(cloudy)))
        for block in self.pre:
            x = block(x)
        attention = None
        for group in self.groups:
            attention = self.attention(x)
            for block in group:
                x = block(x, attention)
        for block in self.post:
            x = block(x)
        return self.conv_out(x), attention

    def forward(self, cloudy: torch.Tensor, sar: torch.Tensor | None = None) -> torch.Tensor:
        """``cloudy`` (B, 4, H, W) -> (B, 4, H, W); ``sar`` is ignored (single-image method)."""
        return self.forward_with_attention(cloudy, sar)[0]

