"""Paths of the repository, anchored on this file so the tests run from any working folder."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
