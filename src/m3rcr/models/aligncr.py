"""Align-CR (Xu et al., IEEE TGRS 2024): SAR-to-optical feature alignment and fusion for cloud removal.

Forward pass, for ``cloudy`` (B, 4, H, W) and ``sar`` (B, 2, H, W) already on the optical grid:

1. space-to-depth x2 of both inputs;
2. optical and SAR shallow features (conv + ReLU, five wide-activation blocks each);
3. D AlignFuse blocks: align SAR features to the optical ones (feature pyramids + pyramid-cascading
   deformable alignment), a residual dense block with cross-modal Swin attention on both streams,
   and SAR-based local compensation with dynamic filters;
4. global feature fusion of the D optical outputs, plus the rectified first optical features;
5. reconstruction head (conv, pixel shuffle x2, conv) plus the cloudy input.

Any H and W work: the input is padded (edge replication) to a multiple of 16 and the output cropped
back, so on sizes the authors' network accepts (multiples of 16) nothing changes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from m3rcr.models.base import CloudRemovalModel, ModelSpec
from m3rcr.models.blocks import (
    DynamicFilterFusion,
    ModulatedDeformConv,
    ReconstructionHead,
    ResidualDenseBlock,
    ShallowFeatures,
    check_inputs,
    conv1x1,
    conv3x3,
    pad_to_multiple,
)


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 upsampling (align_corners=False) to the size of ``like``."""
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.1)


class FeaturePyramid(nn.Module):
    """Three-level pyramid (stride-2 convs + ReLU) with a top-down FPN pass; returns [P1, P2, P3]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.down1 = conv3x3(channels, 2 * channels, stride=2)
        self.down2 = conv3x3(2 * channels, 4 * channels, stride=2)
        self.top = conv1x1(4 * channels, channels)
        self.lateral1 = conv1x1(2 * channels, channels)
        self.lateral2 = conv1x1(channels, channels)
        self.smooth1 = conv3x3(channels, channels)
        self.smooth2 = conv3x3(channels, channels)

    def forward(self, l1: torch.Tensor) -> list[torch.Tensor]:
        l2 = F.relu(self.down1(l1))
        l3 = F.relu(self.down2(l2))
        p3 = F.relu(self.top(l3))
        p2 = self.smooth1(_up(p3, l2) + self.lateral1(l2))
        p1 = self.smooth2(_up(p2, l1) + self.lateral2(l1))
        return [p1, p2, p3]


class PCDAlignment(nn.Module):
    """Pyramid, cascading and deformable alignment (EDVR) of ``source`` levels to ``reference`` levels.

    Offsets passed up a level are upsampled and doubled; features only upsampled. The level-1 feature
    has no activation before the cascading refinement.
    """

    def __init__(self, channels: int, deformable_groups: int = 8) -> None:
        super().__init__()
        c = channels
        self.offset_conv1 = nn.ModuleDict({f"l{i}": conv3x3(2 * c, c) for i in (3, 2, 1)})
        self.offset_conv2 = nn.ModuleDict({"l3": conv3x3(c, c), "l2": conv3x3(2 * c, c), "l1": conv3x3(2 * c, c)})
        self.offset_conv3 = nn.ModuleDict({f"l{i}": conv3x3(c, c) for i in (2, 1)})
        self.dcn_pack = nn.ModuleDict({f"l{i}": ModulatedDeformConv(c, c, deformable_groups) for i in (3, 2, 1)})
        self.feat_conv = nn.ModuleDict({f"l{i}": conv3x3(2 * c, c) for i in (2, 1)})
        self.cas_offset_conv1 = conv3x3(2 * c, c)
        self.cas_offset_conv2 = conv3x3(c, c)
        self.cas_dcnpack = ModulatedDeformConv(c, c, deformable_groups)

    def forward(self, source: list[torch.Tensor], reference: list[torch.Tensor]) -> torch.Tensor:
        up_offset = up_feat = None
        feat = source[0]
        for i in (3, 2, 1):
            lv = f"l{i}"
            offset = _lrelu(self.offset_conv1[lv](torch.cat([source[i - 1], reference[i - 1]], dim=1)))
            if i == 3:
                offset = _lrelu(self.offset_conv2[lv](offset))
            else:
                offset = _lrelu(self.offset_conv2[lv](torch.cat([offset, up_offset], dim=1)))
                offset = _lrelu(self.offset_conv3[lv](offset))
            feat = self.dcn_pack[lv](source[i - 1], offset)
            if i < 3:
                feat = self.feat_conv[lv](torch.cat([feat, up_feat], dim=1))
            if i > 1:
                feat = _lrelu(feat)
                up_offset = _up(offset, source[i - 2]) * 2
                up_feat = _up(feat, source[i - 2])
        offset = torch.cat([feat, reference[0]], dim=1)
        offset = _lrelu(self.cas_offset_conv2(_lrelu(self.cas_offset_conv1(offset))))
        return _lrelu(self.cas_dcnpack(feat, offset))


class SARAlignment(nn.Module):
    """Align SAR features to optical features: a pyramid per stream, then PCD alignment."""

    def __init__(self, channels: int, deformable_groups: int = 8) -> None:
        super().__init__()
        self.sar_pyramid = FeaturePyramid(channels)
        self.opt_pyramid = FeaturePyramid(channels)
        self.pcd = PCDAlignment(channels, deformable_groups)

    def forward(self, sar: torch.Tensor, opt: torch.Tensor) -> torch.Tensor:
        return self.pcd(self.sar_pyramid(sar), self.opt_pyramid(opt))


class AlignFuseBlock(nn.Module):
    """Align (optional), residual dense block with cross-modal attention, dynamic-filter fusion."""

    def __init__(self, channels: int, growth: int, num_convs: int, num_heads: int, window: int, shift: int,
                 mlp_ratio: float, deformable_groups: int, filter_size: int, use_sar: bool = True,
                 use_align: bool = True) -> None:
        super().__init__()
        self.align = SARAlignment(channels, deformable_groups) if use_sar and use_align else None
        self.rdb = ResidualDenseBlock(channels, growth, num_convs, num_heads, window, shift, mlp_ratio, sar=use_sar)
        self.fusion = DynamicFilterFusion(channels, filter_size) if use_sar else None

    def forward(self, opt: torch.Tensor, sar: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.align is not None:
            sar = self.align(sar, opt)
        opt, sar = self.rdb(opt, sar)
        if self.fusion is not None:
            opt, sar = self.fusion(opt, sar)
        return opt, sar


class AlignCR(CloudRemovalModel):
    """The Align-CR network; the defaults are the paper's configuration.

    Args:
        in_channels, sar_channels, out_channels: optical input, SAR and output bands.
        features: feature width G0 (96).
        growth: growth rate G of the residual dense blocks (48).
        convs_per_block: dense convolutions C per block (5).
        blocks: AlignFuse blocks D (6).
        num_heads, window, mlp_ratio: Swin attention settings (8, 8, 4.0); odd blocks are shifted by window / 2.
        deformable_groups: groups of the modulated deformable convolutions (8).
        filter_size: size of the dynamic filters (5).
        war_blocks, war_expansion, war_linear_channels: wide-activation blocks of the shallow feature
            extractors (5, 6, int(0.8 * features)).
        head_channels: width of the reconstruction head before pixel shuffle (256, whatever ``features``).
        use_sar: False gives the "w/o SAR" ablation (no SAR stream at all).
        use_align: False gives the "w/o Align" ablation (SAR features reach the dense blocks unaligned).
        residual_init: start as the identity (zero last convolution, ICNR before the pixel shuffle; see
            :class:`~m3rcr.models.blocks.ReconstructionHead`); False: PyTorch's default initialisation, as
            the authors' code. Loaded weights replace either.
        checkpointing: in training with gradients on, keep only each AlignFuse block's inputs and recompute
            its activations in the backward pass (``torch.utils.checkpoint``, non-reentrant): less memory for
            about one more forward pass per step. Outputs, gradients and the state dict are the same either
            way; in eval mode or under ``no_grad`` it changes nothing.

    As in the authors' network, the last block's SAR update (``blocks[-1].fusion.opt_to_sar``) feeds
    nothing downstream: its parameters exist (and are in the authors' checkpoints) but get no gradient.
    """

    def __init__(
        self,
        in_channels: int = 4,
        sar_channels: int = 2,
        out_channels: int = 4,
        features: int = 96,
        growth: int = 48,
        convs_per_block: int = 5,
        blocks: int = 6,
        num_heads: int = 8,
        window: int = 8,
        mlp_ratio: float = 4.0,
        deformable_groups: int = 8,
        filter_size: int = 5,
        war_blocks: int = 5,
        war_expansion: int = 6,
        war_linear_channels: int | None = None,
        head_channels: int = 256,
        use_sar: bool = True,
        use_align: bool = True,
        residual_init: bool = True,
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.checkpointing = checkpointing
        if war_linear_channels is None:
            war_linear_channels = self.config["war_linear_channels"] = int(0.8 * features)
        if out_channels != in_channels:
            raise ValueError("the long skip adds the cloudy input: out_channels must equal in_channels")
        if head_channels % 4:
            raise ValueError("head_channels must be divisible by 4 (pixel shuffle x2)")
        # the space-to-depth input must split into whole windows at every pyramid level
        self.spec = ModelSpec(in_channels, out_channels, sar_channels if use_sar else 0, 2 * math.lcm(window, 4))
        self.opt_features = ShallowFeatures(4 * in_channels, features, war_blocks, war_expansion, war_linear_channels)
        self.sar_features = (ShallowFeatures(4 * sar_channels, features, war_blocks, war_expansion,
                                             war_linear_channels) if use_sar else None)
        self.blocks = nn.ModuleList(
            AlignFuseBlock(features, growth, convs_per_block, num_heads, window, (window // 2) * (i % 2), mlp_ratio,
                           deformable_groups, filter_size, use_sar=use_sar, use_align=use_align)
            for i in range(blocks)
        )
        self.gff = nn.Sequential(conv1x1(blocks * features, features), conv3x3(features, features))
        self.head = ReconstructionHead(features, head_channels, out_channels, residual_init)

    def forward(self, cloudy: torch.Tensor, sar: torch.Tensor | None = None) -> torch.Tensor:
        """``cloudy`` (B, 4, H, W) and ``sar`` (B, 2, H, W) on the same grid -> (B, 4, H, W)."""
        check_inputs(cloudy, sar, self.spec.uses_sar)
        h, w = cloudy.shape[-2:]
        x, _ = pad_to_multiple(self.to_compute(cloudy), self.spec.size_multiple)
        first, opt = self.opt_features(F.pixel_unshuffle(x, 2))
        s = None
        if self.spec.uses_sar:
            s, _ = pad_to_multiple(self.to_compute(sar), self.spec.size_multiple)
            _, s = self.sar_features(F.pixel_unshuffle(s, 2))
        outputs = []
        recompute = self.checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            if recompute:
                # non-reentrant: parameter gradients flow even when no input requires grad, and the RNG
                # and autocast states of the forward pass are restored for the recomputation
                opt, s = checkpoint(block, opt, s, use_reentrant=False)
            else:
                opt, s = block(opt, s)
            outputs.append(opt)
        y = self.gff(torch.cat(outputs, dim=1)) + first
        y = self.head(y)
        return y[..., :h, :w].to(cloudy.dtype) + cloudy  # the skip in the input's type (float32 at bf16)

