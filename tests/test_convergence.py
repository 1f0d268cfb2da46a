"""Can the models learn at all? Every registry model overfits one synthetic tile; long skips start as the
identity; the training recipe does what its configuration says (learning rates, schedules, crops,
augmentation)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import TINY

from m3rcr.data import M3RCRDataset, Sampling
from m3rcr.models import create_model, list_models
from m3rcr.training.config import load_config
from m3rcr.training.module import CloudRemovalModule, GANModule
from m3rcr.training.settings import Component, GANConfig, OptimConfig, ScheduleConfig

#: the models whose output is the cloudy input plus a learned residual
LONG_SKIP = ("aligncr", "aligncr_wo_align", "aligncr_wo_sar", "dsen2cr", "glfcr")
#: steps allowed to overfit one 32 x 32 tile, and the MAE that counts as fitted (0.5 % reflectance);
#: the untrained models are 10-50 times further off
OVERFIT_STEPS = 400
FITTED_MAE = 0.0075  # near zero: 1/24 of the untrained MAE; the models reach 0.003-0.005 here, margin for other CPUs
#: a little wider than the tiny test models (8 features cannot memorise 4096 values); no stochastic depth
OVERFIT = {**TINY,
           "aligncr": {**TINY["aligncr"], "features": 16, "growth": 8, "head_channels": 32},
           "dsen2cr": {**TINY["dsen2cr"], "features": 16},
           "glfcr": {**TINY["glfcr"], "features": 16, "growth": 8, "head_channels": 32, "drop_path": 0.0}}
OVERFIT["aligncr_wo_sar"] = OVERFIT["aligncr_wo_align"] = OVERFIT["aligncr"]


@pytest.fixture(scope="module")
def tile(synth_root: Path) -> dict[str, torch.Tensor]:
    """A 32 x 32 crop of one cloudy synthetic training tile (about half of it cloudy)."""
    ds = M3RCRDataset(synth_root, "train", sampling=Sampling(crop_size=None))
    best = min(range(len(ds)), key=lambda i: abs(float(ds[i]["cloud_cover"]) - 0.5))
    s = ds[best]
    mask = s["cloudmask"].numpy()
    # the 32 x 32 window whose cloud cover is closest to one half
    windows = [(r, c) for r in range(0, 300 - 32, 12) for c in range(0, 300 - 32, 12)]
    r, c = min(windows, key=lambda w: abs(mask[w[0]:w[0] + 32, w[1]:w[1] + 32].mean() - 0.5))
    crop = {k: s[k][..., r:r + 32, c:c + 32].unsqueeze(0) for k in ("cloudy", "cloudfree", "sar")}
    crop["cloudmask"] = s["cloudmask"][r:r + 32, c:c + 32].unsqueeze(0)
    return crop


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.slow
def test_every_model_overfits_one_tile(name: str, tile: dict[str, torch.Tensor]) -> None:
    assert set(TINY) == set(list_models())
    torch.manual_seed(0)
    config = {k: v for k, v in OVERFIT[name].items() if k != "residual_init"}  # the default start
    net = create_model(name, **config)
    net.train()
    if hasattr(net, "config") and "dropout" in net.config:  # pix2pix dropout is noise, not capacity
        for m in net.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
    x, y, s = tile["cloudy"], tile["cloudfree"], tile["sar"]
    # the recipe's split: alignment blocks learn 10 times slower (CloudRemovalModule's align_lr)
    align = [p for n, p in net.named_parameters() if ".align." in n]
    rest = [p for n, p in net.named_parameters() if ".align." not in n]
    opt = torch.optim.Adam([{"params": rest, "lr": 3e-3}, {"params": align, "lr": 3e-4}])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, OVERFIT_STEPS)
    start = (net(x, s) - y).abs().mean().item()
    for _ in range(OVERFIT_STEPS):
        loss = (net(x, s) - y).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    with torch.no_grad():
        end = (net(x, s) - y).abs().mean().item()
    print(f"overfit {name}: MAE {start:.4f} -> {end:.4f} in {OVERFIT_STEPS} steps")  # shown with pytest -s
    assert end < FITTED_MAE < start / 10, (name, start, end)


@pytest.mark.parametrize("name", LONG_SKIP)
def test_untrained_long_skip_models_are_the_identity(name: str) -> None:
    """The residual branch starts at zero (``residual_init``), so an untrained model returns its input
    exactly: no colour cast, no checkerboard before the first update."""
    config = {k: v for k, v in TINY[name].items() if k != "residual_init"}
    net = create_model(name, **config).eval()
    x, s = torch.rand(2, 4, 40, 56), torch.rand(2, 2, 40, 56)
    with torch.no_grad():
        assert torch.equal(net(x, s), x)
    random = create_model(name, **TINY[name]).eval()  # PyTorch's default initialisation instead
    with torch.no_grad():
        assert not torch.equal(random(x, s), x)


@pytest.mark.parametrize("name", ("aligncr", "glfcr"))
def test_pixel_shuffle_head_starts_without_a_checkerboard(name: str) -> None:
    """ICNR: the four sub-pixel phases of the pixel-shuffle convolution start equal, so the first update
    of the (zero) last convolution adds a smooth, not a 2 x 2 periodic, pattern."""
    config = {k: v for k, v in TINY[name].items() if k != "residual_init"}
    head = create_model(name, **config).head
    feats = torch.randn(1, head[0].in_channels, 8, 10)
    with torch.no_grad():
        up = head[1](head[0](feats))
    phases = [up[..., i::2, j::2] for i in (0, 1) for j in (0, 1)]
    for p in phases[1:]:
        torch.testing.assert_close(p, phases[0])


def test_learning_rates_follow_the_schedule(synth_root: Path, tmp_path: Path) -> None:
    """What the optimiser actually uses, epoch by epoch, is lr x the schedule's factor (alignment blocks:
    align_lr), as logged by the run."""
    import csv

    from m3rcr.training.run import train

    run = train(load_config(None, [
        f"data.root={synth_root}", "model.config={features: 8, growth: 4, convs_per_block: 1, blocks: 1, "
        "num_heads: 2, war_blocks: 1, head_channels: 16, deformable_groups: 2}", "data.batch_size=2",
        "data.crop_size=32", "data.eval_crop_size=32", "data.val_fraction=0.3", "trainer.accelerator=cpu",
        "trainer.max_epochs=4", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
        "trainer.enable_model_summary=false", "run.progress_bar=false", f"run.dir={tmp_path / 'r'}",
        "optim.lr=0.004", "optim.align_lr=0.0004", "schedule.constant_epochs=2", "schedule.step_epochs=1",
        "schedule.gamma=0.25"]))
    with open(run / "logs" / "csv" / "metrics.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("lr-Adam/network")]
    net = [float(r["lr-Adam/network"]) for r in rows]
    align = [float(r["lr-Adam/align"]) for r in rows]
    expected = [0.004 * ScheduleConfig("step", 2, 1, 0.25).factor(e) for e in range(4)]
    assert net == pytest.approx(expected) and align == pytest.approx([v / 10 for v in expected])
    assert expected == pytest.approx([0.004, 0.004, 0.001, 0.00025])


@pytest.mark.parametrize("kind,kwargs,expected", [
    ("step", dict(constant_epochs=2, step_epochs=2, gamma=0.5), [1, 1, 0.5, 0.5, 0.25, 0.25]),
    ("linear", dict(constant_epochs=2, decay_epochs=3), [1, 1, 0.75, 0.5, 0.25, 0.0]),
    ("constant", {}, [1] * 6),
])
def test_schedule_factors(kind: str, kwargs: dict, expected: list[float]) -> None:
    assert [ScheduleConfig(kind, **kwargs).factor(e) for e in range(6)] == pytest.approx(expected)


def test_gan_optimisers_follow_their_schedule() -> None:
    module = GANModule(Component("mcgan", TINY["mcgan"]), Component("l1"),
                       GANConfig("two_stream", {"base_channels": 4}, d_lr=1e-4), OptimConfig(lr=2e-4),
                       ScheduleConfig("linear", constant_epochs=1, decay_epochs=1))
    (opt_g, opt_d), scheds = module.configure_optimizers()
    assert [g["lr"] for g in opt_g.param_groups] == [2e-4] and [g["lr"] for g in opt_d.param_groups] == [1e-4]
    for s in scheds:
        s.step()
        s.step()
    assert opt_g.param_groups[0]["lr"] == pytest.approx(0.0) and opt_d.param_groups[0]["lr"] == pytest.approx(0.0)
    cr = CloudRemovalModule(Component("dsen2cr", TINY["dsen2cr"]), Component("l1"), OptimConfig(lr=3e-4, align_lr=1e-9))
    groups = cr.configure_optimizers()["optimizer"].param_groups
    assert [g["name"] for g in groups] == ["network"]  # no alignment blocks: align_lr is unused


def test_training_crops_and_augmentation_are_as_configured(synth_root: Path) -> None:
    """Random crops of crop_size cover the whole tile over draws, every one of the 8 flips / quarter
    turns occurs, each modality gets the same transform, and evaluation crops are centred."""
    ds = M3RCRDataset(synth_root, "train", sampling=Sampling(crop_size=48, crop="random", augment=True, seed=3))
    full = M3RCRDataset(synth_root, "train", sampling=Sampling(crop_size=None))[0]
    origins, transforms = set(), set()
    ref = full["cloudfree"].numpy()
    for epoch in range(40):
        ds.set_epoch(epoch)
        s = ds[0]
        assert s["cloudfree"].shape == (4, 48, 48) and s["sar"].shape == (2, 48, 48)
        assert s["cloudmask"].shape == (48, 48) and s["landcover"].shape == (48, 48)
        crop = s["cloudfree"].numpy()
        found = None
        for k in range(4):  # undo the rotation / flip to find where the crop came from
            for flip in (False, True):
                c = np.rot90(crop, -k, axes=(1, 2))
                c = c[:, :, ::-1] if flip else c
                hits = np.argwhere(ref[0] == c[0, 0, 0])
                for r, col in hits:
                    if r + 48 <= 300 and col + 48 <= 300 and np.array_equal(ref[:, r:r + 48, col:col + 48], c):
                        found = (int(r), int(col), k, flip)
                        break
                if found:
                    break
            if found:
                break
        assert found is not None, f"epoch {epoch}: the crop is not a flipped / turned window of the tile"
        origins.add(found[:2])
        transforms.add(found[2:])
        # the same window and transform for the cloudy image and the mask
        r, col, k, flip = found
        cloudy = full["cloudy"].numpy()[:, r:r + 48, col:col + 48]
        cloudy = cloudy[:, :, ::-1] if flip else cloudy
        assert np.array_equal(np.rot90(cloudy, k, axes=(1, 2)), s["cloudy"].numpy())
    assert len(transforms) == 8 and len(origins) > 30
    rows = [o[0] for o in origins]
    assert min(rows) < 40 and max(rows) > 300 - 48 - 40  # crops reach both edges
    centre = M3RCRDataset(synth_root, "train", sampling=Sampling(crop_size=160, crop="center"))[0]
    assert np.array_equal(centre["cloudfree"].numpy(), ref[:, 70:230, 70:230])
    assert math.isclose(float(centre["cloud_cover"]), float(full["cloudmask"][70:230, 70:230].mean()), rel_tol=1e-6)
