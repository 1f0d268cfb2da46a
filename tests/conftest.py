"""Shared fixtures: the two real M3R-CR samples and small synthetic datasets."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# pytest-xdist runs one worker per core: thread pools inside each worker would only oversubscribe the
# cores (and inflate the CPU time that test_synthetic.test_speed measures).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

PROJECT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("M3RCR_SHARED", PROJECT.parent / "shared"))
REAL_SAMPLES = SHARED / "data" / "m3rcr-samples"


def shared_file(path: Path) -> Path:
    """A file of the shared facts folder, or skip the test: a clone without ../shared still passes."""
    if not path.exists():
        pytest.skip(f"{path} not found: the shared facts folder is not next to this clone (set M3RCR_SHARED)")
    return path


@pytest.fixture(scope="session")
def real_root() -> Path:
    """The two real M3R-CR samples (one train, one test) in the official layout."""
    shared_file(REAL_SAMPLES / "train.csv")
    return REAL_SAMPLES


@pytest.fixture
def real_copy(real_root: Path, tmp_path: Path) -> Path:
    """A writable copy of the real samples, for tests that corrupt files."""
    dst = tmp_path / "m3rcr"
    shutil.copytree(real_root, dst)
    for p in dst.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset: 10 train samples (3 AOIs) and 5 test samples, seed 0."""
    from m3rcr.data.synthetic import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("synth") / "data", 10, 5, seed=0)
