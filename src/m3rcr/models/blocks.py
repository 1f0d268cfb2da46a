"""Building blocks shared by Align-CR and the baselines that use the same designs (GLF-CR, DSen2-CR).

Every block is a small ``nn.Module`` with explicit constructor arguments and no global state. Blocks
that fuse two modalities take a ``sar`` switch; without it they are the ordinary single-stream block.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import nn
from torch.nn.utils.parametrizations import weight_norm
from torchvision.ops import deform_conv2d

from m3rcr.models.precision import is_channels_last
from m3rcr.models.swin_windows import relative_position_index, window_partition, window_reverse


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "replicate", minimum: int = 0
                    ) -> tuple[torch.Tensor, bool]:
    """Pad the bottom and right of (B, C, H, W) so that H and W are multiples of ``multiple`` (and at
    least ``minimum``); return the padded tensor and whether anything was padded.

    ``mode="reflect"`` falls back to edge replication where the image is too small to reflect.
    """
    h, w = x.shape[-2:]
    th = max(-(-h // multiple) * multiple, -(-minimum // multiple) * multiple)
    tw = max(-(-w // multiple) * multiple, -(-minimum // multiple) * multiple)
    if (th, tw) == (h, w):
        return x, False
    if mode == "reflect" and (th - h >= h or tw - w >= w):
        mode = "replicate"
    return F.pad(x, (0, tw - w, 0, th - h), mode=mode), True


def check_inputs(cloudy: torch.Tensor, sar: torch.Tensor | None, needs_sar: bool) -> None:
    """The common calling convention: ``cloudy`` (B, C, H, W) and, for SAR models, ``sar`` on the same grid."""
    if cloudy.ndim != 4:
        raise ValueError(f"cloudy must be (B, C, H, W), got shape {tuple(cloudy.shape)}")
    if not needs_sar:
        return
    if sar is None:
        raise ValueError("this model fuses SAR: call it as model(cloudy, sar)")
    if sar.ndim != 4 or sar.shape[0] != cloudy.shape[0] or sar.shape[-2:] != cloudy.shape[-2:]:
        raise ValueError(f"sar {tuple(sar.shape)} must have the batch size and H, W of cloudy "
                         f"{tuple(cloudy.shape)} (bring SAR onto the optical grid first)")


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with bias and zero padding 1."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)


def conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    """1x1 convolution with bias."""
    return nn.Conv2d(in_channels, out_channels, 1)


class WideActivationBlock(nn.Module):
    """Residual block with wide activation (WDSR-B): 1x1 expand, ReLU, 1x1 linear squeeze, 3x3, plus input.

    All three convolutions are weight-normalised per output channel.
    """

    def __init__(self, channels: int, expansion: int = 6, linear_channels: int | None = None) -> None:
        super().__init__()
        wide = channels * expansion
        linear = linear_channels if linear_channels is not None else int(0.8 * channels)
        self.body = nn.Sequential(
            weight_norm(conv1x1(channels, wide)),
            nn.ReLU(inplace=True),
            weight_norm(conv1x1(wide, linear)),
            weight_norm(conv3x3(linear, channels)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ShallowFeatures(nn.Module):
    """3x3 convolution + ReLU, then a chain of wide-activation blocks.

    Returns both the rectified first features (for a global residual) and the chain's output.
    """

    def __init__(self, in_channels: int, channels: int, num_blocks: int = 5, expansion: int = 6,
                 linear_channels: int | None = None) -> None:
        super().__init__()
        self.conv = conv3x3(in_channels, channels)
        self.blocks = nn.Sequential(*(WideActivationBlock(channels, expansion, linear_channels)
                                      for _ in range(num_blocks)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = F.relu(self.conv(x))
        return first, self.blocks(first)


def icnr_(conv: nn.Conv2d, scale: int = 2) -> None:
    """ICNR initialisation (Aitken et al. 2017) of a convolution followed by ``PixelShuffle(scale)``: the
    ``scale**2`` output channels that become one sub-pixel group start with identical weights, so the
    untrained layer is a convolution followed by nearest-neighbour upsampling (no checkerboard)."""
    groups = scale * scale
    if conv.out_channels % groups:
        raise ValueError(f"{conv.out_channels} output channels do not pixel-shuffle by {scale}")
    base = nn.Conv2d(conv.in_channels, conv.out_channels // groups, conv.kernel_size, padding=conv.padding)
    with torch.no_grad():
        conv.weight.copy_(base.weight.repeat_interleave(groups, dim=0))
        if conv.bias is not None:
            conv.bias.copy_(base.bias.repeat_interleave(groups, dim=0))


class ReconstructionHead(nn.Sequential):
    """conv3x3 to ``head_channels``, pixel shuffle x2, conv3x3 to the output bands (Align-CR, GLF-CR).

    ``residual_init``: the pixel-shuffle convolution starts with ICNR and the last convolution at zero,
    so that a network adding this head to its input starts as the identity and its first updates carry
    no sub-pixel (checkerboard) pattern. False keeps PyTorch's default initialisation.
    """

    def __init__(self, channels: int, head_channels: int, out_channels: int, residual_init: bool = True) -> None:
        super().__init__(conv3x3(channels, head_channels), nn.PixelShuffle(2), conv3x3(head_channels // 4, out_channels))
        if residual_init:
            icnr_(self[0])
            nn.init.zeros_(self[2].weight)
            nn.init.zeros_(self[2].bias)


class ResBlock(nn.Module):
    """``x + conv3(lrelu(conv3(x)))`` with LeakyReLU(0.1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv3x3(channels, channels), nn.LeakyReLU(0.1, inplace=True),
                                  conv3x3(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ModulatedDeformConv(nn.Module):
    """Modulated deformable convolution v2 (3x3) whose offsets and masks come from a guide feature map.

    ``conv_offset`` maps the guide to ``3 * groups * 9`` channels: offsets are the first
    ``2 * groups * 9`` (torchvision's layout), the mask the sigmoid of the rest.

    ``impl`` picks the kernel: ``torchvision`` (``torchvision.ops.deform_conv2d``), ``sampling``
    (:func:`sampled_deform_conv2d`, the same function built from ``grid_sample`` and a matrix product)
    or ``auto``: ``sampling`` on CPU, where torchvision's backward pass is 5-10x slower, torchvision
    elsewhere.
    """

    impl: str = "auto"
    #: :func:`m3rcr.models.precision.to_inference_precision` leaves this module in float32: offsets and
    #: bilinear sampling are computed in float32 whatever the rest of the model runs in
    keep_float32: bool = True
    #: parameters that channels-last conversion leaves in plain layout: the sampling path reshapes the
    #: weight into a matrix, which a channels-last weight would copy at every call
    plain_layout: tuple[str, ...] = ("weight",)

    def __init__(self, in_channels: int, out_channels: int, deformable_groups: int = 8,
                 guide_channels: int | None = None, kernel_size: int = 3) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.deformable_groups = deformable_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))
        taps = deformable_groups * kernel_size * kernel_size
        self.conv_offset = nn.Conv2d(guide_channels or in_channels, 3 * taps, kernel_size,
                                     padding=kernel_size // 2)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # as nn.Conv2d
        bound = 1 / math.sqrt(self.weight[0].numel())
        nn.init.uniform_(self.bias, -bound, bound)
        # start as an ordinary convolution: zero offsets, mask 0.5 everywhere
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        if _full_precision(guide):
            t = self.conv_offset(guide)
        else:
            # offsets in a 16-bit type would be a tenth of a pixel off at 20 pixels: predict them in float32
            with torch.autocast(guide.device.type, enabled=False):
                t = F.conv2d(guide.float(), self.conv_offset.weight.float(), self.conv_offset.bias.float(),
                             padding=self.conv_offset.padding)
        n_offset = 2 * self.deformable_groups * self.kernel_size * self.kernel_size
        offset, mask = t[:, :n_offset], torch.sigmoid(t[:, n_offset:])
        if self.impl not in ("auto", "torchvision", "sampling"):
            raise ValueError(f"impl must be 'auto', 'torchvision' or 'sampling', got {self.impl!r}")
        sampling = self.impl == "sampling" or (self.impl == "auto" and x.device.type == "cpu")
        kernel = sampled_deform_conv2d if sampling and min(x.shape[-2:]) > 1 else deform_conv2d
        pad = self.kernel_size // 2
        if _full_precision(x):
            return _like(kernel(x, offset, self.weight, self.bias, padding=pad, mask=mask), x)
        # bilinear sampling needs float32 (torchvision has no half-precision CPU kernel; on CUDA its
        # autocast rule does the same); the result stays float32, as autocast does for precision-bound ops
        autocast = torch.is_autocast_enabled(x.device.type)
        with torch.autocast(x.device.type, enabled=False):
            out = kernel(x.float(), offset.float(), self.weight.float(), self.bias.float(), padding=pad,
                         mask=mask.float())
        return _like(out if autocast else out.to(x.dtype), x)


def _full_precision(x: torch.Tensor) -> bool:
    """Whether work on ``x`` runs in float32/float64 as it is: neither a 16-bit map nor autocast."""
    return x.dtype in (torch.float32, torch.float64) and not torch.is_autocast_enabled(x.device.type)


def _like(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``out`` in ``x``'s memory format: a channels-last model stays channels-last after a layer whose
    kernel writes plain (NCHW) maps, instead of every later convolution reordering its input."""
    if is_channels_last(x) and not is_channels_last(out):
        return out.contiguous(memory_format=torch.channels_last)
    return out


@contextlib.contextmanager
def _set_on(modules: list[nn.Module], name: str, value: object) -> Iterator[None]:
    """Set attribute ``name`` of each of ``modules`` to ``value`` inside the block, then restore each one's."""
    before = [getattr(m, name) for m in modules]
    try:
        for m in modules:
            setattr(m, name, value)
        yield
    finally:
        for m, old in zip(modules, before):
            setattr(m, name, old)


def deform_conv_impl(model: nn.Module, impl: str) -> contextlib.AbstractContextManager[None]:
    """Run every :class:`ModulatedDeformConv` of ``model`` with kernel ``impl`` inside the block."""
    return _set_on([m for m in model.modules() if isinstance(m, ModulatedDeformConv)], "impl", impl)


def fast_paths(model: nn.Module, enabled: bool) -> contextlib.AbstractContextManager[None]:
    """Run the blocks of ``model`` that have a fast path (``fast`` attribute: :class:`ResidualDenseBlock`,
    :class:`DynamicFilterFusion`, :class:`WindowAttention`) with it on or off inside the block; off is the
    original formulation, kept so that benchmarks and tests can compare both in one process."""
    kinds = (ResidualDenseBlock, DynamicFilterFusion, WindowAttention)
    return _set_on([m for m in model.modules() if isinstance(m, kinds)], "fast", enabled)


def sampled_deform_conv2d(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                          padding: int, mask: torch.Tensor) -> torch.Tensor:
    """Modulated deformable convolution (stride 1, dilation 1) as bilinear sampling plus a matrix product.

    The same function as ``torchvision.ops.deform_conv2d`` with the same argument layouts (offsets as
    (dy, dx) per group and tap, zero outside the image), built from ``grid_sample`` so that autograd
    uses its fast backward pass. Needs H, W >= 2 (``align_corners`` maps a single row to one point).
    """
    b, c, h, w = x.shape
    c_out, _, k, _ = weight.shape
    taps = k * k
    groups = mask.shape[1] // taps
    dt, dev = x.dtype, x.device
    tap_y, tap_x = torch.meshgrid(torch.arange(k, device=dev, dtype=dt), torch.arange(k, device=dev, dtype=dt),
                                  indexing="ij")
    off = offset.view(b, groups, taps, 2, h, w)
    rows = torch.arange(h, device=dev, dtype=dt).view(1, 1, 1, h, 1)
    cols = torch.arange(w, device=dev, dtype=dt).view(1, 1, 1, 1, w)
    y = rows + (tap_y.reshape(1, 1, taps, 1, 1) - padding) + off[:, :, :, 0]
    xx = cols + (tap_x.reshape(1, 1, taps, 1, 1) - padding) + off[:, :, :, 1]
    # align_corners=True: -1 and 1 are the centres of the first and last pixels
    grid = torch.stack([xx * (2.0 / (w - 1)) - 1, y * (2.0 / (h - 1)) - 1], dim=-1).view(b * groups, taps * h, w, 2)
    sampled = F.grid_sample(x.reshape(b * groups, c // groups, h, w), grid, mode="bilinear", padding_mode="zeros",
                            align_corners=True)
    sampled = sampled.view(b, groups, c // groups, taps, h, w)
    # without autograd the sampled taps are a temporary: modulate them in place, saving a 9x-sized copy
    mask = mask.view(b, groups, 1, taps, h, w)
    sampled = sampled * mask if torch.is_grad_enabled() else sampled.mul_(mask)
    out = torch.matmul(weight.reshape(c_out, c * taps), sampled.reshape(b, c * taps, h * w)).view(b, c_out, h, w)
    return out + bias.view(1, -1, 1, 1) if bias is not None else out


def shifted_window_mask(height: int, width: int, window: int, shift: int, device: torch.device | None = None
                        ) -> torch.Tensor:
    """Swin's attention mask for shifted windows: (num_windows, window^2, window^2), 0 or -100."""
    region = torch.zeros(1, height, width, 1, device=device)
    count = 0
    for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for ws in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            region[:, hs, ws, :] = count
            count += 1
    windows = window_partition(region, (window, window)).view(-1, window * window)
    diff = windows.unsqueeze(1) - windows.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


class WindowAttention(nn.Module):
    """Multi-head self-attention in non-overlapping windows with a relative-position bias.

    With ``sar=True`` (the cross-modal attention of Align-CR / GLF-CR) a second stream has its own
    ``qkv_sar`` / ``proj_sar``; both streams share the relative-position table, and the SAR-guided gate
    ``g = sigmoid(gate(As - A))`` (a 1x1 convolution over the head axis of the logit grids) moves the
    optical logits towards the SAR ones: ``A + (As - A) * g``. The SAR stream itself is not changed.

    ``fast`` (class attribute, default True): the single-stream attention runs through PyTorch's
    ``scaled_dot_product_attention``; the cross-modal gate needs both logit grids, so ``sar=True`` always
    takes the explicit path. False keeps the explicit path everywhere (the reference).
    """

    fast: bool = True

    def __init__(self, dim: int, num_heads: int, window: int, sar: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.window = window
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        trunc_normal_(self.relative_position_bias_table, std=0.02)
        # depends on the window only, never on the input size; recomputed, not stored in checkpoints
        self.register_buffer("relative_position_index", relative_position_index(window, window),
                             persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.sar = sar
        if sar:
            self.qkv_sar = nn.Linear(dim, 3 * dim)
            self.proj_sar = nn.Linear(dim, dim)
            self.gate = nn.Conv2d(num_heads, num_heads, 1)

    def _logits(self, x: torch.Tensor, qkv: nn.Linear, mask: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, c = x.shape
        q, k, v = qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        logits = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        logits = logits + bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            logits = logits.view(b // nw, nw, self.num_heads, n, n) + mask.to(logits.dtype)[None, :, None]
            logits = logits.view(b, self.num_heads, n, n)
        return logits, v

    @staticmethod
    def _attend(logits: torch.Tensor, v: torch.Tensor, proj: nn.Linear) -> torch.Tensor:
        b, _, n, _ = logits.shape
        wide = torch.float32 if logits.dtype in (torch.float16, torch.bfloat16) else None  # 16-bit logits
        out = logits.softmax(dim=-1, dtype=wide).to(v.dtype) @ v
        return proj(out.transpose(1, 2).reshape(b, n, -1))

    def _fused(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The single-stream attention through ``scaled_dot_product_attention``, the bias and the shift
        mask as its additive ``attn_mask`` (the same softmax(q k^T * scale + bias + mask) v)."""
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn_mask = bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0).to(q.dtype)  # (1, heads, n, n)
        if mask is not None:
            nw = mask.shape[0]
            attn_mask = (attn_mask + mask.to(q.dtype)[:, None]).unsqueeze(0).expand(b // nw, -1, -1, -1, -1)
            attn_mask = attn_mask.reshape(b, self.num_heads, n, n)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))

    def forward(self, x: torch.Tensor, x_sar: torch.Tensor | None = None, mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Windows of tokens (num_windows * B, window^2, C) for each stream -> attended tokens."""
        if not self.sar and self.fast:
            return self._fused(x, mask), None
        logits, v = self._logits(x, self.qkv, mask)
        if not self.sar:
            return self._attend(logits, v, self.proj), None
        if x_sar is None:
            raise ValueError("cross-modal attention needs the SAR tokens")
        logits_sar, v_sar = self._logits(x_sar, self.qkv_sar, mask)
        diff = logits_sar - logits
        logits = logits + diff * torch.sigmoid(self.gate(diff))
        return self._attend(logits, v, self.proj), self._attend(logits_sar, v_sar, self.proj_sar)


class SwinBlock(nn.Module):
    """A (cross-modal) Swin transformer block on feature maps (B, C, H, W).

    Pre-norm window attention (shifted by ``shift`` if non-zero) with a residual, then a pre-norm MLP
    (GELU) with a residual; every sub-layer exists per stream except what :class:`WindowAttention`
    shares. H and W must be multiples of ``window``; the shift mask is computed for the actual size.

    ``pre_norm=False`` drops the LayerNorm before attention (GLF-CR); ``drop_path`` is the stochastic
    depth rate of both residual branches; ``single_window_no_shift`` skips the shift on maps that are one
    window high or wide (GLF-CR's rule; Align-CR always shifts).
    """

    def __init__(self, dim: int, num_heads: int = 8, window: int = 8, shift: int = 0, mlp_ratio: float = 4.0,
                 sar: bool = True, pre_norm: bool = True, drop_path: float = 0.0,
                 single_window_no_shift: bool = False) -> None:
        super().__init__()
        self.window, self.shift, self.sar = window, shift, sar
        self.single_window_no_shift = single_window_no_shift
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim) if pre_norm else nn.Identity()
        self.attn = WindowAttention(dim, num_heads, window, sar=sar)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        if sar:
            self.norm1_sar = nn.LayerNorm(dim) if pre_norm else nn.Identity()
            self.norm2_sar = nn.LayerNorm(dim)
            self.mlp_sar = Mlp(dim, hidden)
        self._masks: dict[tuple[int, int, str], torch.Tensor] = {}

    def _shift_for(self, h: int, w: int) -> int:
        if self.single_window_no_shift and min(h, w) <= self.window:
            return 0
        return self.shift

    def _mask(self, h: int, w: int, shift: int, device: torch.device) -> torch.Tensor | None:
        if not shift:
            return None
        if torch.compiler.is_compiling():  # a cache filled inside the graph would make it recompile
            return shifted_window_mask(h, w, self.window, shift, device)
        key = (h, w, str(device))
        if key not in self._masks:  # a cache of a pure function of the size, not model state
            if len(self._masks) >= 8:  # tiling many sizes must not grow memory without bound
                self._masks.pop(next(iter(self._masks)))
            self._masks[key] = shifted_window_mask(h, w, self.window, shift, device)
        return self._masks[key]

    def _windows(self, tokens: torch.Tensor, norm: nn.Module, h: int, w: int, shift: int) -> torch.Tensor:
        b, _, c = tokens.shape
        x = norm(tokens).view(b, h, w, c)
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        return window_partition(x, (self.window, self.window)).view(-1, self.window * self.window, c)

    def _merge(self, windows: torch.Tensor, b: int, h: int, w: int, shift: int) -> torch.Tensor:
        c = windows.shape[-1]
        x = window_reverse(windows.view(-1, self.window, self.window, c), (self.window, self.window), h, w)
        if shift:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        return x.reshape(b, h * w, c)

    def forward(self, x: torch.Tensor, x_sar: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, c, h, w = x.shape
        if h % self.window or w % self.window:
            raise ValueError(f"feature map {h}x{w} is not a multiple of the window {self.window}")
        shift = self._shift_for(h, w)
        mask = self._mask(h, w, shift, x.device)
        t = x.flatten(2).transpose(1, 2)  # tokens in row-major pixel order
        t_sar = x_sar.flatten(2).transpose(1, 2) if self.sar else None
        a, a_sar = self.attn(self._windows(t, self.norm1, h, w, shift),
                             self._windows(t_sar, self.norm1_sar, h, w, shift) if self.sar else None, mask)
        t = t + self.drop_path(self._merge(a, b, h, w, shift))
        t = t + self.drop_path(self.mlp(self.norm2(t)))
        out = t.transpose(1, 2).reshape(b, c, h, w)
        if not self.sar:
            return out, None
        t_sar = t_sar + self.drop_path(self._merge(a_sar, b, h, w, shift))
        t_sar = t_sar + self.drop_path(self.mlp_sar(self.norm2_sar(t_sar)))
        return out, t_sar.transpose(1, 2).reshape(b, c, h, w)


class ResidualDenseBlock(nn.Module):
    """Residual dense block with a (cross-modal) Swin block before the residual, per stream.

    Dense steps ``x = cat[x, relu(conv3(x))]`` (``num_convs`` of them, growth ``growth``), local
    fusion ``conv3`` back to ``channels``, the Swin block on both streams, plus the block input.

    ``fast`` (class attribute, default True): without autograd, the dense steps write into one
    preallocated map instead of concatenating at every step; False keeps the concatenating path
    (same result, kept as the reference; see :func:`fast_paths`).
    """

    fast: bool = True

    def __init__(self, channels: int, growth: int, num_convs: int, num_heads: int = 8, window: int = 8,
                 shift: int = 0, mlp_ratio: float = 4.0, sar: bool = True) -> None:
        super().__init__()
        self.sar = sar
        self.dense_opt = self._dense(channels, growth, num_convs)
        self.fuse_opt = conv3x3(channels + num_convs * growth, channels)
        if sar:
            self.dense_sar = self._dense(channels, growth, num_convs)
            self.fuse_sar = conv3x3(channels + num_convs * growth, channels)
        self.swin = SwinBlock(channels, num_heads, window, shift, mlp_ratio, sar=sar)

    @staticmethod
    def _dense(channels: int, growth: int, num_convs: int) -> nn.ModuleList:
        return nn.ModuleList(conv3x3(channels + i * growth, growth) for i in range(num_convs))

    def _run(self, x: torch.Tensor, convs: nn.ModuleList, fuse: nn.Conv2d) -> torch.Tensor:
        if (not self.fast or torch.is_grad_enabled() or torch.is_autocast_enabled(x.device.type)
                or is_channels_last(x)):
            # autograd saves each convolution's input, so the growing map cannot be written in place;
            # under autocast the concatenation also promotes the map's type, which the buffer would fix;
            # in channels-last memory a channel prefix is not contiguous, so each convolution would copy
            # its input anyway (the concatenation's copy is then the only one)
            for conv in convs:
                x = torch.cat([x, F.relu(conv(x))], dim=1)
            return fuse(x)
        # inference: one buffer holds the whole dense map; each step reads a prefix of its channels and
        # writes its growth after it, instead of copying the map again at every step
        b, c, h, w = x.shape
        growth = convs[0].out_channels if len(convs) else 0
        buf = x.new_empty(b, c + len(convs) * growth, h, w)
        buf[:, :c] = x
        for conv in convs:
            torch.clamp_min(conv(buf[:, :c]), 0.0, out=buf[:, c:c + growth])  # ReLU, written in place
            c += growth
        return fuse(buf)

    def forward(self, x: torch.Tensor, x_sar: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        a = self._run(x, self.dense_opt, self.fuse_opt)
        a_sar = self._run(x_sar, self.dense_sar, self.fuse_sar) if self.sar else None
        a, a_sar = self.swin(a, a_sar)
        return a + x, (a_sar + x_sar if self.sar else None)


def dynamic_filter(x: torch.Tensor, kernels: torch.Tensor, size: int) -> torch.Tensor:
    """Per-pixel, per-channel ``size x size`` filtering of ``x`` (B, C, H, W) with replicate padding.

    ``kernels`` is (B, C * size^2, H, W), channel ``size^2 * c + size * i + j`` weighting the neighbour
    at row offset ``i`` and column offset ``j`` (0-based from the top-left of the window) of channel c.
    """
    b, c, h, w = x.shape
    return _tap_major_filter(x, kernels.view(b, c, size * size, h, w).transpose(1, 2), size)


def _tap_major_filter(x: torch.Tensor, taps: torch.Tensor, size: int) -> torch.Tensor:
    """:func:`dynamic_filter` with the kernels as a (B, size^2, C, H, W) view, tap ``size * i + j`` first."""
    p = size // 2
    if taps.stride(2) == 1 and not is_channels_last(x):  # channels-last kernels: filter a channels-last map
        x = x.contiguous(memory_format=torch.channels_last)
    return _ShiftedFilter.apply(F.pad(x, (p, p, p, p), mode="replicate"), taps, size)


class _ShiftedFilter(torch.autograd.Function):
    """:func:`dynamic_filter` on the padded map as one multiply-add per tap on shifted views. ``unfold``
    would copy the map size^2 times first (~10x slower); autograd through the slices would allocate a
    zero-filled full-size gradient per tap, so the backward pass writes the taps' gradients itself.

    The kernels come as a (B, taps, C, H, W) view in any layout; in channels-last memory, kernels predicted
    in tap-major channel order give each tap's slice unit stride along C, as the padded map has."""

    @staticmethod
    def forward(ctx, xp: torch.Tensor, k: torch.Tensor, size: int) -> torch.Tensor:
        h, w = xp.shape[-2] - size + 1, xp.shape[-1] - size + 1
        # mixed inputs (autocast) compute in the promoted type; gradients go back in each input's type
        ctx.dtypes = xp.dtype, k.dtype
        dt = torch.promote_types(xp.dtype, k.dtype)
        xp, k = xp.to(dt), k.to(dt)
        ctx.save_for_backward(xp, k)
        ctx.size = size
        out = xp[:, :, :h, :w] * k[:, 0]
        for tap in range(1, size * size):
            i, j = divmod(tap, size)
            out.addcmul_(xp[:, :, i:i + h, j:j + w], k[:, tap])
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        xp, k = ctx.saved_tensors
        size = ctx.size
        h, w = k.shape[-2:]
        grad = grad.to(k.dtype)
        grad_xp = torch.zeros_like(xp) if ctx.needs_input_grad[0] else None
        grad_k = torch.empty_like(k) if ctx.needs_input_grad[1] else None  # k's strides, so k's layout
        for tap in range(size * size):
            i, j = divmod(tap, size)
            if grad_xp is not None:
                grad_xp[:, :, i:i + h, j:j + w].addcmul_(grad, k[:, tap])
            if grad_k is not None:
                torch.mul(grad, xp[:, :, i:i + h, j:j + w], out=grad_k[:, tap])
        return (grad_xp.to(ctx.dtypes[0]) if grad_xp is not None else None,
                grad_k.to(ctx.dtypes[1]) if grad_k is not None else None, None)


def dynamic_filter_unfold(x: torch.Tensor, kernels: torch.Tensor, size: int) -> torch.Tensor:
    """:func:`dynamic_filter` as ``unfold`` + multiply + sum: the original formulation, kept as the
    reference of the tests and benchmarks."""
    b, c, h, w = x.shape
    p = size // 2
    patches = F.unfold(F.pad(x, (p, p, p, p), mode="replicate"), size)  # (B, C * size^2, H * W)
    return (patches * kernels.flatten(2)).view(b, c, size * size, h * w).sum(dim=2).view(b, c, h, w)


class DynamicFilterFusion(nn.Module):
    """SAR-based local compensation: predict per-pixel filters from both streams, filter the SAR
    features, then exchange information through two sigmoid-gated updates::

        sar_f = filter(sar)
        opt'  = opt + (sar_f - opt) * sigmoid(sar_to_opt(sar_f - opt))
        sar'  = sar + (opt' - sar_f) * sigmoid(opt_to_sar(opt' - sar_f))

    ``fast`` (class attribute, default True) picks :func:`dynamic_filter`; False the original
    :func:`dynamic_filter_unfold` (same result; see :func:`fast_paths`).
    """

    fast: bool = True

    def __init__(self, channels: int, filter_size: int = 5) -> None:
        super().__init__()
        self.filter_size = filter_size
        self.kernel_net = nn.Sequential(
            nn.Sequential(conv3x3(2 * channels, channels), nn.LeakyReLU(0.1, inplace=True)),
            ResBlock(channels),
            ResBlock(channels),
            nn.Sequential(conv1x1(channels, filter_size * filter_size * channels), nn.LeakyReLU(0.1, inplace=True)),
        )
        self.sar_to_opt = conv1x1(channels, channels)
        self.opt_to_sar = conv1x1(channels, channels)

    def _tap_major_kernels(self, x: torch.Tensor) -> torch.Tensor:
        """``kernel_net(x)`` as a (B, taps, C, H, W) view: the last convolution's output channels are
        reordered tap-major (its weight rows permuted, a small copy) so that each tap is one C-slice."""
        conv, act = self.kernel_net[-1]
        taps = self.filter_size * self.filter_size
        c = conv.out_channels // taps
        weight = conv.weight.view(c, taps, *conv.weight.shape[1:]).transpose(0, 1).flatten(0, 1)
        bias = conv.bias.view(c, taps).t().flatten()
        k = act(F.conv2d(self.kernel_net[:-1](x), weight, bias))
        return k.view(k.shape[0], taps, c, *k.shape[-2:])

    def forward(self, opt: torch.Tensor, sar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        both = torch.cat([opt, sar], dim=1)
        if self.fast:
            sar_f = _tap_major_filter(sar, self._tap_major_kernels(both), self.filter_size)
        else:
            sar_f = dynamic_filter_unfold(sar, self.kernel_net(both), self.filter_size)
        d = sar_f - opt
        opt = opt + d * torch.sigmoid(self.sar_to_opt(d))
        d = opt - sar_f
        return opt, sar + d * torch.sigmoid(self.opt_to_sar(d))
