"""One rule for outputs in every command, and messages at the edge that a user can act on (issue 12, 3-4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from paths import CONFIGS
from tiny_models import TINY

from m3rcr.benchmark import STATE_FILE, prepare_out
from m3rcr.cli import main
from m3rcr.data.synthetic import SceneConfig, generate_scene
from m3rcr.models import create_model, save_checkpoint
from m3rcr.utils.files import OutputExistsError, check_output
from m3rcr.utils.text import percent
from m3rcr.workflows import compare


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().err


def _evaluate_cloudy(root: Path, out: Path, split: str = "test", *extra: str) -> int:
    return main(["evaluate", "--method", "cloudy", "--data", str(root), "--split", split, "--out", str(out),
                 "--quiet", *extra])


@pytest.fixture(scope="module")
def cloudy_evals(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("evals")
    folders = {"test": base / "cloudy_test", "again": base / "again" / "cloudy_test", "train": base / "cloudy_train",
               "cropped": base / "cloudy_crop"}
    assert _evaluate_cloudy(synth_root, folders["test"]) == 0
    assert _evaluate_cloudy(synth_root, folders["again"]) == 0
    assert _evaluate_cloudy(synth_root, folders["train"], "train") == 0
    assert _evaluate_cloudy(synth_root, folders["cropped"], "test", "--crop", "64") == 0
    return folders


# --------------------------------------------------------------------------- the rule
def test_check_output_rule(tmp_path: Path) -> None:
    check_output(tmp_path / "new.png", overwrite=False)
    check_output(tmp_path / "empty", overwrite=False, folder=True)
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty", overwrite=False, folder=True)  # an empty folder counts as absent
    (tmp_path / "f.png").write_text("x")
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        check_output(tmp_path / "f.png", overwrite=False)
    check_output(tmp_path / "f.png", overwrite=True)
    with pytest.raises(FileExistsError, match="not a folder"):
        check_output(tmp_path / "f.png", overwrite=True, folder=True)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        check_output(tmp_path / "empty", overwrite=True)


def test_evaluate_refuses_an_existing_folder_and_replaces_it_whole(synth_root: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "missing" / "parents" / "eval"  # parents are created
    assert _evaluate_cloudy(synth_root, out) == 0
    before = (out / "metrics.json").read_bytes()
    (out / "stale.txt").write_text("from another evaluation")
    capsys.readouterr()
    assert _evaluate_cloudy(synth_root, out) == 2
    err = _err(capsys)
    assert f"{out}: exists and is not empty (pass --overwrite to replace it)" in err
    assert "overwrite=True" not in err
    assert (out / "metrics.json").read_bytes() == before and (out / "stale.txt").is_file()  # untouched
    assert _evaluate_cloudy(synth_root, out, "test", "--overwrite") == 0
    assert not (out / "stale.txt").exists()  # replaced whole, not mixed with the old files
    assert not list(out.parent.glob(".*partial"))


def test_compare_refuses_an_existing_folder(cloudy_evals: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "a" / "cmp"
    assert main(["compare", str(cloudy_evals["test"]), "--out", str(out)]) == 0
    (out / "tables.md").write_text("mine")
    assert main(["compare", str(cloudy_evals["test"]), "--out", str(out)]) == 2
    assert "pass --overwrite" in _err(capsys) and (out / "tables.md").read_text() == "mine"
    assert main(["compare", str(cloudy_evals["test"]), "--out", str(out), "--overwrite"]) == 0
    assert (out / "tables.md").read_text() != "mine"


def test_compare_keeps_two_evaluations_of_one_method_apart(cloudy_evals: dict[str, Path], tmp_path: Path) -> None:
    results = compare([cloudy_evals["test"], cloudy_evals["again"]], tmp_path / "cmp")
    assert len(results) == 2  # not merged into one row
    a, b = results
    assert a != b and a.startswith("cloudy") and b.startswith("cloudy")
    with pytest.raises(ValueError, match="more than once"):
        compare([cloudy_evals["test"], cloudy_evals["again"]], tmp_path / "cmp2", names=["A", "A"])
    with pytest.raises(ValueError, match="one per folder"):
        compare([cloudy_evals["test"], cloudy_evals["again"]], tmp_path / "cmp3", names=["A"])
    with pytest.raises(ValueError, match="given more than once"):
        compare([cloudy_evals["test"], cloudy_evals["test"]], tmp_path / "cmp5")
    both = compare([cloudy_evals["test"], cloudy_evals["again"]], tmp_path / "cmp4", names=["A", "B"])
    assert list(both) == ["A", "B"]


@pytest.mark.parametrize("other, problem", [("train", "split"), ("cropped", "crop_size")])
def test_compare_refuses_evaluations_of_other_images(cloudy_evals: dict[str, Path], tmp_path: Path, other: str,
                                                     problem: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(cloudy_evals["test"]), str(cloudy_evals[other]), "--out", str(tmp_path / "c")]) == 2
    assert problem in _err(capsys)
    assert not (tmp_path / "c").exists()


def test_compare_refuses_the_same_split_of_another_dataset(cloudy_evals: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    for name in ("metrics.json", "metrics.csv"):
        (other / name).write_text((cloudy_evals["test"] / name).read_text())
    rows = (other / "metrics.csv").read_text().splitlines()
    rows[1] = "renamed_sample" + rows[1][rows[1].index(","):]
    (other / "metrics.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError, match="scores other images"):
        compare([cloudy_evals["test"], other], tmp_path / "c")


# --------------------------------------------------------------------------- show
def test_show_several_samples_to_a_png_is_an_error(synth_root: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "two.png"
    assert main(["show", "--data", str(synth_root), "--split", "test", "--index", "0", "1", "--out", str(out)]) == 2
    assert "folder" in _err(capsys)
    assert not out.exists()


def test_show_draws_a_sample_named_twice_once(synth_root: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from m3rcr.data import M3RCRDataset

    name = M3RCRDataset(synth_root, "test").names[0]
    out = tmp_path / "figs"
    assert main(["show", "--data", str(synth_root), "--split", "test", "--index", "0", "--name", name,
                 "--out", str(out)]) == 0
    assert len(list(out.glob("*.png"))) == 1
    assert capsys.readouterr().out.count(".png") == 1


def test_show_refuses_existing_pictures(synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "deep" / "one.png"
    args = ["show", "--data", str(synth_root), "--split", "test", "--index", "0", "--out", str(out)]
    assert main(args) == 0
    out.write_bytes(b"mine")
    assert main(args) == 2
    assert "pass --overwrite" in _err(capsys) and out.read_bytes() == b"mine"
    assert main([*args, "--overwrite"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


# --------------------------------------------------------------------------- predict, score-scene, curves, ...
@pytest.fixture(scope="module")
def scene_and_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], Path]:
    base = tmp_path_factory.mktemp("scene_out")
    scene = generate_scene(base / "scene", SceneConfig(height=96, width=96, sar_crs="EPSG:32632"), seed=2)
    ckpt = save_checkpoint(create_model("dsen2cr", **TINY["dsen2cr"]), base / "m.ckpt")
    return scene, ckpt


def _predict_args(scene: dict[str, Path], ckpt: Path, out: Path, *extra: str) -> list[str]:
    return ["predict", "--cloudy", str(scene["cloudy"]), "--sar", str(scene["sar"]), "--checkpoint", str(ckpt),
            "--out", str(out), "--device", "cpu", "--quiet", "--tile", "64", "--overlap", "8", *extra]


@pytest.mark.parametrize("which", ["--preview", "--stats"])
def test_predict_refuses_existing_side_outputs_before_running(scene_and_model: tuple[dict[str, Path], Path],
                                                              tmp_path: Path, which: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    scene, ckpt = scene_and_model
    side = tmp_path / ("p.png" if which == "--preview" else "s.json")
    side.write_text("mine")
    out = tmp_path / "out.tif"
    assert main(_predict_args(scene, ckpt, out, which, str(side))) == 2
    assert "pass --overwrite" in _err(capsys)
    assert not out.exists() and side.read_text() == "mine"  # refused before any tile ran


def test_predict_creates_parents_and_refuses_without_overwrite(scene_and_model: tuple[dict[str, Path], Path],
                                                               tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    scene, ckpt = scene_and_model
    out = tmp_path / "new" / "folder" / "out.tif"
    stats = tmp_path / "other" / "stats.json"
    assert main(_predict_args(scene, ckpt, out, "--stats", str(stats))) == 0
    assert out.is_file() and stats.is_file()
    capsys.readouterr()
    assert main(_predict_args(scene, ckpt, out)) == 2
    err = _err(capsys)
    assert "pass --overwrite to replace it" in err and "overwrite=True" not in err
    assert main(_predict_args(scene, ckpt, out, "--stats", str(out))) == 2
    assert "different files" in _err(capsys)


def test_score_scene_refuses_an_existing_json(scene_and_model: tuple[dict[str, Path], Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    scene, _ = scene_and_model
    js = tmp_path / "m.json"
    js.write_text("mine")
    args = ["score-scene", "--result", str(scene["cloudfree"]), "--cloudy", str(scene["cloudy"]),
            "--reference", str(scene["cloudfree"]), "--mask", str(scene["cloudmask"]), "--json", str(js)]
    assert main(args) == 2
    assert "pass --overwrite" in _err(capsys) and js.read_text() == "mine"
    assert main([*args, "--overwrite"]) == 0
    assert "checks" in json.loads(js.read_text())


def test_convert_checkpoint_refuses_an_existing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dst = tmp_path / "ours.ckpt"
    dst.write_text("mine")
    assert main(["convert-checkpoint", str(tmp_path / "theirs.pth"), str(dst)]) == 2
    assert "pass --overwrite" in _err(capsys) and dst.read_text() == "mine"


def test_benchmark_folder_rule(tmp_path: Path) -> None:
    assert prepare_out(tmp_path / "new") is False
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "thesis.tex").write_text("x")
    for overwrite in (False, True):  # not the tool's to delete, with or without --overwrite
        with pytest.raises(FileExistsError, match="holds no benchmark"):
            prepare_out(stranger, overwrite)
    assert (stranger / "thesis.tex").is_file()
    bench = tmp_path / "bench"
    (bench / "runs").mkdir(parents=True)
    (bench / STATE_FILE).write_text("{}")
    assert prepare_out(bench) is True  # continued
    assert prepare_out(bench, overwrite=True) is False and not bench.exists()  # started again


# --------------------------------------------------------------------------- messages
def test_a_bad_size_names_its_flag(synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["show", "--data", str(synth_root), "--split", "test", "--crop", "0", "--out", str(tmp_path / "a.png")])
    assert exc.value.code == 2
    assert "argument --crop: expected a whole number >= 1, got 0" in _err(capsys)
    with pytest.raises(SystemExit):
        main(["evaluate", "--method", "cloudy", "--data", str(synth_root), "--split", "test", "--out",
              str(tmp_path / "e"), "--batch-size", "-1"])
    assert "argument --batch-size" in _err(capsys)


def _pickle_with_object(path: Path) -> Path:
    torch.save({"format": "m3rcr-checkpoint", "hook": print}, path)
    return path


@pytest.mark.parametrize("make", [
    lambda p: p.write_bytes(b"not a checkpoint at all"),
    lambda p: p.write_bytes(b""),
    _pickle_with_object,
    lambda p: (torch.save({"a": torch.zeros(1000)}, p), p.write_bytes(p.read_bytes()[:300])),
], ids=["garbage", "empty", "python-object", "truncated"])
def test_a_bad_checkpoint_is_one_line(make, synth_root: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "bad.ckpt"
    make(ckpt)
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(synth_root), "--split", "test",
                 "--out", str(tmp_path / "e"), "--quiet"]) == 2
    err = _err(capsys).strip()
    assert len(err.splitlines()) == 1, err
    assert str(ckpt) in err and len(err) < 300
    assert "weights_only" not in err and "Traceback" not in err


def test_percentages_do_not_round_to_whole() -> None:
    assert percent(0.9996) == "99.96 %"
    assert percent(1.0) == "100.0 %" and percent(0.0) == "0.0 %"
    assert percent(0.0004) == "0.04 %"
    assert percent(0.5) == "50.0 %"
    assert percent(0.12345) == "12.3 %"


# --------------------------------------------------------------------------- --overwrite replaces only its own
def test_overwrite_never_deletes_an_input_or_a_stranger(synth_root: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synth_root, data)
    assert _evaluate_cloudy(data, data, "test", "--overwrite") == 2  # the dataset itself as --out
    assert "holds the input" in _err(capsys) and (data / "test.csv").is_file()
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = save_checkpoint(create_model("dsen2cr", **TINY["dsen2cr"]), run / "checkpoints" / "best.ckpt")
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(data), "--split", "test", "--out", str(run),
                 "--overwrite", "--quiet"]) == 2
    assert "holds the input" in _err(capsys) and ckpt.is_file()
    stranger = tmp_path / "thesis"
    stranger.mkdir()
    (stranger / "chapter1.tex").write_text("x")
    assert _evaluate_cloudy(data, stranger, "test", "--overwrite") == 2
    assert "not an earlier evaluation" in _err(capsys) and (stranger / "chapter1.tex").is_file()


def test_compare_overwrite_replaces_the_whole_folder(cloudy_evals: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", str(cloudy_evals["test"]), "--out", str(out)]) == 0
    (out / "fig_qualitative.png").write_bytes(b"stale figure of other methods")
    assert main(["compare", str(cloudy_evals["test"]), str(cloudy_evals["again"]), "--out", str(out),
                 "--overwrite"]) == 0
    assert not (out / "fig_qualitative.png").exists()  # nothing of the earlier comparison survives
    # an evaluation folder is an input, not a comparison to replace
    assert main(["compare", str(cloudy_evals["again"]), "--out", str(cloudy_evals["test"]), "--overwrite"]) == 2
    assert "not an earlier comparison" in _err(capsys)


def test_compare_needs_complete_evaluations(cloudy_evals: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    half = tmp_path / "half"
    shutil.copytree(cloudy_evals["test"], half)
    (half / "metrics.csv").unlink()
    compare([cloudy_evals["test"], half], tmp_path / "c0")  # the same image count and data: comparable
    other = json.loads((half / "metrics.json").read_text())
    other["images"] += 1
    (half / "metrics.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match="images"):
        compare([cloudy_evals["test"], half], tmp_path / "c")
    (half / "metrics.csv").write_text("name,mae\n")
    with pytest.raises(ValueError, match="lists no scored image"):
        compare([cloudy_evals["test"], half], tmp_path / "c")
    with pytest.raises(FileNotFoundError, match="no such evaluation folder"):
        compare([cloudy_evals["test"], tmp_path / "nowhere"], tmp_path / "c")
    with pytest.raises(ValueError, match="empty"):
        compare([cloudy_evals["test"]], tmp_path / "c", names=[" "])


def test_method_names_are_escaped_in_markdown_tables(cloudy_evals: dict[str, Path], tmp_path: Path) -> None:
    compare([cloudy_evals["test"], cloudy_evals["again"]], tmp_path / "c", names=["A|B", "<b>C</b>"])
    table = (tmp_path / "c" / "tables.md").read_text()
    assert "| A\\|B |" in table and "&lt;b&gt;C&lt;/b&gt;" in table


def test_a_sample_listed_twice_is_refused(synth_root: Path, tmp_path: Path) -> None:
    from m3rcr.data import M3RCRDataset
    from m3rcr.errors import DataError

    rows = (synth_root / "test.csv").read_text().splitlines()
    dup = tmp_path / "dup.csv"
    dup.write_text("\n".join([*rows, rows[0]]) + "\n")
    with pytest.raises(DataError, match=rf"row {len(rows) + 1}: sample .* is listed twice \(first in row 1\)"):
        M3RCRDataset(synth_root, "test", dup)


@pytest.mark.parametrize("override", ["trainer.max_epochs=-1", "trainer.max_epochs=0", "data.batch_size=-2"])
def test_training_settings_that_run_forever_or_do_nothing_are_refused(synth_root: Path, tmp_path: Path,
                                                                     override: str,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--config", str(CONFIGS / "demo.yaml"), f"data.root={synth_root}", override,
                 "--out", str(tmp_path / "run")]) == 2
    assert override.split("=")[0] in _err(capsys)
    assert not (tmp_path / "run").exists()


def test_pictures_and_masks_of_the_wrong_kind(synth_root: Path, scene_and_model: tuple[dict[str, Path], Path],
                                              tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "--data", str(synth_root), "--split", "test", "--out", str(tmp_path / "x.jpg")]) == 2
    assert ".png" in _err(capsys) and not (tmp_path / "x.jpg").exists()
    scene, _ = scene_and_model
    assert main(["score-scene", "--result", str(scene["cloudfree"]), "--cloudy", str(scene["cloudy"]),
                 "--reference", str(scene["cloudfree"]), "--mask", str(scene["cloudy"])]) == 2
    assert "cloud mask has 4 bands" in _err(capsys)
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    assert _evaluate_cloudy(synth_root, blocker / "sub") == 2
    assert f"{blocker}: is a file, so it cannot hold" in _err(capsys)


@pytest.mark.multiprocess
def test_a_data_error_in_a_loader_worker_stays_one_clear_line() -> None:
    from torch.utils.data import DataLoader, Dataset

    from m3rcr.errors import DataError

    class Broken(Dataset):
        def __len__(self) -> int:
            return 1

        def __getitem__(self, i: int) -> None:
            raise DataError("/data/S1_1.tif", "SAR declared as dB looks like linear power")

    with pytest.raises(DataError) as exc:  # torch rebuilds the worker's error from one message
        list(DataLoader(Broken(), num_workers=1))
    assert str(exc.value) == "/data/S1_1.tif: SAR declared as dB looks like linear power"


def test_benchmark_overwrite_never_deletes_its_data(tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    (bench / "data").mkdir(parents=True)
    (bench / STATE_FILE).write_text("{}")
    with pytest.raises(ValueError, match="holds the input"):
        prepare_out(bench, overwrite=True, inputs=[bench / "data"])
    assert (bench / "data").is_dir()


def test_predict_preview_must_be_a_png(scene_and_model: tuple[dict[str, Path], Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    scene, ckpt = scene_and_model
    assert main(_predict_args(scene, ckpt, tmp_path / "o.tif", "--preview", str(tmp_path / "quick"))) == 2
    assert "--preview" in _err(capsys) and not (tmp_path / "o.tif").exists()
