"""Losses on hand-computed examples."""

from __future__ import annotations

import pytest
import torch

from m3rcr.training.losses import create_loss


def test_cloud_weighted_charbonnier_by_hand() -> None:
    loss = create_loss("cloud_charbonnier")  # w = 5, eps = 1e-3, alpha = 0.45
    pred = torch.zeros(1, 1, 1, 2)
    target = torch.tensor([[[[0.5, 0.0]]]])
    mask = torch.tensor([[[1.0, 0.0]]])
    cloudy = 6 * (0.25 + 1e-6) ** 0.45  # (1 + 5) on the cloudy pixel
    clear = (0 + 1e-6) ** 0.45
    assert loss(pred, target, mask).item() == pytest.approx((cloudy + clear) / 2, rel=1e-6)
    assert loss(pred, target, None).item() == pytest.approx(((0.25 + 1e-6) ** 0.45 + clear) / 2, rel=1e-6)


def test_per_sample_mean_then_batch_mean() -> None:
    l1 = create_loss("l1")
    pred = torch.zeros(2, 1, 2, 2)
    target = torch.zeros(2, 1, 2, 2)
    target[0] = 1.0  # sample 0: error 1 everywhere; sample 1: none
    assert l1(pred, target).item() == pytest.approx(0.5)
    assert create_loss("l2")(pred, 2 * target).item() == pytest.approx(2.0)
    weighted = create_loss("cloud_charbonnier", weight=1.0, eps=0.0, alpha=0.5)  # = (1 + M) |e|
    mask = torch.zeros(2, 2, 2)
    mask[0, 0, 0] = 1
    assert weighted(pred, target, mask).item() == pytest.approx(((4 + 1) / 4 + 0) / 2)


def test_unknown_loss() -> None:
    with pytest.raises(ValueError, match="unknown loss"):
        create_loss("ssim")
