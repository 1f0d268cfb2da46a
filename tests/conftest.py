"""Shared fixtures: the two real M3R-CR samples (skipped, with the reason, without ../shared) and small
synthetic datasets."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from paths import REAL_SAMPLES, require_shared

# pytest-xdist runs one worker per core: thread pools inside each worker would only oversubscribe the
# cores (and inflate the CPU time that test_synthetic.test_speed measures).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


@pytest.fixture(scope="session")
def real_root() -> Path:
    """The two real M3R-CR samples (one train, one test) in the official layout."""
    require_shared(REAL_SAMPLES / "train.csv")
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
