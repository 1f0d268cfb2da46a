"""The Swin window helpers m3rcr owns: round trip, layout, and agreement with timm's where it has them."""

from __future__ import annotations

import pytest
import torch

from m3rcr.models.swin_windows import relative_position_index, window_partition, window_reverse


@pytest.mark.parametrize("h, w, wh, ww", [(8, 8, 4, 4), (6, 12, 3, 4), (4, 4, 4, 4)])
def test_partition_and_reverse_round_trip(h: int, w: int, wh: int, ww: int) -> None:
    x = torch.randn(2, h, w, 3)
    windows = window_partition(x, (wh, ww))
    assert windows.shape == (2 * (h // wh) * (w // ww), wh, ww, 3)
    assert torch.equal(windows[0], x[0, :wh, :ww])  # row by row: the first window is the top-left one
    if w > ww:
        assert torch.equal(windows[1], x[0, :wh, ww:2 * ww])
    assert torch.equal(window_reverse(windows, (wh, ww), h, w), x)


def test_partition_refuses_a_map_that_does_not_split() -> None:
    with pytest.raises(ValueError, match="does not split"):
        window_partition(torch.zeros(1, 7, 8, 1), (4, 4))


def test_relative_position_index_counts_each_offset_once() -> None:
    index = relative_position_index(3, 4)
    assert index.shape == (12, 12) and index.dtype == torch.long
    assert set(index.unique().tolist()) == set(range((2 * 3 - 1) * (2 * 4 - 1)))
    centre = (3 - 1) * (2 * 4 - 1) + (4 - 1)  # offset (0, 0)
    assert torch.equal(index.diagonal(), torch.full((12,), centre))
    # position 0 (top-left) seen from position 5 (row 1, col 1): offset (-1, -1)
    assert index[0, 5] == (3 - 1 - 1) * (2 * 4 - 1) + (4 - 1 - 1)


def test_agrees_with_timm() -> None:
    swin = pytest.importorskip("timm.models.swin_transformer", reason="timm's Swin module is not importable")
    if not hasattr(swin, "get_relative_position_index"):
        pytest.skip("this timm has no get_relative_position_index")
    assert torch.equal(relative_position_index(4, 5), swin.get_relative_position_index(4, 5))
    x = torch.randn(2, 8, 10, 3)
    assert torch.equal(window_partition(x, (4, 5)), swin.window_partition(x, (4, 5)))
    windows = window_partition(x, (4, 5))
    assert torch.equal(window_reverse(windows, (4, 5), 8, 10), swin.window_reverse(windows, (4, 5), 8, 10))
