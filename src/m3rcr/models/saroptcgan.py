"""SAR-Opt-cGAN (Grohnfeldt, Schmitt, Zhu, IGARSS 2018): a pix2pix U-Net generator fed with the cloudy
optical bands and SAR, trained against a 70x70 PatchGAN (:class:`~m3rcr.models.discriminators.PatchDiscriminator`).

No code of the authors is public; every layer follows the pix2pix defaults (unet_256: 8 stride-2
stages, BatchNorm, dropout on three decoder stages, tanh output). Inputs are padded (reflection) to a
multiple of 256 and cropped back. pix2pix works on data in [-1, 1]: with ``rescale=True`` the
network maps its [0, 1] inputs to [-1, 1] and its tanh output back to [0, 1], so that it is trained
and evaluated on the same scale as every other method.
"""

from __future__ import annotations

import torch
from torch import nn

from m3rcr.models.base import CloudRemovalModel, ModelSpec
from m3rcr.models.blocks import check_inputs, pad_to_multiple
from m3rcr.models.gan_layers import (
    NormAtTest,
    SampleStatBatchNorm2d,
    init_gan_weights,
    per_sample,
    set_norm_at_test,
)


class SAROptCGAN(CloudRemovalModel):
    """pix2pix U-Net generator (unet_256) on cat(cloudy optical, SAR).

    Args:
        in_channels, sar_channels, out_channels: 4, 2, 4 at the M3R-CR setting.
        base_channels: ngf (64); depth: stride-2 stages (8 = unet_256).
        dropout: on the three decoder stages after the innermost one (0.5).
        rescale: map inputs to [-1, 1] and the tanh output back to [0, 1].
        norm_at_test, pad_mode, init_std: as :class:`~m3rcr.models.mcgan.McGAN`.
    """

    def __init__(self, in_channels: int = 4, sar_channels: int = 2, out_channels: int = 4, base_channels: int = 64,
                 depth: int = 8, dropout: float = 0.5, rescale: bool = True, norm_at_test: NormAtTest = "sample",
                 pad_mode: str = "reflect", init_std: float = 0.02) -> None:
        super().__init__()
        if depth < 5:
            raise ValueError("depth must be at least 5 (4 fixed outer stages and the innermost)")
        self.rescale, self.pad_mode, self.norm_at_test = rescale, pad_mode, norm_at_test
        self.spec = ModelSpec(in_channels, out_channels, sar_channels, size_multiple=2**depth)
        c = [base_channels * m for m in (1, 2, 4, 8)] + [base_channels * 8] * (depth - 4)
        cin = in_channels + sar_channels
        self.down = nn.ModuleList()
        for i in range(depth):
            layers: list[nn.Module] = [] if i == 0 else [nn.LeakyReLU(0.2)]
            layers.append(nn.Conv2d(cin if i == 0 else c[i - 1], c[i], 4, 2, 1, bias=False))
            if 0 < i < depth - 1:  # no norm on the outermost and innermost down-convolutions
                layers.append(SampleStatBatchNorm2d(c[i]))
            self.down.append(nn.Sequential(*layers))
        self.up = nn.ModuleList()
        for i in reversed(range(1, depth)):  # innermost first; stage i produces c[i - 1] channels
            cin_up = c[i] if i == depth - 1 else 2 * c[i]
            layers = [nn.ReLU(), nn.ConvTranspose2d(cin_up, c[i - 1], 4, 2, 1, bias=False), SampleStatBatchNorm2d(c[i - 1])]
            if dropout and 4 <= i < depth - 1:  # the depth - 5 stages after the innermost (3 for unet_256)
                layers.append(nn.Dropout(dropout))
            self.up.append(nn.Sequential(*layers))
        self.outer = nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(2 * c[0], out_channels, 4, 2, 1), nn.Tanh())
        init_gan_weights(self, init_std)
        set_norm_at_test(self, norm_at_test)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for layer in self.down:
            x = layer(x)
            skips.append(x)
        y = skips[-1]
        for k, layer in enumerate(self.up):
            y = torch.cat([skips[-2 - k], layer(y)], dim=1)  # the block's input first, then its output
        return self.outer(y)

    def forward(self, cloudy: torch.Tensor, sar: torch.Tensor | None = None) -> torch.Tensor:
        """``cloudy`` (B, 4, H, W) and ``sar`` (B, 2, H, W) in [0, 1] -> (B, 4, H, W)."""
        check_inputs(cloudy, sar, True)
        h, w = cloudy.shape[-2:]
        x = self.to_compute(self.condition(cloudy, sar))
        if self.rescale:
            x = 2 * x - 1
        x, _ = pad_to_multiple(x, self.spec.size_multiple, self.pad_mode)
        y = per_sample(self._forward, x) if (not self.training and self.norm_at_test == "sample") else self._forward(x)
        y = y[..., :h, :w]
        return (y + 1) / 2 if self.rescale else y

