"""m3rcr evaluate / compare: files, layouts, georeferenced predictions, the cloudy floor."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from m3rcr.cli import main
from m3rcr.data import M3RCRDataset, Sampling, tensor_to_affine


@pytest.fixture(scope="module")
def cloudy_eval(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "cloudy"
    assert main(["evaluate", "--method", "cloudy", "--data", str(synth_root), "--split", "test", "--out", str(out),
                 "--crop", "160", "--save-predictions", "--device", "cpu", "--quiet", "--name", "Cloudy"]) == 0
    return out


def test_outputs_and_layout(cloudy_eval: Path) -> None:
    for name in ("metrics.json", "metrics.csv", "tables.md", "table_per_class.csv", "table_per_bin.csv",
                 "fig_metrics_by_cloud_cover.png", "fig_qualitative.png"):
        assert (cloudy_eval / name).is_file(), name
    m = json.loads((cloudy_eval / "metrics.json").read_text())
    assert m["method"] == "Cloudy" and m["images"] == 5 and m["crop_size"] == [160, 160]
    assert set(m["overall"]) >= {"mae", "psnr", "ssim", "sam"}
    assert set(m["per_class"]) == {"forest", "rangeland", "agriculture", "urban", "barren", "water"}
    assert all(set(v) >= {"mae", "sam"} for v in m["per_class"].values())
    assert list(m["per_bin"]) == ["0-20", "20-40", "40-60", "60-80", "80-100"]
    assert sum(m["per_bin"][b]["images"] for b in m["per_bin"]) == 5
    with open(cloudy_eval / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5 and set(rows[0]) >= {"name", "cloud_cover", "mae", "psnr", "ssim", "sam"}
    md = (cloudy_eval / "tables.md").read_text()
    assert "| Cloudy | " in md and "Forest MAE" in md and "| Cloudy | 80-100 |" in md


def test_cloudy_floor_equals_a_direct_computation(cloudy_eval: Path, synth_root: Path) -> None:
    ds = M3RCRDataset(synth_root, "test", sampling=Sampling(crop_size=160))
    maes = [float((s["cloudy"] - s["cloudfree"]).abs().mean()) for s in (ds[i] for i in range(len(ds)))]
    m = json.loads((cloudy_eval / "metrics.json").read_text())
    assert m["overall"]["mae"] == pytest.approx(np.mean(maes), rel=1e-6)


def test_removal_checks_of_the_cloudy_floor_by_hand(cloudy_eval: Path, synth_root: Path) -> None:
    """The cloud-removal checks pool cloudy pixels over the set; each image's mean fill comes from its own
    clear pixels. The cloudy input changes no clear pixel and is brighter than the truth under clouds."""
    ds = M3RCRDataset(synth_root, "test", sampling=Sampling(crop_size=160))
    err_sum = fill_sum = n_fill = n_cloud = 0.0
    for i in range(len(ds)):
        s = ds[i]
        m = s["cloudmask"].numpy() > 0.5
        x, y = s["cloudy"].numpy().astype(np.float64), s["cloudfree"].numpy().astype(np.float64)
        n_cloud += m.sum()
        if m.any() and (~m).any():
            fill = x[:, ~m].mean(axis=1)
            fill_sum += np.abs(fill[:, None] - y[:, m]).sum()
            err_sum += np.abs(x[:, m] - y[:, m]).sum()
            n_fill += m.sum()
    r = json.loads((cloudy_eval / "metrics.json").read_text())["removal"]
    assert r["cloudy_pixels"] == n_cloud
    assert r["mae_mean_fill"] == pytest.approx(fill_sum / (4 * n_fill), rel=1e-5)
    assert r["mae_ratio"] == pytest.approx(err_sum / fill_sum, rel=1e-5)
    assert r["clear_change"] == 0 and r["clear_changed_fraction"] == 0
    assert r["grid_ratio"] > 0 and all(b > 0.5 for b in r["band_bias"])  # clouds are bright
    md = (cloudy_eval / "tables.md").read_text()
    assert "## Cloud-removal checks" in md and (cloudy_eval / "table_removal.csv").is_file()


def test_predictions_keep_the_inputs_georeference(cloudy_eval: Path, synth_root: Path) -> None:
    ds = M3RCRDataset(synth_root, "test", sampling=Sampling(crop_size=160))
    s = ds[2]
    with rasterio.open(ds.samples[2].cloudy) as src:  # the source tile: the crop starts 70 px in
        expected, crs = src.transform @ Affine.translation(70, 70), src.crs
    with rasterio.open(cloudy_eval / "predictions" / f"{s['name']}.tif") as src:
        assert src.transform == expected == tensor_to_affine(s["transform"]) and src.crs == crs
        assert (src.count, src.height, src.width, src.dtypes[0], src.nodata) == (4, 160, 160, "uint16", 0)
        data = src.read().astype(np.float64) / 10000
    # the cloudy input written back: exact up to the file's 1e-4 quantisation
    np.testing.assert_allclose(data, s["cloudy"].numpy(), atol=0.5e-4 + 1e-7)


def test_compare_combines_evaluations(cloudy_eval: Path, tmp_path: Path) -> None:
    other = tmp_path / "again"
    other.mkdir()
    m = json.loads((cloudy_eval / "metrics.json").read_text())
    m["method"] = "Cloudy again"
    (other / "metrics.json").write_text(json.dumps(m))
    out = tmp_path / "report"
    assert main(["compare", str(cloudy_eval), str(other), "--out", str(out)]) == 0
    md = (out / "tables.md").read_text()
    assert "| Cloudy |" in md and "| Cloudy again |" in md
    assert (out / "fig_metrics_by_cloud_cover.png").is_file() and (out / "fig_qualitative.png").is_file()
    assert main(["compare", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    m["crop_size"] = None
    (other / "metrics.json").write_text(json.dumps(m))
    assert main(["compare", str(cloudy_eval), str(other), "--out", str(out)]) == 2  # different images


def test_bins_follow_the_scored_crop(cloudy_eval: Path, synth_root: Path) -> None:
    ds = M3RCRDataset(synth_root, "test")
    covers = {}
    for i in range(len(ds)):  # the cloudy fraction of the centred 160 px crop, from the full mask
        s = ds[i]
        covers[s["name"]] = float(s["cloudmask"][70:230, 70:230].mean())
    with open(cloudy_eval / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        assert float(row["cloud_cover"]) == pytest.approx(covers[row["name"]])
    m = json.loads((cloudy_eval / "metrics.json").read_text())
    counts = {b: 0 for b in m["per_bin"]}
    for c in covers.values():
        counts[["0-20", "20-40", "40-60", "60-80", "80-100"][min(int(c * 5), 4)]] += 1
    assert {b: v["images"] for b, v in m["per_bin"].items()} == counts


def test_unknown_figure_samples(synth_root: Path, tmp_path: Path, capsys) -> None:
    assert main(["evaluate", "--method", "cloudy", "--data", str(synth_root), "--out", str(tmp_path / "e"),
                 "--samples", "no_such_sample", "--quiet"]) == 2
    assert "no sample named no_such_sample" in capsys.readouterr().err
