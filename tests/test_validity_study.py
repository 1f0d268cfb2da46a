"""benchmarks/validity.py's bookkeeping: paired differences, overrides, and how it splits the methods."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import yaml
from paths import CONFIGS, REPO


@pytest.fixture(scope="module")
def validity():
    spec = importlib.util.spec_from_file_location("validity", REPO / "benchmarks" / "validity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def base() -> dict:
    return yaml.safe_load((CONFIGS / "validity.yaml").read_text())


def test_paired_differences_use_matching_seeds_only(validity) -> None:
    mean, std, n = validity.paired({0: 0.05, 1: 0.04, 2: 0.07}, {0: 0.04, 1: 0.05, 3: 0.01})
    assert n == 2
    assert mean == pytest.approx(0.0)  # (+0.01 - 0.01) / 2
    assert std == pytest.approx(math.sqrt(2) * 0.01)  # sample std of +0.01, -0.01
    assert validity.paired({0: 1.0}, {1: 1.0}) is None
    assert math.isnan(validity.paired({0: 2.0}, {0: 1.0})[1])


def test_the_last_override_wins(validity, base) -> None:
    assert validity.override(base, "trainer.max_epochs") == "30"
    base["overrides"].append("trainer.max_epochs=150")
    assert validity.override(base, "trainer.max_epochs") == "150"
    assert validity.override(base, "no.such.key") is None


def names(config: dict) -> list[str]:
    return [m["name"] for m in config["methods"]]


def test_levels_and_parts_split_the_methods(validity, base, tmp_path: Path) -> None:
    main = validity.level_config(base, 6.0, tmp_path)
    assert len(names(main)) == 9  # the cloudy floor and all eight methods
    assert names(validity.level_config(base, 12.0, tmp_path)) == ["Cloudy", "Align-CR w/o Align", "Align-CR"]
    variants = validity.level_config(base, 6.0, tmp_path, variants_only=True)
    assert names(variants) == ["Cloudy", "Align-CR w/o SAR", "Align-CR w/o Align", "Align-CR"]
    others = validity.others_config(base, tmp_path)
    assert set(names(others)) | set(names(variants)) == set(names(main))
    assert set(names(others)) & set(names(variants)) == {"Cloudy"}
    part = validity.others_config(base, tmp_path, ["GLF-CR"], "_b")
    assert names(part) == ["Cloudy", "GLF-CR"]
    assert part["out"].endswith("shift6_others_b") and part["data"]["root"].endswith("data_shift6_others_b")
    assert validity.level_config(base, 12.0, tmp_path)["data"]["synth"]["sar_shift_px"] == 12.0
    with pytest.raises(SystemExit, match="Align CR"):
        validity.others_config(base, tmp_path, ["Align CR"])
