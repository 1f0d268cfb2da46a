"""m3rcr evaluate on SEN12MS-CR: the community's protocol (spec sen12mscr.md section 5) against an independent
numpy computation on both real layouts, preprocessing conventions, NaN-skipping means, the mean fill, written
predictions, and checkpoints of another band layout refused."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from paths import SHARED, require_shared
from scipy.ndimage import correlate
from tiny_models import TINY

from m3rcr.cli import main
from m3rcr.data import M3RCRDataset, SEN12MSCRDataset
from m3rcr.data.sen12mscr.layout import list_triplets
from m3rcr.data.sen12mscr.preprocess import S2_BANDS
from m3rcr.evaluation.evaluate import EvalOptions, evaluate_into
from m3rcr.inference.predictors import mean_fill_predictor
from m3rcr.models import create_model
from m3rcr.models.checkpoint import data_record, save_checkpoint

OFFICIAL = SHARED / "data" / "sen12mscr-official"
FLAT = SHARED / "data" / "sen12mscr-samples"
METRICS = ("rmse", "psnr", "mae", "sam", "ssim")
#: cloudy input vs cloud-free reference, default preprocessing, as the previous session printed them
PRINTED_FLOOR = {"ROIs1970_fall_139_p839": (0.1593, 15.96, 0.1087, 15.27, 0.596),
                   "ROIs2017_winter_112_p797": (0.0955, 20.40, 0.0705, 21.39, 0.729)}


# ------------------------------------------------------------------ the protocol, written again in numpy
def _reflectance(path: Path) -> np.ndarray:
    """A patch's 13 L1C bands as reflectance: clipped to [0, 10000] DN, / 10000, NaN -> 0 (spec section 4)."""
    with rasterio.open(path) as src:
        return np.nan_to_num(np.clip(src.read().astype(np.float64), 0, 10000) / 10000)


def _gaussian_window() -> np.ndarray:
    x = np.arange(11) - 5.0  # centred on the middle pixel, as the reference's pytorch_ssim
    g = np.exp(-(x**2) / (2 * 1.5**2))
    g /= g.sum()
    return np.outer(g, g)


def _ssim_maps(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-band SSIM maps (C, H, W): 11 x 11 Gaussian, sigma 1.5, C1 = 0.01^2, C2 = 0.03^2, zero padding."""
    w = _gaussian_window()

    def f(a: np.ndarray) -> np.ndarray:
        return correlate(a, w, mode="constant", cval=0.0)

    maps = []
    for a, r in zip(p, t):
        m1, m2 = f(a), f(r)
        s1, s2, s12 = f(a * a) - m1 * m1, f(r * r) - m2 * m2, f(a * r) - m1 * m2
        maps.append(((2 * m1 * m2 + 1e-4) * (2 * s12 + 9e-4)) / ((m1 * m1 + m2 * m2 + 1e-4) * (s1 + s2 + 9e-4)))
    return np.stack(maps)


def protocol_by_hand(p: np.ndarray, t: np.ndarray) -> dict[str, float]:
    """Spec section 5 for one (C, H, W) pair on [0, 1]: all bands and pixels, no cloud mask."""
    rmse = math.sqrt(np.mean((t - p) ** 2))
    cos = (p * t).sum(0) / (np.linalg.norm(p, axis=0) * np.linalg.norm(t, axis=0))
    return {"rmse": rmse, "psnr": 20 * math.log10(1 / rmse), "mae": float(np.mean(np.abs(t - p))),
            "sam": float(np.degrees(np.arccos(np.clip(cos, -1, 1))).mean()), "ssim": float(_ssim_maps(p, t).mean())}


def test_numpy_ssim_agrees_with_skimage_inside_the_border() -> None:
    """The hand-written SSIM map against scikit-image's Gaussian SSIM. skimage averages only the pixels at least
    5 from the edge (its padding, reflection, never reaches them) while the protocol averages every pixel with
    zero padding: on the interior both maps are the same computation, so the means agree to rounding."""
    skimage = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(0)
    t = rng.uniform(0, 0.4, (3, 48, 48))
    p = np.clip(t + rng.normal(0, 0.05, t.shape), 0, 1)
    ours = _ssim_maps(p, t)[:, 5:-5, 5:-5].mean()
    theirs = np.mean([skimage.structural_similarity(a, r, gaussian_weights=True, sigma=1.5, data_range=1.0,
                                                    use_sample_covariance=False) for a, r in zip(p, t)])
    assert ours == pytest.approx(theirs, rel=1e-9)


# ------------------------------------------------------------------ real samples, both layouts
def _evaluate(root: Path, out: Path, *extra: str) -> dict:
    assert main(["evaluate", "--dataset", "sen12mscr", "--data", str(root), "--split", "all", "--out", str(out),
                 "--device", "cpu", "--quiet", "--no-cloud-masks", *extra]) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def real_evals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    require_shared(OFFICIAL)
    require_shared(FLAT)
    base = tmp_path_factory.mktemp("s12eval")
    out = {}
    for key, root, extra in (("official", OFFICIAL, ("--method", "cloudy", "--save-predictions")),
                             ("flat", FLAT, ("--method", "cloudy")),
                             ("flat_resnet", FLAT, ("--method", "cloudy", "--preprocessing", "resnet",
                                                    "--save-predictions"))):
        out[key] = (base / key, _evaluate(root, base / key, *extra))
    return out


@pytest.mark.parametrize("layout", ["official", "flat"])
def test_cloudy_floor_equals_the_protocol_by_hand(real_evals: dict, layout: str) -> None:
    _, m = real_evals[layout]
    root = OFFICIAL if layout == "official" else FLAT
    triplets = {t.name: t for t in list_triplets(root).triplets}
    assert m["layout"] == layout and len(m["per_image"]) == 2
    expected = {}
    for rec in m["per_image"]:
        t = triplets[rec["name"]]
        expected[rec["name"]] = protocol_by_hand(_reflectance(t.s2_cloudy), _reflectance(t.s2))
        for k in METRICS:
            assert rec[k] == pytest.approx(expected[rec["name"]][k], rel=1e-5), (rec["name"], k)
        # the numbers the previous session printed, to half their last printed digit
        for k, printed, half in zip(METRICS, PRINTED_FLOOR[rec["name"]], (5e-5, 5e-3, 5e-5, 5e-3, 5e-4)):
            assert abs(rec[k] - printed) <= half, (rec["name"], k, rec[k], printed)
    for k in METRICS:
        assert m["overall"][k] == pytest.approx(np.mean([e[k] for e in expected.values()]), rel=1e-5)


def test_both_layouts_give_the_same_scores(real_evals: dict) -> None:
    a, b = real_evals["official"][1], real_evals["flat"][1]
    assert a["overall"] == b["overall"] and a["per_image"] == b["per_image"]


def test_resnet_scaling_gives_the_default_scores(real_evals: dict) -> None:
    """resnet holds S2 / 2000 ([0, 5]): reflectance_per_unit = 0.2 brings it back before scoring."""
    default, resnet = real_evals["flat"][1], real_evals["flat_resnet"][1]
    assert resnet["preprocessing"] == "resnet" and resnet["protocol"]["reflectance_per_unit"] == pytest.approx(0.2)
    for d, r in zip(default["per_image"], resnet["per_image"]):
        assert d["name"] == r["name"]
        for k in METRICS:
            assert r[k] == pytest.approx(d[k], rel=1e-5), (d["name"], k)


def test_metrics_json_csv_and_tables(real_evals: dict) -> None:
    out, m = real_evals["official"]
    assert m["method"] == "cloudy" and m["dataset"] == "sen12mscr" and m["images"] == 2
    assert m["bands"] == list(S2_BANDS) and m["protocol"]["name"] == "sen12mscr" and m["split"] == "all"
    assert m["reference_compatible"] is False and m["crop_size"] is None and "ndvi" in m["protocol"]
    assert set(m["overall"]) >= {*METRICS, "images", "skipped_nan", "skipped_inf"}
    assert m["overall"]["images"] == 2 and sum(m["overall"]["skipped_nan"].values()) == 0
    for rec in m["per_image"]:
        assert set(rec) >= {"name", "cloud_cover", "cloud_cover_bin", *METRICS}
        assert rec["cloud_cover"] is None and rec["cloud_cover_bin"] == ""  # masks off: no cover, no bin
    assert list(m["per_bin"]) == ["0-20", "20-40", "40-60", "60-80", "80-100"]
    assert all(b["images"] == 0 for b in m["per_bin"].values()) and m["unbinned"]["images"] == 2
    assert "per_class" not in m and not (out / "ndvi_histogram.npy").exists()
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows] == [r["name"] for r in m["per_image"]]
    assert float(rows[0]["psnr"]) == pytest.approx(m["per_image"][0]["psnr"])
    md = (out / "tables.md").read_text()
    assert "| cloudy | 2 |" in md and "RMSE" in md and "Forest" not in md and "NDVI" not in md
    for name in ("fig_qualitative.png", "table_overall.csv", "table_per_bin.csv"):
        assert (out / name).is_file(), name


@pytest.mark.parametrize("key", ["official", "flat_resnet"])
def test_saved_predictions_are_l1c_dn_on_the_patch_grid(real_evals: dict, key: str) -> None:
    """The cloudy 'prediction' written back is the cloudy input's clipped DN (0 is no-data, so 1 at least),
    whatever the preprocessing, with all 13 bands named."""
    out, _ = real_evals[key]
    root = OFFICIAL if key == "official" else FLAT
    for t in list_triplets(root).triplets:
        with rasterio.open(out / "predictions" / f"{t.name}.tif") as pred, rasterio.open(t.s2_cloudy) as src:
            assert pred.dtypes[0] == "uint16" and pred.count == 13 and pred.nodata == 0
            assert pred.descriptions == S2_BANDS
            assert pred.crs == src.crs and pred.transform == src.transform and pred.shape == src.shape
            dn = np.clip(np.nan_to_num(src.read().astype(np.float64)), 1, 10000)
            np.testing.assert_array_equal(pred.read(), dn.astype(np.uint16))


# ------------------------------------------------------------------ synthetic SEN12MS-CR
@pytest.fixture(scope="module")
def synth12(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("s12synth") / "data"
    assert main(["synth", "--format", "sen12mscr", "--rois", "1", "--patches-per-roi", "1", "--size", "64",
                 "--quiet", str(root)]) == 0
    return root


def test_synthetic_cloudy_and_mean_with_cloud_masks(synth12: Path, tmp_path: Path) -> None:
    masks = ["--mask-cache", str(tmp_path / "masks")]
    cloudy = _evaluate_masked(synth12, tmp_path / "cloudy", "--method", "cloudy", *masks)
    mean = _evaluate_masked(synth12, tmp_path / "mean", "--method", "mean", *masks)
    ds = SEN12MSCRDataset(synth12, "all", mask_cache=tmp_path / "masks")
    assert cloudy["images"] == mean["images"] == len(ds) == 4
    for m in (cloudy, mean):  # every image has an s2cloudless cover, hence a bin
        assert sum(b["images"] for b in m["per_bin"].values()) == 4 and m["unbinned"]["images"] == 0
        assert all(0 <= r["cloud_cover"] <= 1 and r["cloud_cover_bin"] for r in m["per_image"])
    for rec in mean["per_image"]:  # the mean fill by hand: each band's mean over the cloudy input's clear pixels
        s = ds[ds.names.index(rec["name"])]
        x, clear = s["cloudy"].double().numpy(), s["cloudmask"].numpy() < 0.5
        fill = x[:, clear].mean(axis=1) if clear.any() else x.reshape(13, -1).mean(axis=1)
        pred = np.broadcast_to(fill[:, None, None], x.shape)
        ref = s["cloudfree"].double().numpy()
        assert rec["mae"] == pytest.approx(np.abs(pred - ref).mean(), rel=1e-5)
        assert rec["rmse"] == pytest.approx(math.sqrt(np.mean((pred - ref) ** 2)), rel=1e-5)
    assert (tmp_path / "mean" / "fig_metrics_by_cloud_cover.png").is_file()


def _evaluate_masked(root: Path, out: Path, *extra: str) -> dict:
    assert main(["evaluate", "--dataset", "sen12mscr", "--data", str(root), "--split", "all", "--out", str(out),
                 "--device", "cpu", "--quiet", *extra]) == 0
    return json.loads((out / "metrics.json").read_text())


def test_mean_fill_without_masks_is_the_image_mean() -> None:
    x = torch.rand(2, 13, 8, 8)
    mask = torch.zeros(2, 8, 8)
    mask[1, :4] = 1  # image 1: the top half is cloudy
    out = mean_fill_predictor({"cloudy": x, "cloudmask": mask})
    assert out.shape == x.shape
    torch.testing.assert_close(out[0], x[0].mean((1, 2))[:, None, None].expand(13, 8, 8))
    torch.testing.assert_close(out[1], x[1, :, 4:].mean((1, 2))[:, None, None].expand(13, 8, 8))


def test_means_skip_nan_and_inf(synth12: Path, tmp_path: Path) -> None:
    """One perfect image (PSNR inf) and one NaN image: the means are over the other images, and metrics.json
    says how many values it left out."""
    ds = SEN12MSCRDataset(synth12, "all", cloud_masks="none")
    perfect, broken = ds.names[0], ds.names[1]

    def predict(batch: dict) -> torch.Tensor:
        pred = batch["cloudy"].clone()
        for i, name in enumerate(batch["name"]):
            if name == perfect:
                pred[i] = batch["cloudfree"][i]
            elif name == broken:
                pred[i] = float("nan")
        return pred

    result = evaluate_into(predict, ds, tmp_path / "e", "odd", EvalOptions(progress=False))
    recs = {r["name"]: r for r in result.records}
    assert recs[perfect]["psnr"] == math.inf and recs[perfect]["rmse"] == 0
    assert all(math.isnan(recs[broken][k]) for k in METRICS)
    rest = [r for n, r in recs.items() if n not in (perfect, broken)]
    o = result.summary["overall"]
    assert o["psnr"] == pytest.approx(np.mean([r["psnr"] for r in rest]))
    assert o["rmse"] == pytest.approx(np.mean([r["rmse"] for r in rest] + [0.0]))
    assert o["skipped_inf"]["psnr"] == 1 and o["skipped_nan"] == dict.fromkeys(METRICS, 1)
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert m["overall"]["psnr"] == pytest.approx(o["psnr"])
    assert [r["psnr"] for r in m["per_image"] if r["name"] in (perfect, broken)] == [None, None]  # JSON-safe


# ------------------------------------------------------------------ checkpoints and band layouts
def _checkpoint(path: Path, bands: int, record: dict | None) -> Path:
    model = create_model("dsen2cr", in_channels=bands, out_channels=bands, **TINY["dsen2cr"])
    return save_checkpoint(model, path, extra={"data": record} if record else None)


@pytest.mark.parametrize("recorded", [False, True], ids=["older", "m3rcr-record"])
def test_m3rcr_checkpoint_on_sen12mscr(synth12: Path, tmp_path: Path, recorded: bool,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    record = data_record(M3RCRDataset.spec) if recorded else None
    ckpt = _checkpoint(tmp_path / "m3rcr.ckpt", 4, record)
    # by default it reads the Sentinel-2 equivalents of its bands, scaled as M3R-CR is (glfcr)
    m = _evaluate(synth12, tmp_path / "ok", "--checkpoint", str(ckpt))
    assert m["bands"] == ["B2", "B3", "B4", "B8"] and m["preprocessing"] == "glfcr" and m["images"] == 4
    # all 13 bands, or another scaling, cannot go into a 4-band M3R-CR model: one line, no traceback
    for extra, expected in ((["--bands", "all"], "blue, green, red, nir"),
                            (["--preprocessing", "default"], "preprocessing 'glfcr'")):
        code = main(["evaluate", "--dataset", "sen12mscr", "--data", str(synth12), "--split", "all", "--checkpoint",
                     str(ckpt), "--out", str(tmp_path / "e"), "--device", "cpu", "--quiet", "--no-cloud-masks",
                     *extra])
        err = capsys.readouterr().err.strip()
        assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1
        assert str(ckpt) in err and expected in err
        assert not (tmp_path / "e").exists()


def test_sen12mscr_checkpoint_brings_its_preprocessing(synth12: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    spec = SEN12MSCRDataset.spec_for(S2_BANDS, "resnet")
    ckpt = _checkpoint(tmp_path / "s12.ckpt", 13, data_record(spec, {"preprocessing": "resnet"}))
    m = _evaluate(synth12, tmp_path / "e", "--checkpoint", str(ckpt), "--save-predictions")
    assert m["preprocessing"] == "resnet" and m["model"] == "dsen2cr" and m["images"] == 4
    assert all(math.isfinite(r["rmse"]) for r in m["per_image"])
    code = main(["evaluate", "--dataset", "sen12mscr", "--data", str(synth12), "--split", "all", "--checkpoint",
                 str(ckpt), "--preprocessing", "default", "--out", str(tmp_path / "f"), "--device", "cpu",
                 "--quiet", "--no-cloud-masks"])
    err = capsys.readouterr().err
    assert code == 2 and "preprocessing 'resnet'" in err and "Traceback" not in err


def test_sen12mscr_flags_are_refused_on_m3rcr(synth_root: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--preprocessing"):
        main(["evaluate", "--data", str(synth_root), "--method", "cloudy", "--preprocessing", "resnet",
              "--out", str(tmp_path / "e"), "--quiet"])
