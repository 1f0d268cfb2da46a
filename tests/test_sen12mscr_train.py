"""Training on SEN12MS-CR: the 8 configurations of configs/sen12mscr/ load and build, every model trains on a tiny
synthetic SEN12MS-CR (GANs with their discriminators on 13 bands), checkpoints record the data, band mismatches
are refused, and a tiny model trains on the real samples in both layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from paths import CONFIGS, SHARED, require_shared
from tiny_models import TINY

from m3rcr.data.datasets.sen12mscr import SEN12MSCRDataset
from m3rcr.data.sen12mscr.preprocess import S2_BANDS
from m3rcr.errors import DataError
from m3rcr.models import load_model
from m3rcr.models.checkpoint import check_data_fits, checkpoint_data, read_checkpoint
from m3rcr.training.config import ConfigError, load_config, parse_config
from m3rcr.training.run import build, train

SEN12MSCR_CONFIGS = CONFIGS / "sen12mscr"
MODELS = ("aligncr", "aligncr_wo_align", "aligncr_wo_sar", "dsen2cr", "glfcr", "mcgan", "saroptcgan", "spagan")
GANS = {"mcgan": "two_stream", "spagan": "two_stream", "saroptcgan": "patchgan"}
#: what each configuration must say, from the baselines' published SEN12MS-CR settings where known
PREPROCESSING = {"dsen2cr": "resnet", "glfcr": "glfcr"}
LOSS = {"dsen2cr": "carl", "glfcr": "l1"}
REAL_ROOTS = {"official": SHARED / "data" / "sen12mscr-official", "flat": SHARED / "data" / "sen12mscr-samples"}


def _model_config(name: str) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in TINY[name].items()) + "}"


def _tiny(name: str, root: Path, run: Path, *extra: str) -> list[str]:
    """Overrides that make a configuration of configs/sen12mscr/ tiny: narrow model (the 13-band channels of the
    file are kept: override mappings merge), 32 px crops, no cloud masks, two steps."""
    args = [f"data.root={root}", f"model.config={_model_config(name)}", "data.batch_size=2", "data.crop_size=32",
            "data.eval_crop_size=null", "data.num_workers=0", "data.cloud_masks=none", "trainer.max_epochs=1",
            "trainer.limit_train_batches=2", "trainer.check_val_every_n_epoch=1", "trainer.accelerator=cpu",
            "trainer.devices=1", "trainer.enable_model_summary=false", "trainer.log_every_n_steps=1",
            "run.progress_bar=false", f"run.dir={run}"]
    if name in GANS:
        args.append("gan.discriminator_config={base_channels: 4}")
    return [*args, *extra]


@pytest.fixture(scope="module")
def synth12(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic SEN12MS-CR: 4 seasons x 1 ROI x 2 patches of 64 px (train 4, val 2, test 2 patches)."""
    from m3rcr.data.synthetic.sen12mscr import Sen12mscrSynthConfig, generate_sen12mscr

    config = Sen12mscrSynthConfig(size=64, rois_per_season=1, patches_per_roi=2)
    return generate_sen12mscr(tmp_path_factory.mktemp("s12") / "data", config, seed=0)


def test_there_is_one_configuration_per_model() -> None:
    assert sorted(p.stem for p in SEN12MSCR_CONFIGS.glob("*.yaml")) == sorted(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_configuration_loads_and_builds(name: str, tmp_path: Path) -> None:
    path = SEN12MSCR_CONFIGS / f"{name}.yaml"
    raw = yaml.safe_load(path.read_text())
    cfg = parse_config(load_config(path))  # the paper-size file as shipped
    assert cfg.model.name == name
    assert cfg.model.config["in_channels"] == cfg.model.config["out_channels"] == 13
    assert ("sar_channels" in cfg.model.config) == (name not in ("mcgan", "spagan", "aligncr_wo_sar"))
    assert cfg.data["name"] == "sen12mscr" and cfg.data["bands"] == "all" and cfg.data["val_split"] == "val"
    assert cfg.data["preprocessing"] == PREPROCESSING.get(name, "default")
    assert cfg.loss.name == LOSS.get(name, cfg.loss.name)
    assert (cfg.gan is not None) == (name in GANS) and (cfg.gan is None or cfg.gan.discriminator == GANS[name])
    assert cfg.data["crop_size"] in (128, 256) and raw["run"]["dir"].endswith(f"sen12mscr/{name}")
    # built with tiny widths: the network and (for GANs) the discriminator take 13 bands
    _, module, datamodule = build(load_config(path, _tiny(name, tmp_path / "data", tmp_path / "r")), tmp_path / "r")
    spec = module.net.spec
    assert spec.optical_in == spec.optical_out == 13 and spec.sar_bands == (2 if spec.uses_sar else 0)
    if name in GANS:
        first = next(m for m in module.disc.modules() if isinstance(m, torch.nn.Conv2d))
        widths = {m.in_channels for m in module.disc.modules() if isinstance(m, torch.nn.Conv2d)}
        if GANS[name] == "patchgan":
            assert first.in_channels == 13 + 2 + 13  # cat(condition: cloudy + SAR, image)
        else:
            assert first.in_channels == 13 and 13 in widths  # the two stems: condition and image
    assert datamodule.options.splits.val_split == "val"
    assert not (tmp_path / "r").exists()  # building writes nothing


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", MODELS)
def test_every_model_trains_on_synthetic_sen12mscr(name: str, synth12: Path, tmp_path: Path) -> None:
    run = train(load_config(SEN12MSCR_CONFIGS / f"{name}.yaml", _tiny(name, synth12, tmp_path / "r")))
    payload = read_checkpoint(run / "checkpoints" / "best.ckpt")
    record = checkpoint_data(payload)
    assert record == {"dataset": "sen12mscr", "optical_bands": list(S2_BANDS), "sar_bands": ["VV", "VH"],
                      "preprocessing": PREPROCESSING.get(name, "default"),
                      "reflectance_per_unit": 0.2 if name == "dsen2cr" else 1.0}
    assert json.loads((run / "data.json").read_text()) == record  # the run folder says it too
    steps = 2 * (2 if name in GANS else 1)  # Lightning counts both optimisers' steps of a GAN
    assert payload["meta"]["global_step"] == steps and "val/psnr" in payload["meta"]  # validated on split val
    assert 0 < payload["meta"]["val/psnr"] < 100  # on reflectance, whatever the scaling
    state = torch.load(run / "state" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    if name in GANS:  # the discriminator trained alongside, on 13-band images
        disc = {k: v for k, v in state.items() if k.startswith("disc.") and v.ndim == 4}
        assert disc and any(v.shape[1] in (13, 28) for v in disc.values())
    model = load_model(run / "checkpoints" / "best.ckpt")
    with torch.no_grad():
        out = model(torch.rand(1, 13, 64, 64), torch.rand(1, 2, 64, 64))
    assert out.shape == (1, 13, 64, 64)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_cloud_weighted_loss_trains_with_cached_s2cloudless_masks(synth12: Path, tmp_path: Path) -> None:
    pytest.importorskip("s2cloudless")
    cache = tmp_path / "masks"
    args = _tiny("dsen2cr", synth12, tmp_path / "r", "data.cloud_masks=s2cloudless", f"data.mask_cache={cache}")
    run = train(load_config(SEN12MSCR_CONFIGS / "dsen2cr.yaml", args))
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert len(list(cache.rglob("*.npz"))) == 6  # train 4 + val 2 patches, each computed once


def test_band_mismatch_is_refused_clearly(synth12: Path, tmp_path: Path) -> None:
    run = tmp_path / "r"
    # the default model (Align-CR, 4 bands) on SEN12MS-CR's 13
    four = load_config(None, [f"data.root={synth12}", "data.name=sen12mscr", "data.cloud_masks=none",
                              f"model.config={_model_config('aligncr')}", f"run.dir={run}"])
    with pytest.raises(ConfigError, match=r"model: aligncr reads 4 and writes 4 optical bands, but dataset 'sen12mscr' "
                                          r"has 13 \(B1, B2, B3, B4, B5, B6, B7, B8, B8A, B9, B10, B11, B12\); set "
                                          r"model.config.in_channels and out_channels to 13 \(configs/sen12mscr/"
                                          r".*or pick 4 bands with data.bands"):
        build(four, run)
    # a 13-band model on 4 picked bands
    rgbn = load_config(SEN12MSCR_CONFIGS / "aligncr.yaml", _tiny("aligncr", synth12, run, "data.bands=rgbn"))
    with pytest.raises(ConfigError, match=r"reads 13 and writes 13 optical bands, but dataset 'sen12mscr' has 4 "
                                          r"\(B2, B3, B4, B8\)"):
        build(rgbn, run)
    bad = load_config(SEN12MSCR_CONFIGS / "aligncr.yaml", _tiny("aligncr", synth12, run, "data.preprocessing=dsen2"))
    with pytest.raises(ConfigError, match="data: unknown SEN12MS-CR preprocessing 'dsen2'"):
        build(bad, run)
    assert not run.exists()


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("layout", sorted(REAL_ROOTS))
def test_tiny_model_trains_on_the_real_samples(layout: str, tmp_path: Path) -> None:
    root = require_shared(REAL_ROOTS[layout])
    run = tmp_path / "r"
    # split train holds 1 patch (winter 112): 2 epochs of 1 step; validation on the test patch (fall 139)
    args = [*_tiny("dsen2cr", root, run, "data.batch_size=1", "data.crop_size=64", "trainer.max_epochs=2",
                   f"data.layout={layout}", "data.val_split=test", "data.cloud_masks=s2cloudless",
                   f"data.mask_cache={tmp_path / 'masks'}")]
    pytest.importorskip("s2cloudless")
    train(load_config(SEN12MSCR_CONFIGS / "dsen2cr.yaml", args))
    ckpt = run / "checkpoints" / "last.ckpt"
    payload = read_checkpoint(ckpt)
    assert payload["meta"]["global_step"] == 2 and payload["meta"]["epoch"] == 1
    record = checkpoint_data(payload)
    assert record == {"dataset": "sen12mscr", "optical_bands": list(S2_BANDS), "sar_bands": ["VV", "VH"],
                      "preprocessing": "resnet", "reflectance_per_unit": 0.2}
    check_data_fits(record, SEN12MSCRDataset.spec_for(S2_BANDS, "resnet"), ckpt, "resnet")
    with pytest.raises(DataError, match="optical bands B1, .*B12, but the data .* has B2, B3, B4, B8"):
        check_data_fits(record, SEN12MSCRDataset.spec_for(("B2", "B3", "B4", "B8"), "resnet"), ckpt)
    with pytest.raises(DataError, match="preprocessing 'resnet'"):
        check_data_fits(record, SEN12MSCRDataset.spec_for(S2_BANDS, "default"), ckpt, "default")
    assert load_model(ckpt).spec.optical_in == 13


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("preprocessing", ["default", "resnet"])
def test_validation_psnr_is_on_reflectance(preprocessing: str, synth12: Path, tmp_path: Path) -> None:
    # DSen2-CR starts as the identity (zero tail, long skip) and lr 0 keeps it there: its validation PSNR is the
    # cloudy input's, computed here from the files' DN, whatever scaling the network sees
    run = train(load_config(SEN12MSCR_CONFIGS / "dsen2cr.yaml",
                            _tiny("dsen2cr", synth12, tmp_path / "r", f"data.preprocessing={preprocessing}",
                                  "model.config={residual_init: true}", "optim.lr=0.0", "data.eval_batch_size=8")))
    val = SEN12MSCRDataset(synth12, "val", cloud_masks="none")
    expected = []
    for i in range(len(val)):
        raw = val.read_raw(i)
        cloudy, clear = (np.clip(raw[k].array.astype(np.float64), 0, 10000) / 10000 for k in ("cloudy", "cloudfree"))
        expected.append(20 * np.log10(1 / np.sqrt(np.mean((cloudy - clear) ** 2))))
    got = read_checkpoint(run / "checkpoints" / "best.ckpt")["meta"]["val/psnr"]
    assert got == pytest.approx(float(np.mean(expected)), abs=1e-3)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_record_holds_the_default_preprocessing_when_the_config_leaves_it_out(synth12: Path, tmp_path: Path) -> None:
    config = load_config(SEN12MSCR_CONFIGS / "spagan.yaml", _tiny("spagan", synth12, tmp_path / "r"))
    del config["data"]["preprocessing"]
    run = train(config)
    record = checkpoint_data(read_checkpoint(run / "checkpoints" / "last.ckpt"))
    assert record is not None and record["preprocessing"] == "default"
