"""Conditional patch discriminators of the GAN baselines, created by name.

Both take ``(condition, image)`` and return a map of real/fake logits (no sigmoid).
"""

from __future__ import annotations

import torch
from torch import nn

from m3rcr.models.base import ConfiguredModule
from m3rcr.models.gan_layers import init_gan_weights
from m3rcr.utils.registry import Registry

#: the discriminators by name: ``DISCRIMINATORS.build("patchgan", condition_channels=6, image_channels=4)``
DISCRIMINATORS: Registry[ConfiguredModule] = Registry("discriminator")


def _cbr(cin: int, cout: int, stride: int = 2, bias: bool = True) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 4, stride, 1, bias=bias), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(0.2, inplace=True))


@DISCRIMINATORS.register("two_stream")
class TwoStreamDiscriminator(ConfiguredModule):
    """McGAN / SpA-GAN discriminator: condition and image each through their own 4x4 stride-2 stem
    (32 channels, LeakyReLU), concatenated, three conv-BN-LeakyReLU stages to 512, a 3x3 conv to logits.

    Total stride 16, receptive field 78 px; needs H, W >= 16.
    """

    def __init__(self, condition_channels: int = 4, image_channels: int = 4, base_channels: int = 32,
                 init_std: float = 0.02) -> None:
        super().__init__()
        b = base_channels
        self.stem_condition = nn.Sequential(nn.Conv2d(condition_channels, b, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True))
        self.stem_image = nn.Sequential(nn.Conv2d(image_channels, b, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True))
        self.body = nn.Sequential(_cbr(2 * b, 4 * b), _cbr(4 * b, 8 * b), _cbr(8 * b, 16 * b),
                                  nn.Conv2d(16 * b, 1, 3, 1, 1))
        init_gan_weights(self, init_std)

    def forward(self, condition: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([self.stem_condition(condition), self.stem_image(image)], dim=1))


@DISCRIMINATORS.register("patchgan")
class PatchDiscriminator(ConfiguredModule):
    """pix2pix 70x70 PatchGAN (n_layers 3) on cat(condition, image); needs H, W >= 24."""

    def __init__(self, condition_channels: int = 6, image_channels: int = 4, base_channels: int = 64,
                 layers: int = 3, init_std: float = 0.02) -> None:
        super().__init__()
        b = base_channels
        mods: list[nn.Module] = [nn.Conv2d(condition_channels + image_channels, b, 4, 2, 1),
                                 nn.LeakyReLU(0.2, inplace=True)]
        ch = b
        for i in range(1, layers + 1):
            out = b * min(2**i, 8)
            mods.append(_cbr(ch, out, stride=2 if i < layers else 1, bias=False))
            ch = out
        mods.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.body = nn.Sequential(*mods)
        init_gan_weights(self, init_std)

    def forward(self, condition: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([condition, image], dim=1))
