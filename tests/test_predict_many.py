"""Prediction over many scenes: manifests and repeated flags, sharding over processes (two, over gloo, started
by Lightning Fabric), reruns that skip complete outputs and redo damaged ones, and errors naming the row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from tiny_models import TINY

from m3rcr.cli import main
from m3rcr.data.synthetic import SceneConfig, generate_scene
from m3rcr.errors import DataError
from m3rcr.inference.many import SceneJob, check_jobs, output_state, read_manifest, shard
from m3rcr.models import create_model, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
N_SCENES = 4
# the options every run here shares (small tiles: several per scene)
OPTIONS = ["--sar-units", "linear", "--tile", "96", "--overlap", "16", "--quiet"]
# settings that name the run rather than the prediction
_RUN_FIELDS = ("command", "started", "host")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Four small scenes of different sizes (the second with a cloud mask), a tiny checkpoint, a CSV manifest
    with paths relative to it, and each scene's single-scene prediction (`m3rcr predict --cloudy ...`)."""
    root = tmp_path_factory.mktemp("many")
    rows, refs = ["cloudy,sar,out,mask"], []
    torch.manual_seed(0)
    ckpt = save_checkpoint(create_model("dsen2cr", **TINY["dsen2cr"]), root / "model.ckpt")
    for i in range(N_SCENES):
        cfg = SceneConfig(height=150 + 30 * i, width=200, sar_crs="EPSG:32632", sar_res=20.0, sar_units="linear",
                          footprint_angle=0.0)
        paths = generate_scene(root / f"s{i}", cfg, seed=10 + i)
        mask = f"s{i}/cloudmask.tif" if i == 1 else ""
        rows.append(f"s{i}/cloudy.tif,s{i}/sar.tif,out/p{i}.tif,{mask}")
        ref = root / "ref" / f"p{i}.tif"
        args = ["--cloudy", str(paths["cloudy"]), "--sar", str(paths["sar"]), "--out", str(ref)]
        refs.append(ref)
        mask_args = ["--mask", str(root / mask)] if mask else []
        assert main(["predict", *args, *mask_args, "--checkpoint", str(ckpt), "--device", "cpu", *OPTIONS]) == 0
    (root / "scenes.csv").write_text("\n".join(rows) + "\n")
    return {"root": root, "manifest": root / "scenes.csv", "ckpt": ckpt, "refs": refs}


def _read(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as src:
        tags = src.tags()
        settings = json.loads(tags.pop("M3RCR_PREDICT"))
        profile = dict(src.profile, descriptions=src.descriptions, tags=tags, masks=src.read_masks(),
                       settings={k: v for k, v in settings.items() if k not in _RUN_FIELDS})
        return src.read(), profile


def _assert_same_prediction(out: Path, ref: Path) -> None:
    """Pixels, mask, grid, band metadata, tags and recorded settings equal (but the command line and time)."""
    a, pa = _read(out)
    b, pb = _read(ref)
    assert np.array_equal(a, b), out
    pa["settings"].pop("cloudy"), pb["settings"].pop("cloudy")  # the same file, named from another folder
    for key in ("sar", "mask"):
        assert (pa["settings"].pop(key) is None) == (pb["settings"].pop(key) is None), key
    for key in pb:
        if key == "masks":
            assert np.array_equal(pa[key], pb[key])
        else:
            assert pa[key] == pb[key], key


def _manifest_run(scenes: dict, *extra: str) -> int:
    return main(["predict", "--manifest", str(scenes["manifest"]), "--checkpoint", str(scenes["ckpt"]),
                 "--device", "cpu", *OPTIONS, *extra])


def _inodes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in sorted(folder.iterdir())}


# --------------------------------------------------------------------------- one process
def test_manifest_matches_single_scene_and_a_rerun_redoes_only_what_is_missing(
        scenes: dict, capsys: pytest.CaptureFixture[str]) -> None:
    out = scenes["root"] / "out"
    assert _manifest_run(scenes) == 0
    for i, ref in enumerate(scenes["refs"]):
        _assert_same_prediction(out / f"p{i}.tif", ref)
    assert f"{N_SCENES} done, 0 skipped" in capsys.readouterr().out
    before = _inodes(out)
    # a rerun skips every complete output and writes nothing
    assert _manifest_run(scenes) == 0
    assert f"0 done, {N_SCENES} skipped" in capsys.readouterr().out
    assert _inodes(out) == before
    # one output deleted (a killed run's temporary files beside it), one truncated: only those two are redone
    (out / "p0.tif").unlink()
    leftovers = [out / ".p0.k3j9x_2a.tmp.tif", out / ".p0.k3j9x_2a.tmp.work.tif", out / ".p3.ab12cd34.tmp.tif"]
    for p in leftovers:
        p.write_bytes(b"partial")
    data = (out / "p2.tif").read_bytes()
    (out / "p2.tif").write_bytes(data[: len(data) * 2 // 3])
    assert output_state(SceneJob(scenes["root"] / "s2" / "cloudy.tif", out / "p2.tif"), 4)[0] == "incomplete"
    assert _manifest_run(scenes) == 0
    text = capsys.readouterr().out
    assert "2 done, 2 skipped" in text and "p2.tif is damaged or truncated" in text, text
    after = _inodes(out)
    assert after["p1.tif"] == before["p1.tif"] and after["p3.tif"] == before["p3.tif"]  # untouched
    assert after["p2.tif"] != before["p2.tif"]
    assert sorted(after) == [f"p{i}.tif" for i in range(N_SCENES)]  # the leftovers are gone
    for i, ref in enumerate(scenes["refs"]):
        _assert_same_prediction(out / f"p{i}.tif", ref)


def test_repeated_flags_match_by_position(scenes: dict, tmp_path: Path) -> None:
    root, args = scenes["root"], []
    for i in (2, 0):
        args += ["--cloudy", str(root / f"s{i}" / "cloudy.tif"), "--sar", str(root / f"s{i}" / "sar.tif"),
                 "--out", str(tmp_path / f"q{i}.tif")]
    assert main(["predict", *args, "--checkpoint", str(scenes["ckpt"]), "--device", "cpu", *OPTIONS]) == 0
    for i in (2, 0):
        _assert_same_prediction(tmp_path / f"q{i}.tif", scenes["refs"][i])


def test_a_failed_scene_does_not_stop_the_others(scenes: dict, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root = scenes["root"]
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a raster")
    foreign = tmp_path / "f.tif"
    with rasterio.open(root / "s0" / "cloudy.tif") as src:  # someone's valid GeoTIFF where an output goes
        data, profile = src.read(), src.profile
    with rasterio.open(foreign, "w", **profile) as dst:
        dst.write(data)
    manifest = tmp_path / "scenes.yaml"
    manifest.write_text(f"- {{cloudy: {broken}, sar: {root}/s0/sar.tif, out: b.tif}}\n"
                        f"- {{cloudy: {root}/s0/cloudy.tif, sar: {root}/s0/sar.tif, out: f.tif}}\n"
                        f"- {{cloudy: {root}/s3/cloudy.tif, sar: {root}/s3/sar.tif, out: ok.tif}}\n")
    args = ["predict", "--manifest", str(manifest), "--checkpoint", str(scenes["ckpt"]), "--device", "cpu", *OPTIONS]
    assert main(args) == 1
    text = capsys.readouterr().out
    assert "1 done, 0 skipped (complete already), 2 failed" in text, text
    assert f"failed: {manifest}, row 1: {broken}" in text
    assert f"failed: {manifest}, row 2: {foreign}: exists and is not an m3rcr prediction" in text
    assert "--overwrite" in text
    _assert_same_prediction(tmp_path / "ok.tif", scenes["refs"][3])
    assert not (tmp_path / "b.tif").exists()
    with rasterio.open(foreign) as dst:
        assert "M3RCR_PREDICT" not in dst.tags()  # left alone
    # --overwrite replaces it (and redoes the complete one)
    assert main([*args, "--overwrite"]) == 1
    assert "2 done, 0 skipped (complete already), 1 failed" in capsys.readouterr().out
    _assert_same_prediction(foreign, scenes["refs"][0])


def test_output_state(scenes: dict, tmp_path: Path) -> None:
    root, ref = scenes["root"], scenes["refs"][0]
    job = SceneJob(root / "s0" / "cloudy.tif", ref)
    assert output_state(job, 4) == ("complete", "")
    assert output_state(job, 4, scenes["ckpt"]) == ("complete", "")
    assert output_state(job, 4, "other.ckpt")[0] == "foreign"
    assert output_state(job, 13)[0] == "incomplete"  # another band count than the model writes
    assert output_state(SceneJob(root / "s1" / "cloudy.tif", ref), 4)[0] == "incomplete"  # another size
    assert output_state(SceneJob(job.cloudy, tmp_path / "none.tif"), 4) == ("missing", "")
    data = ref.read_bytes()
    for keep in (len(data) - 1000, 300):  # the last blocks cut off; the header cut
        cut = tmp_path / f"cut{keep}.tif"
        cut.write_bytes(data[:keep])
        state, why = output_state(SceneJob(job.cloudy, cut), 4)
        assert state == "incomplete", (keep, why)


def test_shards_are_deterministic_and_cover_every_scene_once() -> None:
    assert shard(7, 0, 2) == [0, 2, 4, 6] and shard(7, 1, 2) == [1, 3, 5]
    for world in (1, 3, 8):
        got = sorted(i for r in range(world) for i in shard(10, r, world))
        assert got == list(range(10))
    with pytest.raises(ValueError, match="rank 2"):
        shard(4, 2, 2)


# --------------------------------------------------------------------------- manifests and their errors
def test_yaml_json_and_csv_manifests_agree(scenes: dict, tmp_path: Path) -> None:
    csv_jobs = read_manifest(scenes["manifest"])
    rows = [{k: str(v) for k, v in (("cloudy", j.cloudy), ("sar", j.sar), ("out", j.out), ("mask", j.mask))
             if v is not None} for j in csv_jobs]
    (tmp_path / "m.json").write_text(json.dumps(rows))
    (tmp_path / "m.yml").write_text("\n".join(f"- {json.dumps(r)}" for r in rows))
    for name in ("m.json", "m.yml"):
        jobs = read_manifest(tmp_path / name)
        assert [(j.cloudy, j.sar, j.out, j.mask) for j in jobs] == [(j.cloudy, j.sar, j.out, j.mask)
                                                                    for j in csv_jobs]
    assert csv_jobs[1].mask == scenes["root"] / "s1" / "cloudmask.tif" and csv_jobs[0].mask is None
    assert csv_jobs[2].where == f"{scenes['manifest']}, row 3"


def _bad(tmp_path: Path, scenes: dict, text: str, suffix: str = ".csv") -> str:
    path = tmp_path / f"bad{suffix}"
    path.write_text(text.format(root=scenes["root"]))
    with pytest.raises(DataError) as err:
        check_jobs(read_manifest(path))
    return str(err.value)


def test_bad_manifests_name_the_row(scenes: dict, tmp_path: Path) -> None:
    head = "cloudy,sar,out\n"
    ok = "{root}/s0/cloudy.tif,{root}/s0/sar.tif,a.tif\n"
    msg = _bad(tmp_path, scenes, head + ok + "{root}/s9/cloudy.tif,,b.tif\n")
    assert msg.startswith(f"{tmp_path}/bad.csv, row 2: cloudy {scenes['root']}/s9/cloudy.tif: not found"), msg
    msg = _bad(tmp_path, scenes, head + ok + "{root}/s1/cloudy.tif,,a.tif\n")
    assert "row 2: out" in msg and "is also the output of" in msg and "row 1" in msg, msg
    msg = _bad(tmp_path, scenes, head + ok + "{root}/s1/cloudy.tif,,{root}/s0/sar.tif\n")
    assert "row 2: out" in msg and "is the sar input of" in msg and "row 1" in msg, msg
    msg = _bad(tmp_path, scenes, head + ok + "{root}/s1/cloudy.tif,,c.png\n")
    assert "row 2: out" in msg and ".tif name" in msg, msg
    # several problems: one error lists them all
    msg = _bad(tmp_path, scenes, head + "{root}/x.tif,,a.tif\n{root}/y.tif,,a.tif\n")
    assert "3 problems" in msg and "row 1: cloudy" in msg and "row 2: cloudy" in msg, msg
    assert "unknown column(s) 'output'" in _bad(tmp_path, scenes, "cloudy,output\nx.tif,y.tif\n")
    assert "no column out" in _bad(tmp_path, scenes, "cloudy,sar\nx.tif,y.tif\n")
    assert "row 1: cloudy is empty" in _bad(tmp_path, scenes, head + ",s.tif,o.tif\n")
    assert "row 1: has 4 cells" in _bad(tmp_path, scenes, head + "a,b,c.tif,d\n")
    assert "lists no scene" in _bad(tmp_path, scenes, head)
    assert "list of scenes" in _bad(tmp_path, scenes, "cloudy: a.tif\nout: b.tif\n", ".yaml")
    assert "row 2: unknown key(s) 'sr'" in _bad(tmp_path, scenes, "- {{cloudy: a, out: b.tif}}\n"
                                                                  "- {{cloudy: a, sr: s, out: c.tif}}\n", ".yaml")
    assert "cannot be parsed" in _bad(tmp_path, scenes, "[{{", ".json")
    assert ".csv, .yaml" in _bad(tmp_path, scenes, "", ".txt")


def test_bad_command_lines(scenes: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, ckpt = scenes["root"], str(scenes["ckpt"])
    c0, s0 = str(root / "s0" / "cloudy.tif"), str(root / "s0" / "sar.tif")
    cases = [
        (["--cloudy", c0, "--cloudy", c0, "--out", "a.tif"], "2 --cloudy but 1 --out"),
        (["--cloudy", c0, "--sar", s0, "--cloudy", c0, "--out", "a.tif", "--out", "b.tif"], "2 --cloudy but 1 --sar"),
        (["--manifest", str(scenes["manifest"]), "--cloudy", c0], "give no --cloudy with it"),
        (["--cloudy", c0], "give --cloudy and --out"),
        (["--manifest", str(scenes["manifest"]), "--stats", "s.json"], "--preview and --stats are for one scene"),
        (["--cloudy", c0, "--out", str(tmp_path / "a.tif"), "--devices", "2", "--device", "cpu"],
         "--device cpu picks one device"),
        (["--cloudy", c0, "--out", str(tmp_path / "a.tif"), "--cloudy", c0, "--out", str(tmp_path / "b.tif")],
         "scene 1 (--cloudy"),  # a SAR model without SAR: named before anything runs
    ]
    for args, expected in cases:
        assert main(["predict", *args, "--checkpoint", ckpt, "--quiet"]) == 2, args
        assert expected in capsys.readouterr().err, (args, expected)
    assert not (tmp_path / "a.tif").exists()


# --------------------------------------------------------------------------- two processes
@pytest.mark.multiprocess
def test_two_processes_over_gloo(scenes: dict, tmp_path: Path) -> None:
    """Fabric starts the second process; each predicts every other row; the outputs are the single-scene ones;
    a failing row stops neither process, and the exit status says it failed."""
    manifest = tmp_path / "scenes.csv"
    root = scenes["root"]
    rows = [f"{root}/s{i}/cloudy.tif,{root}/s{i}/sar.tif,out/p{i}.tif,{root / 's1/cloudmask.tif' if i == 1 else ''}"
            for i in range(N_SCENES)]
    (tmp_path / "broken.tif").write_bytes(b"not a raster")
    rows.append(f"broken.tif,{root}/s0/sar.tif,out/broken.tif,")  # row 5: process 0's third scene
    manifest.write_text("cloudy,sar,out,mask\n" + "\n".join(rows) + "\n")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "m3rcr", "predict", "--manifest", str(manifest), "--checkpoint",
                           str(scenes["ckpt"]), "--devices", "2", "--accelerator", "cpu", *OPTIONS],
                          check=False, capture_output=True, text=True, timeout=240, env=env, cwd=REPO)
    seconds = time.perf_counter() - start
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    assert "5 scene(s) on 2 process(es): 4 done, 0 skipped (complete already), 1 failed" in text, text
    assert "process 0 (" in text and "2 done, 0 skipped, 1 failed" in text, text
    assert "process 1 (" in text and "2 done, 0 skipped, 0 failed" in text, text
    for row, rank in ((1, 0), (2, 1), (3, 0), (4, 1)):  # round robin over the rows
        assert f"[process {rank}/2] {manifest}, row {row}: wrote" in text, text
    assert f"failed: {manifest}, row 5: " in text
    for i, ref in enumerate(scenes["refs"]):
        _assert_same_prediction(tmp_path / "out" / f"p{i}.tif", ref)
    print(f"two processes over gloo: {seconds:.1f} s")  # shown with -s; the report quotes it
