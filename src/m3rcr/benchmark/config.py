"""A benchmark's configuration, output folder and step names (see :mod:`m3rcr.benchmark`)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from m3rcr.utils.config_files import ConfigError, read_yaml_mapping
from m3rcr.utils.files import refuse_replacing

STATE_FILE = "benchmark_state.json"


def slug(name: str) -> str:
    """A folder name for a method name ("Align-CR w/o SAR" -> "align-cr_w-o_sar")."""
    return re.sub(r"[^a-z0-9.-]+", "_", name.lower().replace("/", "-")).strip("_") or "method"


def load_benchmark_config(path: str | Path) -> dict[str, Any]:
    """Read and check a benchmark configuration."""
    path = Path(path)
    config = read_yaml_mapping(path, "benchmark configuration")
    allowed = {"out", "data", "overrides", "seeds", "methods", "segmentation", "complexity", "evaluation"}
    unknown = set(config) - allowed
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {sorted(unknown)}; sections: {sorted(allowed)}")
    methods = config.get("methods") or []
    if not methods:
        raise ConfigError(f"{path}: no methods listed")
    names = [m.get("name") for m in methods]
    if None in names or len(set(map(slug, names))) != len(names):
        raise ConfigError(f"{path}: every method needs a distinct name")
    for m in methods:
        kind = m.get("kind", "train")
        if kind not in ("cloudy", "train"):
            raise ConfigError(f"{path}: method {m['name']!r}: kind must be 'cloudy' or 'train'")
        if kind == "train" and not (m.get("config") or m.get("checkpoint")):
            raise ConfigError(f"{path}: method {m['name']!r} needs a training config or a checkpoint")
        _check_seeds(m.get("seeds"), f"{path}: method {m['name']!r}")
        if m.get("seeds") is not None and (kind != "train" or m.get("checkpoint")):
            raise ConfigError(f"{path}: method {m['name']!r}: seeds only apply to methods that are trained")
    _check_seeds(config.get("seeds"), str(path))
    if not (config.get("data") or {}).get("root"):
        raise ConfigError(f"{path}: data.root is required")
    for entry in [*methods, config.get("segmentation") or {}]:
        for key in ("config", "checkpoint"):
            if entry.get(key):
                entry[key] = str(_resolve(entry[key], path, key))
    return config


def _check_seeds(seeds: Any, where: str) -> None:
    if seeds is None:
        return
    if (not isinstance(seeds, list) or not seeds or len(set(map(str, seeds))) != len(seeds)
            or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in seeds)):
        raise ConfigError(f"{where}: seeds must be a list of distinct whole numbers >= 0, got {seeds!r}")


def _resolve(value: str, config_file: Path, what: str) -> Path:
    """A path from a benchmark configuration: as given (relative to the working directory), else relative
    to the configuration's folder or the folder above it (where ``configs/`` usually lives)."""
    candidates = [Path(value), config_file.parent / value, config_file.parent.parent / value]
    for c in candidates:
        if c.exists():
            return c
    raise ConfigError(f"{config_file}: {what} {value!r} not found (looked in {', '.join(str(c) for c in candidates)})")


def fingerprint(*parts: Any) -> str:
    """A short hash of JSON-able parts, to tell whether a finished step's inputs have changed."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_hash(path: str | Path | None) -> str | None:
    if not path:
        return None
    p = Path(path)
    return hashlib.sha256(p.read_bytes()).hexdigest()[:16] if p.is_file() else None


def benchmark_inputs(config: dict[str, Any]) -> list[str | None]:
    """The files and folders a benchmark reads (the data root, given checkpoints): its output must hold none."""
    return [(config.get("data") or {}).get("root"), *(m.get("checkpoint") for m in config.get("methods") or [])]


def prepare_out(out: str | Path, overwrite: bool = False, inputs: Sequence[str | Path | None] = ()) -> bool:
    """Check the benchmark folder ``out`` before a run; True when it holds a benchmark to continue.

    A folder holding a benchmark (its state file or configuration) is continued, steps already done being skipped; with
    ``overwrite`` it is deleted and the benchmark starts again. Any other non-empty folder is refused, with
    or without ``overwrite``: it is not this tool's to delete; so is a folder holding one of ``inputs`` (the
    data, given checkpoints) when ``overwrite`` would delete it.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return False
    if not any((out / name).is_file() for name in (STATE_FILE, "benchmark_config.yaml")):
        raise FileExistsError(f"{out}: exists, is not empty and holds no benchmark ({STATE_FILE}); choose a new "
                              "folder")
    if overwrite:
        refuse_replacing(out, inputs, owned=lambda d: True, kind="benchmark")
        shutil.rmtree(out)
        return False
    return True


def semantic_source(method: str, seed: int | None, runs: int) -> str:
    """The name of one run of a method in the semantic evaluation ("Align-CR", or "Align-CR [seed 1]")."""
    return method if runs == 1 or seed is None else f"{method} [seed {seed}]"


def step_name(kind: str, method: dict[str, Any], seed: int | None) -> str:
    """A step's name: ``train:align-cr:seed0``; without a seed (cloudy floor, given checkpoint) ``evaluate:cloudy``."""
    return f"{kind}:{slug(method['name'])}" + ("" if seed is None else f":seed{seed}")
