"""Figures a reader can read: the display stretch of RGB panels, and figures that print (width, labels, n)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
from tiny_models import TINY

from m3rcr.cli import build_parser, main
from m3rcr.data import M3RCRDataset
from m3rcr.data.preprocess import CLOUD_COVER_BINS
from m3rcr.data.synthetic import SceneConfig, generate_scene
from m3rcr.models import create_model, save_checkpoint
from m3rcr.reports import figures, scene_preview, semantic
from m3rcr.training.curves import training_curves

# the resolution figures are saved at (100 where the code names none)
DPI = getattr(figures, "DPI", 100)
MAX_WIDTH = 2000


def _saturated(panel: np.ndarray, where: np.ndarray) -> float:
    """Fraction of the ``where`` pixels of an (H, W, 3) display image with any channel at 0 or 1."""
    rgb = np.asarray(panel, dtype=float)[where]
    return float(((rgb <= 0) | (rgb >= 1)).any(axis=1).mean())


# --------------------------------------------------------------------------- item 5: the stretch


@pytest.mark.parametrize("split", ["test", "train"])
def test_show_keeps_the_clear_pixels_of_the_cloudy_image_readable(real_root: Path, split: str) -> None:
    """The real cloudy images are brighter than their cloud-free references even where clear: a stretch from
    the reference alone turned every clear pixel white (100 % saturated before)."""
    ds = M3RCRDataset(real_root, split)
    sample = ds[0]
    fig = ds.plot(sample)  # what m3rcr show draws
    assert [ax.get_title() for ax in fig.axes[:2]] == ["Cloudy", "Cloud-free"]
    cloudy, cloudfree = (np.asarray(ax.images[0].get_array()) for ax in fig.axes[:2])
    clear = sample["cloudmask"].numpy() == 0
    assert clear.mean() > 0.3
    assert _saturated(cloudy, clear) <= 0.05
    # the reference keeps the usual 2-98 % look (each band clips its darkest and brightest 2 %)
    assert _saturated(cloudfree, np.ones_like(clear)) <= 0.10
    # and the clear pixels keep their contrast: not a flat grey either
    assert cloudy[clear].std(axis=0).min() > 0.05


def test_stretch_from_jointly_clear_pixels_with_fallbacks() -> None:
    from m3rcr.data.plot import MIN_CLEAR_PIXELS, apply_stretch, rgb_stretch_limits

    rng = np.random.default_rng(0)
    reference = rng.uniform(0.02, 0.10, (3, 40, 40))
    hazy = reference + 0.15  # brighter everywhere, as a hazy date
    mask = np.zeros((40, 40))
    mask[:, 25:] = 1
    hazy[:, mask == 1] = 0.8  # the clouds
    hazy[:, 0, 0] = np.nan  # no-data
    lo, hi = rgb_stretch_limits([(hazy, mask), (reference, None)])
    clear = (mask == 0) & np.isfinite(hazy).all(axis=0)
    for image in (hazy, reference):
        assert _saturated(apply_stretch(image, (lo, hi)), clear) <= 0.05
    assert (hi < 0.8).all()  # clouds and no-data are not in the stretch
    assert np.allclose(apply_stretch(hazy, (lo, hi))[0, 0], 0.85)  # no-data is light grey
    # an overcast image: too few clear pixels, so the panel without a mask sets the stretch
    overcast = np.ones((40, 40))
    overcast[0, : MIN_CLEAR_PIXELS // 2] = 0
    lo2, hi2 = rgb_stretch_limits([(hazy, overcast), (reference, None)])
    np.testing.assert_allclose((lo2, hi2), rgb_stretch_limits([(reference, None)]))
    # nothing finite: the fixed range, and the fixed stretch is reflectance 0-0.3
    nothing = np.full((3, 8, 8), np.nan)
    for limits in (rgb_stretch_limits([(nothing, None)]), rgb_stretch_limits([(hazy, mask)], "fixed")):
        np.testing.assert_allclose(limits[0], 0.0)
        np.testing.assert_allclose(limits[1], 0.3)
    with pytest.raises(ValueError, match="stretch"):
        rgb_stretch_limits([(hazy, mask)], "gamma")  # type: ignore[arg-type]


def test_every_command_that_draws_images_takes_the_same_stretch() -> None:
    parser = build_parser()
    commands = {"show": ["show", "--data", "d", "--split", "test", "--out", "o.png"],
                "evaluate": ["evaluate", "--data", "d", "--method", "cloudy", "--out", "o"],
                "compare": ["compare", "a", "--out", "o"],
                "seg evaluate": ["seg", "evaluate", "--data", "d", "--checkpoint", "c", "--out", "o"],
                "predict": ["predict", "--cloudy", "c.tif", "--checkpoint", "c", "--out", "o.tif"]}
    for name, argv in commands.items():
        assert parser.parse_args(argv).stretch == "percentile", name
        assert parser.parse_args([*argv, "--stretch", "fixed"]).stretch == "fixed", name
        with pytest.raises(SystemExit):
            parser.parse_args([*argv, "--stretch", "gamma"])


@pytest.fixture(scope="module")
def preview_scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 160 x 200 scene with no-data corners and two different tiny models."""
    root = tmp_path_factory.mktemp("preview")
    cfg = SceneConfig(height=160, width=200, sar_crs="EPSG:32632", sar_res=20.0, sar_units="linear",
                      cloud_cover=0.35)
    paths = generate_scene(root / "scene", cfg, seed=3)
    ckpts = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        ckpts.append(save_checkpoint(create_model("dsen2cr", **TINY["dsen2cr"]), root / f"m{seed}.ckpt"))
    return {**paths, "checkpoints": ckpts, "root": root}


def _preview(scene: dict[str, Any], ckpt: Path, folder: Path, monkeypatch: pytest.MonkeyPatch,
             mask: bool = True) -> tuple[Any, Path]:
    """Run m3rcr predict [--mask] --preview; return the preview figure and its PNG."""
    drawn = []
    original = figures.scene_before_after

    def capture(*args: Any, **kwargs: Any) -> Any:
        drawn.append(original(*args, **kwargs))
        return drawn[-1]

    # where predict's preview draws (reports.scene_preview imported the function by name)
    monkeypatch.setattr(scene_preview, "scene_before_after", capture)
    folder.mkdir()
    png = folder / "preview.png"
    argv = ["predict", "--cloudy", str(scene["cloudy"]), "--sar", str(scene["sar"]), "--sar-units", "linear",
            "--mask", str(scene["cloudmask"]), "--checkpoint", str(ckpt), "--out", str(folder / "out.tif"),
            "--tile", "96", "--overlap", "16", "--device", "cpu", "--quiet", "--preview", str(png),
            "--stretch", "percentile"]
    if not mask:
        i = argv.index("--mask")
        del argv[i:i + 2]
    assert main(argv) == 0
    return drawn[0], png


def test_predict_preview_panels_share_the_input_stretch_deterministically(
        preview_scene: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from m3rcr.data.scene import read_quicklook

    first, first_png = _preview(preview_scene, preview_scene["checkpoints"][0], tmp_path / "a", monkeypatch)
    _, again_png = _preview(preview_scene, preview_scene["checkpoints"][0], tmp_path / "b", monkeypatch)
    other, _ = _preview(preview_scene, preview_scene["checkpoints"][1], tmp_path / "c", monkeypatch)
    before, after = (np.asarray(ax.images[0].get_array()) for ax in first.axes)
    mask = read_quicklook(preview_scene["cloudmask"], [1], mask_onto=preview_scene["cloudy"])[0]
    valid = np.isfinite(read_quicklook(preview_scene["cloudy"], [1])[0])
    clear = (mask == 0) & valid
    assert clear.mean() > 0.3 and (~valid).any()
    # a masked prediction keeps the clear pixels: on one stretch both panels show them identically
    np.testing.assert_array_equal(before[clear], after[clear])
    assert _saturated(before, clear) <= 0.05
    # the same run twice draws the same picture
    np.testing.assert_array_equal(mpimg.imread(first_png), mpimg.imread(again_png))
    # another model's clouds fill differently, but the input panel (its stretch) does not depend on the model
    other_before, other_after = (np.asarray(ax.images[0].get_array()) for ax in other.axes)
    assert not np.array_equal(after, other_after)
    np.testing.assert_array_equal(before, other_before)


def test_predict_preview_without_a_mask_takes_the_stretch_from_the_input(
        preview_scene: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from m3rcr.data.scene import read_quicklook

    first, _ = _preview(preview_scene, preview_scene["checkpoints"][0], tmp_path / "a", monkeypatch, mask=False)
    other, _ = _preview(preview_scene, preview_scene["checkpoints"][1], tmp_path / "b", monkeypatch, mask=False)
    before = np.asarray(first.axes[0].images[0].get_array())
    np.testing.assert_array_equal(before, np.asarray(other.axes[0].images[0].get_array()))  # not the model's
    mask = read_quicklook(preview_scene["cloudmask"], [1], mask_onto=preview_scene["cloudy"])[0]
    clear = (mask == 0) & np.isfinite(read_quicklook(preview_scene["cloudy"], [1])[0])
    assert _saturated(before, clear) <= 0.05


# --------------------------------------------------------------------------- item 6: figures that print

METHODS = ["Cloudy", "McGAN", "SpA-GAN", "SAR-Opt-cGAN", "DSen2-CR", "GLF-CR", "Align-CR w/o SAR", "Align-CR"]
COUNTS = {"0-20": 3, "20-40": 1, "40-60": 2, "60-80": 0, "80-100": 1}


def _results(seeds: bool = True) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    out = {}
    for i, m in enumerate(METHODS):
        per_bin = {b: {"mae": None, "psnr": None, "ssim": None, "sam": None, "ndvi_rmse": None, "ndvi_miou": None,
                       "images": 0} if COUNTS[b] == 0 else
                   {"mae": rng.uniform(0.01, 0.2), "psnr": rng.uniform(10, 30), "ssim": rng.uniform(0.2, 0.9),
                    "sam": rng.uniform(3, 30), "ndvi_rmse": rng.uniform(0.1, 0.5), "ndvi_miou": rng.uniform(10, 60),
                    "images": COUNTS[b]} for b in CLOUD_COVER_BINS}
        r: dict[str, Any] = {"overall": per_bin["0-20"], "per_bin": per_bin, "runs": 1}
        if seeds and i % 2:
            r["runs"] = 2
            r["std"] = {"per_bin": {b: {k: 0.01 for k in ("mae", "psnr", "ssim", "sam", "ndvi_rmse", "ndvi_miou")}
                                    for b in CLOUD_COVER_BINS if COUNTS[b]}}
        out[m] = r
    return out


def _semantic_results() -> dict[str, Any]:
    rng = np.random.default_rng(2)
    return {s: {"overall": {"miou": 50.0, "pa": 70.0, "pixels": 1000},
                "per_bin": {b: {"miou": rng.uniform(20, 60) if COUNTS[b] else None,
                                "pa": rng.uniform(40, 80) if COUNTS[b] else None,
                                "pixels": 1024 * COUNTS[b], "images": COUNTS[b]} for b in CLOUD_COVER_BINS}}
            for s in ["Cloud-free", *METHODS]}


def _samples(n: int = 3, size: int = 32) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for k in range(n):
        cloudfree = torch.rand(4, size, size, generator=g) * 0.1
        mask = torch.zeros(size, size)
        mask[:, : size // 3] = 1
        cloudy = cloudfree + 0.1
        cloudy[:, mask == 1] = 0.7
        out.append({"name": f"s{k}", "cloud_cover": float(mask.mean()), "cloudy": cloudy, "cloudfree": cloudfree,
                    "cloudmask": mask, "sar": torch.rand(2, size, size, generator=g),
                    "landcover": torch.randint(0, 6, (size, size), generator=g)})
    return out


def _figures() -> dict[str, Any]:
    samples = _samples()
    predictions = {m: [s["cloudfree"] + 0.01 * i for s in samples] for i, m in enumerate(METHODS)}
    seg_samples = [{**s, "sources": {src: (s["cloudfree"], s["landcover"]) for src in ["Cloudy", "Cloud-free",
                                                                                      *METHODS[1:]]}}
                   for s in samples]
    hist = {m: np.random.default_rng(i).integers(0, 50, (64, 64)) for i, m in enumerate(METHODS)}
    rng = np.random.default_rng(3)
    before, after = rng.uniform(0, 0.3, (3, 60, 80)), rng.uniform(0, 0.3, (3, 60, 80))
    history = [{"epoch": float(e), "train/loss_epoch": 1.0 / (e + 1), "val/loss": 1.2 / (e + 1), "val/psnr": 20.0 + e}
               for e in range(4)]
    ds_sample = {**samples[0], "cloud_cover_tile": 0.3}
    from m3rcr.data.plot import plot_sample

    return {
        "fig_metrics_by_cloud_cover": figures.metrics_by_cloud_cover(_results()),
        "fig_ndvi_by_cloud_cover": figures.ndvi_by_cloud_cover(_results()),
        "fig_ndvi_density": figures.ndvi_density(hist),
        "fig_qualitative": figures.qualitative_grid(samples, predictions),
        "fig_semantic_gap": semantic.semantic_gap(_semantic_results()),
        "fig_landcover_maps": semantic.landcover_maps(seg_samples),
        "before_after": figures.scene_before_after(before, after),
        "training_curves": training_curves(history),
        "show": plot_sample(ds_sample, prediction=samples[0]["cloudfree"]),
    }


PER_BIN = ("fig_metrics_by_cloud_cover", "fig_ndvi_by_cloud_cover", "fig_semantic_gap")


@pytest.fixture(scope="module")
def drawn() -> dict[str, Any]:
    return _figures()


def _png_width(fig: Any) -> int:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    buf.seek(0)
    return mpimg.imread(buf).shape[1]


@pytest.mark.parametrize("name", ["fig_metrics_by_cloud_cover", "fig_ndvi_by_cloud_cover", "fig_ndvi_density",
                                  "fig_qualitative", "fig_semantic_gap", "fig_landcover_maps", "before_after",
                                  "training_curves", "show"])
def test_figures_fit_a_page_and_label_every_axis(drawn: dict[str, Any], name: str) -> None:
    fig = drawn[name]
    assert _png_width(fig) <= MAX_WIDTH, f"{name}: wider than {MAX_WIDTH} px at {DPI} dpi"
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            assert ax.get_ylabel().strip() or ax.get_xlabel().strip(), f"{name}: colour bar without a label"
            continue
        if not (ax.images or ax.lines or ax.collections or ax.patches):
            continue  # an unused cell of a wrapped grid
        assert ax.get_title().strip(), f"{name}: a panel without a title"
        if ax.images and not ax.lines:
            continue  # an image panel: its title says what it is
        for label in (ax.get_xlabel(), ax.get_ylabel()):
            assert label.strip() and label.strip().lower() != "value", f"{name}: axis label {label!r}"
            if name in PER_BIN:
                assert "(" in label, f"{name}: no unit in {label!r}"
    if name in PER_BIN:
        for ax in fig.axes:
            ticks = [t.get_text() for t in ax.get_xticklabels()]
            assert len(ticks) == len(CLOUD_COVER_BINS), name
            assert [t.split("n=")[-1] for t in ticks] == [str(COUNTS[b]) for b in CLOUD_COVER_BINS], ticks
