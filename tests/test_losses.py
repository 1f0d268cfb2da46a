"""Losses on hand-computed examples."""

from __future__ import annotations

import pytest
import torch

from m3rcr.training.losses import LOSSES
from m3rcr.training.settings import ScheduleConfig


def test_cloud_weighted_charbonnier_by_hand() -> None:
    loss = LOSSES.build("cloud_charbonnier")  # w = 5, eps = 1e-3, alpha = 0.45
    pred = torch.zeros(1, 1, 1, 2)
    target = torch.tensor([[[[0.5, 0.0]]]])
    mask = torch.tensor([[[1.0, 0.0]]])
    cloudy = 6 * (0.25 + 1e-6) ** 0.45  # (1 + 5) on the cloudy pixel
    clear = (0 + 1e-6) ** 0.45
    assert loss(pred, target, mask).item() == pytest.approx((cloudy + clear) / 2, rel=1e-6)
    assert loss(pred, target, None).item() == pytest.approx(((0.25 + 1e-6) ** 0.45 + clear) / 2, rel=1e-6)


def test_per_sample_mean_then_batch_mean() -> None:
    l1 = LOSSES.build("l1")
    pred = torch.zeros(2, 1, 2, 2)
    target = torch.zeros(2, 1, 2, 2)
    target[0] = 1.0  # sample 0: error 1 everywhere; sample 1: none
    assert l1(pred, target).item() == pytest.approx(0.5)
    assert LOSSES.build("l2")(pred, 2 * target).item() == pytest.approx(2.0)
    weighted = LOSSES.build("cloud_charbonnier", weight=1.0, eps=0.0, alpha=0.5)  # = (1 + M) |e|
    mask = torch.zeros(2, 2, 2)
    mask[0, 0, 0] = 1
    assert weighted(pred, target, mask).item() == pytest.approx(((4 + 1) / 4 + 0) / 2)


def test_unknown_loss() -> None:
    with pytest.raises(ValueError, match="unknown loss"):
        LOSSES.build("ssim")


def test_carl_by_hand() -> None:
    loss = LOSSES.build("carl")  # mean[(1-M)|P-I| + M|P-T|] + 1.0 * mean|P-T|
    pred = torch.tensor([[[[0.5, 0.2]]]])
    target = torch.tensor([[[[0.1, 0.2]]]])
    cloudy = torch.tensor([[[[0.9, 0.6]]]])
    mask = torch.tensor([[[1.0, 0.0]]])
    # pixel 0 cloudy: |0.5-0.1| = 0.4; pixel 1 clear: |0.2-0.6| = 0.4; regulariser: mean(0.4, 0) = 0.2
    assert loss(pred, target, mask, cloudy).item() == pytest.approx(0.4 + 0.2)
    with pytest.raises(ValueError, match="needs the cloud mask and the cloudy input"):
        loss(pred, target, mask, None)


def test_adversarial_terms_by_hand() -> None:
    import math

    from m3rcr.training.losses import adversarial_loss
    from m3rcr.training.module import attention_loss, discriminator_loss, generator_loss

    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-1.0, 3.0])
    softplus = lambda x: math.log1p(math.exp(x))
    # the softplus forms McGAN writes: softplus(-D(real)) and softplus(D(fake))
    assert adversarial_loss(real, True).item() == pytest.approx((softplus(-2) + softplus(0)) / 2)
    assert adversarial_loss(fake, False).item() == pytest.approx((softplus(-1) + softplus(3)) / 2)
    d = (softplus(-2) + softplus(0)) / 2 + (softplus(-1) + softplus(3)) / 2
    assert discriminator_loss(real, fake).item() == pytest.approx(d)
    assert discriminator_loss(real, fake, 0.5).item() == pytest.approx(d / 2)  # pix2pix
    att = attention_loss(torch.tensor([[[[0.2, 1.0]]]]), torch.tensor([[[1.0, 1.0]]]))
    assert att.item() == pytest.approx(0.64 / 2)
    g = generator_loss(torch.tensor(1.5), torch.tensor(0.1), att, 1.0, 100.0, 1.0)
    assert g.item() == pytest.approx(1.5 + 10.0 + 0.32)
    assert generator_loss(torch.tensor(1.5), torch.tensor(0.1), None, 1.0, 200.0, 1.0).item() == pytest.approx(21.5)


def test_linear_schedule_is_pix2pix_and_never_negative() -> None:
    f = [ScheduleConfig("linear", constant_epochs=15, decay_epochs=15).factor(e) for e in range(40)]
    assert f[:15] == [1.0] * 15 and f[15] == pytest.approx(1 - 1 / 16) and f[29] == pytest.approx(1 / 16)
    assert f[30:] == [0.0] * 10
    assert [ScheduleConfig("constant").factor(e) for e in (0, 50)] == [1.0, 1.0]
    with pytest.raises(ValueError, match="decay_epochs >= 1"):
        ScheduleConfig("linear", constant_epochs=10, decay_epochs=0)
