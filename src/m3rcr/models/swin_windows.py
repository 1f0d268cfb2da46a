"""Window bookkeeping of Swin attention, owned here rather than taken from timm's private module.

timm keeps these three helpers inside ``timm.models.swin_transformer`` (not its public ``timm.layers``),
and their tuple-window signatures changed within the versions the project allows.
"""

from __future__ import annotations

import torch


def window_partition(x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """(B, H, W, C) -> (B * H/wh * W/ww, wh, ww, C): non-overlapping windows, row by row."""
    b, h, w, c = x.shape
    wh, ww = window
    if h % wh or w % ww:
        raise ValueError(f"a {h}x{w} map does not split into {wh}x{ww} windows")
    x = x.view(b, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh, ww, c)


def window_reverse(windows: torch.Tensor, window: tuple[int, int], h: int, w: int) -> torch.Tensor:
    """The inverse of :func:`window_partition`: (B * nW, wh, ww, C) windows -> the (B, H, W, C) map."""
    wh, ww = window
    c = windows.shape[-1]
    x = windows.view(-1, h // wh, w // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def relative_position_index(wh: int, ww: int) -> torch.Tensor:
    """(wh*ww, wh*ww) index into a ((2wh-1)(2ww-1))-entry bias table: one entry per relative (dy, dx)."""
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")).flatten(1)  # (2, N)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # (N, N, 2): dy, dx in [-(w-1), w-1]
    dy = rel[..., 0] + wh - 1
    dx = rel[..., 1] + ww - 1
    return dy * (2 * ww - 1) + dx
