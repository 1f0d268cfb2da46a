"""Whole-scene prediction with SEN12MS-CR-trained checkpoints: 13-band Sentinel-2 L1C scenes in, 13 bands out
as uint16 DN with their names, inputs scaled by the checkpoint's preprocessing, clear band-count errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from paths import CONFIGS, SHARED, require_shared
from tiny_models import TINY

from m3rcr.cli import main
from m3rcr.data.datasets.sen12mscr import SEN12MSCRDataset
from m3rcr.data.sen12mscr.preprocess import S2_BANDS, convention
from m3rcr.errors import DataError
from m3rcr.inference import PredictOptions, predict_scene
from m3rcr.models import create_model, save_checkpoint
from m3rcr.models.checkpoint import data_record

SIZE = 96


def _write(path: Path, array: np.ndarray, crs: str, transform: Affine, descriptions: list[str] | None = None) -> Path:
    profile = {"driver": "GTiff", "count": array.shape[0], "height": array.shape[1], "width": array.shape[2],
               "dtype": array.dtype.name, "crs": crs, "transform": transform}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
        if descriptions:
            dst.descriptions = tuple(descriptions)
    return path


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 96 x 96 px 13-band L1C scene (uint16 DN, no band descriptions) from the synthetic generator, its S1 in dB
    on the same 10 m grid and on a 20 m grid, and a 4-band (PlanetScope-like) cut of it."""
    from m3rcr.data.synthetic.sen12mscr import Sen12mscrSynthConfig, generate_sen12mscr

    tmp = tmp_path_factory.mktemp("scene12")
    root = generate_sen12mscr(tmp / "data", Sen12mscrSynthConfig(size=SIZE, rois_per_season=1, patches_per_roi=1,
                                                                  seasons=("fall",)), seed=4)
    raw = SEN12MSCRDataset(root, "all", cloud_masks="none").read_raw(0)
    cloudy, s1 = raw["cloudy"], raw["sar"]
    crs, transform = cloudy.crs.to_string(), cloudy.transform
    db = s1.array.astype(np.float32)
    coarse = db.reshape(2, SIZE // 2, 2, SIZE // 2, 2).mean(axis=(2, 4))  # 20 m pixels over the same extent
    return {"cloudy": _write(tmp / "cloudy.tif", cloudy.array.astype(np.uint16), crs, transform),
            "sar": _write(tmp / "sar.tif", db, crs, transform, ["VV", "VH"]),
            "sar20": _write(tmp / "sar20.tif", coarse, crs, transform @ Affine.scale(2), ["VV", "VH"]),
            "four": _write(tmp / "four.tif", cloudy.array[[1, 2, 3, 7]].astype(np.uint16), crs, transform),
            "root": root}


@pytest.fixture(scope="module")
def trained(scene: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GLF-CR trained for 2 steps with configs/sen12mscr/glfcr.yaml on the synthetic dataset."""
    from m3rcr.training.config import load_config
    from m3rcr.training.run import train

    run = tmp_path_factory.mktemp("run12") / "r"
    model = "{" + ", ".join(f"{k}: {v}" for k, v in TINY["glfcr"].items()) + "}"
    args = [f"data.root={scene['root']}", f"model.config={model}", "data.batch_size=1", "data.crop_size=32",
            "data.num_workers=0", "data.cloud_masks=none", "data.val_split=null", "data.val_fraction=0",
            "data.train_split=all", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.accelerator=cpu",
            "trainer.enable_model_summary=false", "run.progress_bar=false", f"run.dir={run}"]
    return train(load_config(CONFIGS / "sen12mscr" / "glfcr.yaml", args)) / "checkpoints" / "last.ckpt"


def _profile(path: Path) -> dict:
    with rasterio.open(path) as src:
        return {"count": src.count, "dtypes": set(src.dtypes), "crs": src.crs, "transform": src.transform,
                "shape": src.shape, "descriptions": src.descriptions, "tags": src.tags()}


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("sar", ["sar", "sar20"])
def test_predict_writes_13_named_uint16_bands_on_the_input_grid(sar: str, scene: dict[str, Path], trained: Path,
                                                                tmp_path: Path) -> None:
    out = tmp_path / "clear.tif"
    assert main(["predict", "--cloudy", str(scene["cloudy"]), "--sar", str(scene[sar]), "--checkpoint", str(trained),
                 "--out", str(out), "--tile", "64", "--overlap", "16", "--device", "cpu", "--quiet",
                 "--preview", str(tmp_path / "p.png"), "--stats", str(tmp_path / "s.json")]) == 0
    got, given = _profile(out), _profile(scene["cloudy"])
    assert got["count"] == 13 and got["dtypes"] == {"uint16"}
    assert got["descriptions"] == S2_BANDS  # the input has none: the names the model was trained on
    assert (got["crs"], got["transform"], got["shape"]) == (given["crs"], given["transform"], given["shape"])
    settings = json.loads(got["tags"]["M3RCR_PREDICT"])
    assert settings["band_names"] == list(S2_BANDS) and settings["bands"] == list(range(1, 14))
    assert settings["data"]["preprocessing"] == "glfcr"
    with rasterio.open(out) as src:
        values = src.read().astype(np.float64)
    assert 100 < np.median(values) < 10000 and values.std() > 0  # L1C DN, not reflectance in [0, 1]
    assert json.loads((tmp_path / "s.json").read_text())["valid_fraction"] == 1.0
    assert (tmp_path / "p.png").stat().st_size > 0


class Recorder(torch.nn.Module):
    """Keeps what it is given and returns ``cloudy + shift`` (in the model's units)."""

    def __init__(self, shift: float = 0.0) -> None:
        super().__init__()
        self.shift = shift
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, cloudy: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        self.seen.append((cloudy.clone(), sar.clone()))
        return cloudy + self.shift


@pytest.mark.parametrize("preprocessing", ["default", "resnet", "glfcr"])
def test_inputs_and_outputs_follow_the_checkpoints_preprocessing(preprocessing: str, scene: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    conv = convention(preprocessing)
    record = data_record(SEN12MSCRDataset.spec_for(S2_BANDS, preprocessing), {"preprocessing": preprocessing})
    model = Recorder(shift=0.01)
    options = PredictOptions(data=record, tile=SIZE, overlap=0)
    out = tmp_path / "o.tif"
    predict_scene(model, scene["cloudy"], out, scene["sar"], options, progress=False)
    with rasterio.open(scene["cloudy"]) as a, rasterio.open(scene["sar"]) as b, rasterio.open(out) as c:
        dn, db, result = a.read(), b.read(), c.read().astype(np.int64)
    (cloudy, sar), = model.seen  # one tile: the whole scene
    np.testing.assert_allclose(cloudy[0].numpy(), conv.scale_s2(dn), rtol=1e-6, atol=1e-6)  # as in training
    np.testing.assert_allclose(sar[0].numpy(), conv.scale_s1(db), rtol=1e-6, atol=1e-6)
    # + 0.01 in model units is + 0.01 x the divisor in DN (Convention.to_dn): 100 DN, or 20 for resnet's / 2000
    expected = np.clip(dn, 0, 10000).astype(np.int64) + round(conv.to_dn(np.array(0.01)).item())
    assert np.abs(result - expected).max() <= 1


def test_picked_bands_of_a_13_band_scene(scene: dict[str, Path], tmp_path: Path) -> None:
    rgbn = ("B2", "B3", "B4", "B8")
    record = data_record(SEN12MSCRDataset.spec_for(rgbn, "default"), {"preprocessing": "default"})
    model = Recorder()
    stats = predict_scene(model, scene["cloudy"], tmp_path / "o.tif", scene["sar"],
                          PredictOptions(data=record, tile=SIZE, overlap=0), progress=False)
    assert stats.settings["bands"] == [2, 3, 4, 8]
    got = _profile(tmp_path / "o.tif")
    assert got["count"] == 4 and got["descriptions"] == rgbn and got["dtypes"] == {"uint16"}


def test_a_scene_of_another_band_count_is_a_clear_error(scene: dict[str, Path], trained: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.tif"
    assert main(["predict", "--cloudy", str(scene["four"]), "--sar", str(scene["sar"]), "--checkpoint", str(trained),
                 "--out", str(out), "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "four.tif" in err and "has 4 band(s), but the model was trained on 13 bands (B1, B2" in err
    assert "of sen12mscr" in err and not out.exists()
    # --bands with too few numbers for the model
    assert main(["predict", "--cloudy", str(scene["cloudy"]), "--sar", str(scene["sar"]), "--checkpoint",
                 str(trained), "--bands", "2,3,4,8", "--out", str(out), "--device", "cpu", "--quiet"]) == 2
    assert "--bands needs 13 band numbers" in capsys.readouterr().err and not out.exists()
    # a 13-band model without its data record (Python API)
    model = create_model("dsen2cr", in_channels=13, out_channels=13, **TINY["dsen2cr"])
    with pytest.raises(ValueError, match="reads 13 and writes 13 optical bands, but its data record says 4 bands"):
        predict_scene(model, scene["cloudy"], out, scene["sar"], PredictOptions(), progress=False)
    with pytest.raises(DataError, match="has 4 band"):
        record = data_record(SEN12MSCRDataset.spec_for(S2_BANDS, "default"), {"preprocessing": "default"})
        predict_scene(model, scene["four"], out, scene["sar"], PredictOptions(data=record), progress=False)


def test_m3rcr_checkpoints_still_read_four_bands(scene: dict[str, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A checkpoint without a data record is M3R-CR's: blue, green, red, NIR, picked with --bands."""
    ckpt = save_checkpoint(create_model("dsen2cr", **TINY["dsen2cr"]), tmp_path / "m.ckpt")
    out = tmp_path / "o.tif"
    assert main(["predict", "--cloudy", str(scene["cloudy"]), "--sar", str(scene["sar"]), "--checkpoint", str(ckpt),
                 "--out", str(out), "--device", "cpu", "--quiet"]) == 2
    assert "say which are blue, green, red, nir with --bands" in capsys.readouterr().err
    assert main(["predict", "--cloudy", str(scene["cloudy"]), "--sar", str(scene["sar"]), "--checkpoint", str(ckpt),
                 "--bands", "2,3,4,8", "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    assert _profile(out)["count"] == 4


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("layout", ["sen12mscr-samples", "sen12mscr-official"])
def test_predict_a_real_sample_as_a_scene(layout: str, trained: Path, tmp_path: Path) -> None:
    root = require_shared(SHARED / "data" / layout)
    ds = SEN12MSCRDataset(root, "test", cloud_masks="none")
    triplet = ds.samples[0]
    out = tmp_path / "clear.tif"
    assert main(["predict", "--cloudy", str(triplet.s2_cloudy), "--sar", str(triplet.s1), "--checkpoint",
                 str(trained), "--out", str(out), "--tile", "128", "--overlap", "16", "--device", "cpu",
                 "--quiet"]) == 0
    got, given = _profile(out), _profile(triplet.s2_cloudy)
    assert got["count"] == 13 and got["dtypes"] == {"uint16"} and got["descriptions"] == S2_BANDS
    assert (got["crs"], got["transform"], got["shape"]) == (given["crs"], given["transform"], given["shape"])
