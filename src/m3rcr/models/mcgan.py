"""McGAN (Enomoto et al., CVPR-W EarthVision 2017): a pix2pix-style U-Net generator for single-image
cloud removal (optical only), trained against :class:`~m3rcr.models.discriminators.TwoStreamDiscriminator`.

At the M3R-CR setting the generator maps the 4 cloudy bands to 4 cloud-free bands (the published
network also predicted a cloud-mask channel; the benchmark target has none). Seven stride-2 stages
need H and W to be multiples of 128: inputs are padded (reflection) to a multiple of 128, and to at
least 256 so that the BatchNorm at the 1/128 bottleneck sees more than one value, then cropped back.
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


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 4, 2, 1), SampleStatBatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True))


def _up(cin: int, cout: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = [nn.ConvTranspose2d(cin, cout, 4, 2, 1), SampleStatBatchNorm2d(cout)]
    if dropout:
        layers.append(nn.Dropout(dropout))  # between BN and the activation, as in the reference
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class McGAN(CloudRemovalModel):
    """The McGAN generator: U-Net with 8 encoder stages (the first at full resolution).

    Args:
        in_channels, out_channels: 4 and 4 at the M3R-CR setting.
        base_channels: width of the first stage (64); stages use 1, 2, 4, 8, 8, 8, 8, 8 times it.
        dropout: on the three innermost decoder stages (0.5).
        norm_at_test: ``sample`` normalises each image with its own statistics at inference, as the
            reference code (which never switches to eval mode) effectively does at batch size 1;
            ``running`` uses the running averages. Dropout is off at inference either way.
        pad_mode: padding to the next multiple of 128 (``reflect`` or ``replicate``).
        init_std: standard deviation of the N(0, std) weight initialisation (0.02).
    """

    def __init__(self, in_channels: int = 4, out_channels: int = 4, base_channels: int = 64, dropout: float = 0.5,
                 norm_at_test: NormAtTest = "sample", pad_mode: str = "reflect", init_std: float = 0.02) -> None:
        super().__init__()
        c = [base_channels * m for m in (1, 2, 4, 8, 8, 8, 8, 8)]
        self.pad_mode = pad_mode
        self.spec = ModelSpec(in_channels, out_channels, sar_bands=0, size_multiple=128)  # single-image method
        self.min_size = 256
        self.enc0 = nn.Sequential(nn.Conv2d(in_channels, c[0], 3, 1, 1), nn.LeakyReLU(0.2, inplace=True))
        self.enc = nn.ModuleList(_down(c[i], c[i + 1]) for i in range(7))
        # decoder stage k takes the previous stage concatenated with the matching encoder output
        ins = [c[7]] + [2 * c[7 - k] for k in range(1, 7)]
        outs = [c[6 - k] for k in range(7)]
        self.dec = nn.ModuleList(_up(ins[k], outs[k], dropout if k < 3 else 0.0) for k in range(7))
        self.out = nn.Conv2d(2 * c[0], out_channels, 3, 1, 1)
        init_gan_weights(self, init_std)
        set_norm_at_test(self, norm_at_test)
        self.norm_at_test = norm_at_test

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.enc0(x)]
        for layer in self.enc:
            skips.append(layer(skips[-1]))
        y = skips[-1]
        for k, layer in enumerate(self.dec):
            y = layer(y if k == 0 else torch.cat([y, skips[7 - k]], dim=1))
        return self.out(torch.cat([y, skips[0]], dim=1))

    def forward(self, cloudy: torch.Tensor, sar: torch.Tensor | None = None) -> torch.Tensor:
        """``cloudy`` (B, 4, H, W) -> (B, 4, H, W); ``sar`` is ignored (single-image method)."""
        check_inputs(cloudy, sar, False)
        h, w = cloudy.shape[-2:]
        x, _ = pad_to_multiple(self.to_compute(cloudy), self.spec.size_multiple, self.pad_mode, self.min_size)
        y = per_sample(self._forward, x) if (not self.training and self.norm_at_test == "sample") else self._forward(x)
        return y[..., :h, :w]

