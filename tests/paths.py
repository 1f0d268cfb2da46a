"""Paths of the repository, anchored on this file so the tests run from any working folder.

``../shared`` (next to the clone, or ``$M3RCR_SHARED``) holds the real samples, the specs and the golden
outputs; a clone without it still passes: tests that need it go through :func:`require_shared` and skip,
saying why.
"""

import os
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
CONFIGS = REPO / "configs"
TEST_DATA = TESTS / "data"
SHARED = Path(os.environ.get("M3RCR_SHARED", REPO.parent / "shared"))
REAL_SAMPLES = SHARED / "data" / "m3rcr-samples"


def require_shared(path: Path) -> Path:
    """``path`` (in the shared folder) if it exists; otherwise skip the calling test, saying why."""
    if not path.exists():
        pytest.skip(f"{path} not found: the shared folder is not next to this clone (or set M3RCR_SHARED)")
    return path
