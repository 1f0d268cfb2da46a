"""NDVI agreement, confusion-matrix scores and the land-cover segmentation model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from m3rcr.cli import main
from m3rcr.evaluation.confusion import confusion_matrix, iou_per_class, miou, pixel_accuracy
from m3rcr.evaluation.metrics import MetricAccumulator
from m3rcr.evaluation.ndvi import ndvi, ndvi_levels


def test_miou_and_pa_from_a_hand_computed_confusion_matrix() -> None:
    target = torch.tensor([0, 0, 0, 1, 1, 2, 6, 6])  # 6 = unknown, ignored
    pred = torch.tensor([0, 0, 1, 1, 2, 2, 0, 3])
    cm = confusion_matrix(pred, target, num_classes=6, ignore_index=6)
    expected = torch.zeros(6, 6, dtype=torch.long)
    expected[0, 0], expected[0, 1], expected[1, 1], expected[1, 2], expected[2, 2] = 2, 1, 1, 1, 1
    assert torch.equal(cm, expected)
    # IoU: class 0: 2 / (3 + 2 - 2) = 2/3; class 1: 1 / (2 + 2 - 1) = 1/3; class 2: 1 / (1 + 2 - 1) = 1/2;
    # classes 3-5 absent from both target and prediction: left out of the mean
    assert miou(cm) == pytest.approx(100 * (2 / 3 + 1 / 3 + 1 / 2) / 3)
    assert pixel_accuracy(cm) == pytest.approx(100 * 4 / 6)
    assert iou_per_class(cm)[3] is None
    # a class predicted but never true counts (IoU 0)
    cm2 = confusion_matrix(torch.tensor([3, 0]), torch.tensor([0, 0]), 6)
    assert miou(cm2) == pytest.approx(100 * (0.5 + 0.0) / 2)


def test_ndvi_and_its_level_edges() -> None:
    img = torch.zeros(1, 4, 1, 6)
    img[0, 2, 0] = torch.tensor([0.3, 0.2, 0.1, 0.1, 0.0, 0.0])  # red
    img[0, 3, 0] = torch.tensor([0.1, 0.2, 0.3, 0.9, 0.5, 0.0])  # NIR
    values = ndvi(img)[0, 0]
    assert values.tolist() == pytest.approx([-0.5, 0.0, 0.5, 0.8, 1.0, 0.0])  # 0 where NIR + red = 0
    edges = torch.tensor([-0.1001, -0.1, 0.0999, 0.1, 0.3999, 0.4, 0.7999, 0.8, 1.0])
    assert ndvi_levels(edges).tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4]  # edges belong to the upper level


def test_ndvi_rmse_and_miou_on_a_constructed_example() -> None:
    ref = torch.zeros(2, 4, 1, 2)
    pred = torch.zeros(2, 4, 1, 2)
    ref[:, 2], ref[:, 3] = 0.1, 0.3  # reference NDVI 0.5 everywhere (level 3)
    pred[0, 2], pred[0, 3] = 0.1, 0.3  # image 0: exact
    pred[1, 2], pred[1, 3] = 0.3, 0.1  # image 1: NDVI -0.5 everywhere (level 0), error 1.0
    acc = MetricAccumulator()
    acc.update(pred, ref, None, None, [0.1, 0.9], ["a", "b"])
    s = acc.summary()
    assert s["overall"]["ndvi_rmse"] == pytest.approx(math.sqrt((0 + 0 + 1 + 1) / 4))  # pooled over pixels
    # levels: ref all 3; pred 3, 3, 0, 0 -> IoU(3) = 2/4, IoU(0) = 0/2 -> mIoU 25 %
    assert s["overall"]["ndvi_miou"] == pytest.approx(25.0)
    assert s["per_bin"]["0-20"]["ndvi_rmse"] == 0 and s["per_bin"]["0-20"]["ndvi_miou"] == pytest.approx(100.0)
    assert s["per_bin"]["80-100"]["ndvi_rmse"] == pytest.approx(1.0) and s["per_bin"]["40-60"]["ndvi_rmse"] is None
    assert [r.ndvi_rmse for r in acc.records] == pytest.approx([0.0, 1.0])
    assert int(acc.ndvi_hist.sum()) == 4


def test_default_segmentation_model_and_local_weights(tmp_path: Path) -> None:
    import torchvision

    from m3rcr.errors import DataError
    from m3rcr.models.segmentation import SEGMENTATION_MODELS

    model = SEGMENTATION_MODELS.build("deeplabv3plus").eval()
    assert sum(p.numel() for p in model.parameters()) == 26_682_006  # DeepLabv3+ ResNet-50, 4 bands, 6 classes
    with torch.no_grad():
        assert model(torch.rand(1, 4, 150, 90)).shape == (1, 6, 150, 90)
    # an ImageNet-style ResNet-50 state dict (3-band first convolution) from a local file
    resnet = torchvision.models.resnet50(weights=None)
    torch.save(resnet.state_dict(), tmp_path / "resnet50.pth")
    loaded = SEGMENTATION_MODELS.build("deeplabv3plus", weights=str(tmp_path / "resnet50.pth"))
    w = resnet.state_dict()["conv1.weight"]  # ImageNet order (R, G, B); ours (B, G, R, NIR)
    expected = torch.stack([w[:, 2], w[:, 1], w[:, 0], w.mean(dim=1)], dim=1) * 3 / 4
    torch.testing.assert_close(loaded.net.encoder.conv1.weight, expected)
    torch.testing.assert_close(loaded.net.encoder.layer1[0].conv1.weight, resnet.layer1[0].conv1.weight)
    (tmp_path / "bad.pth").write_bytes(b"nope")
    with pytest.raises(DataError, match="cannot be read as a state dict"):
        SEGMENTATION_MODELS.build("deeplabv3plus", weights=str(tmp_path / "bad.pth"))


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.slow
def test_segmentation_learns_and_scores_cloud_free_above_cloudy(synth_root: Path, tmp_path: Path) -> None:
    """A short training (ResNet-18 encoder, for speed) on the cloud-free training tiles."""
    run = tmp_path / "seg"
    assert main(["seg", "train", f"data.root={synth_root}", "--out", str(run), "model.config={encoder: resnet18}",
                 "trainer.max_epochs=40", "trainer.accelerator=cpu", "trainer.devices=1", "data.batch_size=4",
                 "data.crop_size=96", "data.num_workers=0", "data.val_fraction=0", "run.progress_bar=false",
                 "optim.lr=1e-3", "schedule.kind=constant", "trainer.enable_model_summary=false"]) == 0
    out = tmp_path / "sem"
    assert main(["seg", "evaluate", "--checkpoint", str(run / "checkpoints" / "best.ckpt"), "--data", str(synth_root),
                 "--split", "test", "--out", str(out), "--device", "cpu", "--quiet"]) == 0  # unseen AOIs
    r = json.loads((out / "semantic.json").read_text())
    assert r["Cloud-free"]["overall"]["miou"] > r["Cloudy"]["overall"]["miou"] + 10
    assert r["Cloud-free"]["overall"]["pa"] > r["Cloudy"]["overall"]["pa"]
    for name in ("table_semantic.md", "table_semantic.csv", "fig_semantic_gap.png", "fig_landcover_maps.png"):
        assert (out / name).is_file(), name
    # a cloud-removal checkpoint is refused where a segmentation one is expected, and vice versa
    assert main(["evaluate", "--checkpoint", str(run / "checkpoints" / "best.ckpt"), "--data", str(synth_root),
                 "--out", str(tmp_path / "x"), "--quiet"]) == 2


def test_ndvi_stays_bounded_for_negative_predictions() -> None:
    img = torch.zeros(1, 4, 1, 3)
    img[0, 2, 0] = torch.tensor([-0.01, 0.02, -0.5])  # red
    img[0, 3, 0] = torch.tensor([0.011, -0.01, 0.3])  # NIR
    values = ndvi(img)[0, 0]
    assert values.tolist() == pytest.approx([1.0, -1.0, 1.0])  # negative reflectance set to 0 first
    bright = torch.zeros(1, 4, 1, 1)
    bright[0, 2], bright[0, 3] = 1.05, 1.5  # above 1 is kept: (1.5 - 1.05) / 2.55
    assert ndvi(bright).item() == pytest.approx(0.45 / 2.55)


def test_ndvi_levels_of_float32_reflectance_on_the_edges() -> None:
    """DN pairs whose NDVI is exactly an edge land in the upper level despite float32 rounding."""
    img = torch.zeros(1, 4, 1, 2)
    img[0, 2, 0] = torch.tensor([900, 3000]) / 10000  # red
    img[0, 3, 0] = torch.tensor([1100, 7000]) / 10000  # NIR: NDVI 0.1 and 0.4
    assert ndvi_levels(ndvi(img)).tolist() == [[[2, 3]]]
