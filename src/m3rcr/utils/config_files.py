"""Configuration files: the error every configuration problem raises, and reading a YAML file of sections.

Light on purpose (no torch, no Lightning): the benchmark's configuration and the training configuration both read
their files through here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration file or override is invalid."""


def read_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """A YAML file of sections (``what`` names it in errors: "configuration", "benchmark configuration")."""
    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"{path}: a {what} must be a mapping of sections")
    return dict(loaded)
