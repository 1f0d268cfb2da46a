"""GLF-CR (Xu et al., ISPRS J. 2022), at the M3R-CR setting (4 optical + 2 SAR bands in, 4 out).

Two streams at half resolution (space-to-depth x2). Each of the D residual dense blocks runs, per
dense layer, a 3x3 conv + ReLU per stream followed by a cross-modal Swin block *without* pre-norm
(SAR-guided attention logits, as in Align-CR, MLP ratio 2, stochastic depth), then local fusion; after
every block, SAR features are filtered by predicted per-pixel kernels and exchanged with the optical
ones (:class:`~m3rcr.models.blocks.DynamicFilterFusion`, the module Align-CR also uses). Global
fusion, pixel-shuffle reconstruction and a long skip to the cloudy input end the network.

Any H and W work (padded to a multiple of 16 inside, cropped back): the authors' network only
accepts the square size it was built for.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from m3rcr.models.base import CloudRemovalModel, ModelSpec
from m3rcr.models.blocks import (
    DynamicFilterFusion,
    ReconstructionHead,
    SwinBlock,
    check_inputs,
    conv1x1,
    conv3x3,
    pad_to_multiple,
)


class GLFDenseLayer(nn.Module):
    """conv3x3 + ReLU per stream, then a cross-modal Swin block (no pre-norm) on the new features."""

    def __init__(self, in_channels: int, growth: int, num_heads: int, window: int, shift: int, mlp_ratio: float,
                 drop_path: float) -> None:
        super().__init__()
        self.conv = conv3x3(in_channels, growth)
        self.conv_sar = conv3x3(in_channels, growth)
        self.swin = SwinBlock(growth, num_heads, window, shift, mlp_ratio, sar=True, pre_norm=False,
                              drop_path=drop_path, single_window_no_shift=True)

    def forward(self, x: torch.Tensor, x_sar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, a_sar = self.swin(F.relu(self.conv(x)), F.relu(self.conv_sar(x_sar)))
        return torch.cat([x, a], dim=1), torch.cat([x_sar, a_sar], dim=1)


class GLFDenseBlock(nn.Module):
    """C dense layers (odd ones shifted), local feature fusion per stream, plus the block input."""

    def __init__(self, channels: int, growth: int, num_layers: int, num_heads: int, window: int, mlp_ratio: float,
                 drop_paths: list[float]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            GLFDenseLayer(channels + i * growth, growth, num_heads, window, (window // 2) * (i % 2), mlp_ratio,
                          drop_paths[i])
            for i in range(num_layers)
        )
        self.fuse_opt = conv3x3(channels + num_layers * growth, channels)
        self.fuse_sar = conv3x3(channels + num_layers * growth, channels)

    def forward(self, x: torch.Tensor, x_sar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, a_sar = x, x_sar
        for layer in self.layers:
            a, a_sar = layer(a, a_sar)
        return self.fuse_opt(a) + x, self.fuse_sar(a_sar) + x_sar


class GLFCR(CloudRemovalModel):
    """GLF-CR; the defaults are the published (and M3R-CR) configuration.

    Args:
        in_channels, sar_channels, out_channels: bands (4, 2, 4 for M3R-CR; 13, 2, 13 for SEN12MS-CR).
        features: G0 (96); growth: G (48); layers_per_block: C (5); blocks: D (6).
        num_heads, window, mlp_ratio: attention settings (8, 8, 2.0).
        drop_path: the largest stochastic-depth rate; rates rise linearly over the D x C layers (0.2).
        filter_size: dynamic filter size (5); head_channels: reconstruction width before pixel shuffle (256).
        residual_init: start as the identity (see :class:`~m3rcr.models.blocks.ReconstructionHead`).
    """

    def __init__(self, in_channels: int = 4, sar_channels: int = 2, out_channels: int = 4, features: int = 96,
                 growth: int = 48, layers_per_block: int = 5, blocks: int = 6, num_heads: int = 8, window: int = 8,
                 mlp_ratio: float = 2.0, drop_path: float = 0.2, filter_size: int = 5,
                 head_channels: int = 256, residual_init: bool = True) -> None:
        super().__init__()
        if out_channels != in_channels:
            raise ValueError("the long skip adds the cloudy input: out_channels must equal in_channels")
        self.spec = ModelSpec(in_channels, out_channels, sar_channels, 2 * window)
        self.conv1 = nn.Conv2d(4 * in_channels, features, 5, padding=2)
        self.conv2 = conv3x3(features, features)
        self.conv1_sar = nn.Conv2d(4 * sar_channels, features, 5, padding=2)
        self.conv2_sar = conv3x3(features, features)
        rates = torch.linspace(0, drop_path, blocks * layers_per_block).tolist()
        self.blocks = nn.ModuleList(
            GLFDenseBlock(features, growth, layers_per_block, num_heads, window, mlp_ratio,
                          rates[i * layers_per_block:(i + 1) * layers_per_block])
            for i in range(blocks)
        )
        self.fusions = nn.ModuleList(DynamicFilterFusion(features, filter_size) for _ in range(blocks))
        self.gff = nn.Sequential(conv1x1(blocks * features, features), conv3x3(features, features))
        self.head = ReconstructionHead(features, head_channels, out_channels, residual_init)

    def forward(self, cloudy: torch.Tensor, sar: torch.Tensor | None = None) -> torch.Tensor:
        """``cloudy`` (B, 4, H, W) and ``sar`` (B, 2, H, W) on the same grid -> (B, 4, H, W)."""
        check_inputs(cloudy, sar, True)
        h, w = cloudy.shape[-2:]
        x, _ = pad_to_multiple(self.to_compute(cloudy), self.spec.size_multiple)
        s, _ = pad_to_multiple(self.to_compute(sar), self.spec.size_multiple)
        first = self.conv1(F.pixel_unshuffle(x, 2))  # no activation (unlike Align-CR)
        opt = self.conv2(first)
        s = self.conv2_sar(self.conv1_sar(F.pixel_unshuffle(s, 2)))
        outputs = []
        for block, fusion in zip(self.blocks, self.fusions):
            opt, s = fusion(*block(opt, s))
            outputs.append(opt)
        y = self.head(self.gff(torch.cat(outputs, dim=1)) + first)
        return y[..., :h, :w].to(cloudy.dtype) + cloudy  # the skip in the input's type (float32 at bf16)

