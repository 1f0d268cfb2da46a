"""The dataset class: modes, crops, augmentation, georeference, batching, plotting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from torch.utils.data import DataLoader

from m3rcr.data import M3RCRDataset, Sampling, tensor_to_affine


def test_sample_keys_types_and_shapes(real_root: Path) -> None:
    s = M3RCRDataset(real_root, "test")[0]
    assert s["cloudy"].shape == s["cloudfree"].shape == (4, 300, 300)
    assert s["sar"].shape == (2, 300, 300)
    assert s["landcover"].shape == s["cloudmask"].shape == (300, 300)
    assert s["cloudy"].dtype == s["sar"].dtype == s["cloudmask"].dtype == torch.float32
    assert s["landcover"].dtype == torch.int64
    assert set(torch.unique(s["cloudmask"]).tolist()) <= {0.0, 1.0}
    assert isinstance(s["cloud_cover"], float) and s["name"] == "summer_33_p_1"
    assert s["transform"].dtype == torch.float64 and s["transform"].shape == (6,)


@pytest.mark.parametrize("mode", ["nearest", "geo", "native"])
def test_centre_crop_in_every_mode(real_root: Path, mode: str) -> None:
    full = M3RCRDataset(real_root, "train", sar_mode=mode)[0]
    crop = M3RCRDataset(real_root, "train", sar_mode=mode, sampling=Sampling(crop_size=160))[0]
    assert torch.equal(crop["cloudy"], full["cloudy"][:, 70:230, 70:230])
    assert torch.equal(crop["cloudmask"], full["cloudmask"][70:230, 70:230])
    if mode == "native":
        assert torch.equal(crop["sar"], full["sar"][:, 21:69, 21:69])
        assert torch.equal(crop["landcover"], full["landcover"][21:69, 21:69])
    else:
        assert torch.equal(crop["sar"], full["sar"][:, 70:230, 70:230])
    tf = tensor_to_affine(crop["transform"])
    assert tuple(tf)[:6] == (3.0, 0.0, 760299.0 + 70 * 3, 0.0, -3.0, 1898412.0 - 70 * 3)
    # the returned SAR grid: its own 10 m grid (native), the optical grid (geo), or the SAR footprint
    # cut into 3 m cells (nearest: the array is resized as if it shared the optical origin)
    expected_sar = {"native": (10.0, 0.0, 760300.0 + 210, 0.0, -10.0, 1898410.0 - 210),
                    "geo": tuple(tf)[:6],
                    "nearest": (3.0, 0.0, 760300.0 + 210, 0.0, -3.0, 1898410.0 - 210)}[mode]
    assert tuple(crop["sar_transform"].tolist()) == pytest.approx(expected_sar)
    assert tuple(crop["landcover_transform"].tolist()) == pytest.approx(expected_sar)
    assert crop["cloud_cover"] == pytest.approx(float(crop["cloudmask"].mean()))
    assert crop["cloud_cover_tile"] == pytest.approx(float(full["cloudmask"].mean()))


def test_native_random_crops_cover_the_same_ground(real_root: Path) -> None:
    ds = M3RCRDataset(real_root, "train", sar_mode="native", sampling=Sampling(crop_size=160, crop="random", seed=3))
    full = M3RCRDataset(real_root, "train", sar_mode="native")[0]
    starts = set()
    for epoch in range(12):
        ds.set_epoch(epoch)
        s = ds[0]
        opt, sar = tensor_to_affine(s["transform"]), tensor_to_affine(s["sar_transform"])
        row, col = round((1898412.0 - opt.f) / 3), round((opt.c - 760299.0) / 3)
        starts.add((row, col))
        assert row % 10 == 0 and col % 10 == 0
        assert s["sar"].shape == (2, 48, 48)
        assert torch.equal(s["sar"], full["sar"][:, row * 3 // 10: row * 3 // 10 + 48, col * 3 // 10: col * 3 // 10 + 48])
        assert torch.equal(s["cloudy"], full["cloudy"][:, row:row + 160, col:col + 160])
        # both crops span 480 m; their corners differ only by the tile's 1 m / 2 m grid offset
        assert (opt.c - sar.c, opt.f - sar.f) == pytest.approx((-1.0, 2.0))
        assert sar.a * 48 == opt.a * 160
    assert len(starts) > 3


def test_native_crop_size_must_fit_both_grids(real_root: Path) -> None:
    with pytest.raises(ValueError, match="multiple of 10 optical pixels"):
        M3RCRDataset(real_root, "train", sar_mode="native", sampling=Sampling(crop_size=64))[0]
    # nearest mode has no such constraint
    assert M3RCRDataset(real_root, "train", sampling=Sampling(crop_size=64))[0]["sar"].shape == (2, 64, 64)


@pytest.mark.parametrize("mode", ["geo", "native", "nearest"])
def test_augmentation_is_identical_for_every_modality(real_root: Path, mode: str) -> None:
    """Every pixel of an augmented crop, located by its transform, holds the unaugmented tile's value there."""
    full = M3RCRDataset(real_root, "train", sar_mode=mode)[0]
    ds = M3RCRDataset(real_root, "train", sar_mode=mode, sampling=Sampling(crop_size=160, crop="random", augment=True, seed=0))
    rng = np.random.default_rng(0)
    seen = set()
    for epoch in range(16):
        ds.set_epoch(epoch)
        s = ds[0]
        seen.add(tuple(s["transform"][:2].tolist()) + tuple(s["transform"][3:5].tolist()))
        for key, grid_key, full_grid in (("cloudy", "transform", "transform"), ("cloudmask", "transform", "transform"),
                                         ("sar", "sar_transform", "sar_transform"),
                                         ("landcover", "landcover_transform", "landcover_transform")):
            tf, parent = tensor_to_affine(s[grid_key]), tensor_to_affine(full[full_grid])
            h, w = s[key].shape[-2:]
            rows, cols = rng.integers(0, h, 40), rng.integers(0, w, 40)
            x, y = tf @ (cols + 0.5, rows + 0.5)
            pc, pr = ~parent @ (x, y)
            pr, pc = np.floor(pr).astype(int), np.floor(pc).astype(int)
            np.testing.assert_array_equal(s[key][..., rows, cols].numpy(), full[key][..., pr, pc].numpy(), err_msg=key)
    assert len(seen) >= 6  # several of the 8 orientations occurred


def test_seeded_crops_are_reproducible(real_root: Path) -> None:
    a = M3RCRDataset(real_root, "train", sampling=Sampling(crop_size=96, crop="random", augment=True, seed=5))
    b = M3RCRDataset(real_root, "train", sampling=Sampling(crop_size=96, crop="random", augment=True, seed=5))
    assert torch.equal(a[0]["cloudy"], b[0]["cloudy"]) and torch.equal(a[0]["transform"], b[0]["transform"])
    torch.manual_seed(0)
    u = M3RCRDataset(real_root, "train", sampling=Sampling(crop_size=96, crop="random"))
    first = u[0]["transform"]
    torch.manual_seed(0)
    assert torch.equal(u[0]["transform"], first)


def test_batches_collate(synth_root: Path) -> None:
    ds = M3RCRDataset(synth_root, "train", sampling=Sampling(crop_size=64, crop="random", augment=True, seed=0))
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["cloudy"].shape == (4, 4, 64, 64) and batch["sar"].shape == (4, 2, 64, 64)
    assert batch["landcover"].shape == (4, 64, 64) and batch["transform"].shape == (4, 6)
    assert len(batch["name"]) == 4 and batch["cloud_cover"].dtype == torch.float64


def test_level2_ids_on_synthetic_data(synth_root: Path) -> None:
    ds = M3RCRDataset(synth_root, "test", landcover_level=2, sar_mode="native")
    codes = (10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100)
    for i in range(len(ds)):
        with rasterio.open(ds.samples[i].landcover) as src:
            raw = src.read(1)
        expected = np.searchsorted(codes, raw)
        assert np.array_equal(np.asarray(codes)[expected], raw)
        np.testing.assert_array_equal(ds[i]["landcover"].numpy(), expected)


def test_bad_arguments_are_refused(real_root: Path) -> None:
    with pytest.raises(ValueError, match="sar_mode"):
        M3RCRDataset(real_root, "train", sar_mode="bicubic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="landcover_level"):
        M3RCRDataset(real_root, "train", landcover_level=3)
    with pytest.raises(IndexError):
        M3RCRDataset(real_root, "train")[1]


def test_plot_returns_a_figure(real_root: Path, tmp_path: Path) -> None:
    ds = M3RCRDataset(real_root, "test")
    s = ds[0]
    fig = ds.plot(s)
    assert len(fig.axes) == 5
    fig = ds.plot(s, prediction=s["cloudfree"], stretch="fixed")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:3] == ["Cloudy", "Cloud-free", "Prediction"] and titles[-1].startswith("Cloud mask (white: 29 % cloudy)")
    fig.savefig(tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 10_000
    native = M3RCRDataset(real_root, "test", sar_mode="native")
    assert len(native.plot(native[0]).axes) == 5


def test_data_parallel_ranks_draw_different_crops(real_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ranks share the main generator's seed; their random crops must still differ."""
    ds = M3RCRDataset(real_root, "train", sampling=Sampling(crop_size=64, crop="random", augment=True))
    draws = {}
    for rank in (0, 1):
        monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.distributed, "get_rank", lambda r=rank: r)
        torch.manual_seed(0)
        draws[rank] = [tuple(ds[0]["transform"].tolist()) for _ in range(4)]
    assert draws[0] != draws[1]
    monkeypatch.undo()
    torch.manual_seed(0)
    assert [tuple(ds[0]["transform"].tolist()) for _ in range(4)] == draws[0]  # rank 0 = single process
