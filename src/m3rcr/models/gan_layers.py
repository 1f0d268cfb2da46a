"""Layers shared by the GAN baselines (McGAN, SpA-GAN, SAR-Opt-cGAN): GAN weight initialisation and a
BatchNorm that can use each image's own statistics at inference."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

NormAtTest = Literal["running", "sample"]


class SampleStatBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that, in eval mode with ``use_sample_stats``, normalises with the statistics of the
    batch it sees (call it one image at a time) instead of the running averages.

    GAN generators trained with batch 1 are, in their reference code, run in train mode at test time,
    i.e. with per-image statistics; this reproduces that without updating the running averages.
    """

    use_sample_stats: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training and self.use_sample_stats:
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        return super().forward(x)


def set_norm_at_test(module: nn.Module, mode: NormAtTest) -> None:
    """Choose running averages or per-image statistics for every :class:`SampleStatBatchNorm2d`."""
    if mode not in ("running", "sample"):
        raise ValueError(f"norm_at_test must be 'running' or 'sample', got {mode!r}")
    for m in module.modules():
        if isinstance(m, SampleStatBatchNorm2d):
            m.use_sample_stats = mode == "sample"


def per_sample(forward, x: torch.Tensor, *rest: torch.Tensor | None) -> torch.Tensor:
    """Run ``forward`` on one image at a time (per-image normalisation at inference)."""
    return torch.cat([forward(x[i:i + 1], *(r[i:i + 1] if r is not None else None for r in rest))
                      for i in range(x.shape[0])])


def init_gan_weights(module: nn.Module, std: float = 0.02) -> None:
    """The pix2pix / McGAN initialisation: conv weights N(0, std), BatchNorm weights N(1, std), BN biases 0.

    Conv biases keep PyTorch's default (as the references do).
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, std)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
