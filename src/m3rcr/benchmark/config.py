"""A benchmark's configuration, output folder and step names (see :mod:`m3rcr.benchmark`)."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from m3rcr.utils.config_files import ConfigError, read_yaml_mapping
from m3rcr.utils.files import refuse_replacing
from m3rcr.utils.text import spelled

STATE_FILE = "benchmark_state.json"
#: kinds of method: trained (or given as a checkpoint), the cloudy input, the constant mean fill
METHOD_KINDS = ("cloudy", "mean", "train")
#: SEN12MS-CR dataset options of the data section; they reach every evaluation and (as overrides) every training
SEN12MSCR_OPTIONS = ("layout", "cloud_masks", "mask_cache", "reference_compatible", "bands")
#: the data section's keys per dataset a benchmark runs on
DATA_KEYS: dict[str, set[str]] = {"m3rcr": {"root", "split", "crop", "synth", "dataset"},
                                  "sen12mscr": {"root", "split", "crop", "synth", "dataset", *SEN12MSCR_OPTIONS}}
#: the metrics of a published row and their plausible ranges (MAE on [0, 1], SAM in degrees, PSNR in dB)
PUBLISHED_METRICS: dict[str, tuple[float, float]] = {"MAE": (0.0, 1.0), "SAM": (0.0, 180.0), "PSNR": (0.0, 100.0),
                                                     "SSIM": (-1.0, 1.0)}


def slug(name: str) -> str:
    """A folder name for a method name ("Align-CR w/o SAR" -> "align-cr_w-o_sar")."""
    return re.sub(r"[^a-z0-9.-]+", "_", name.lower().replace("/", "-")).strip("_") or "method"


def load_benchmark_config(path: str | Path) -> dict[str, Any]:
    """Read and check a benchmark configuration."""
    path = Path(path)
    config = read_yaml_mapping(path, "benchmark configuration")
    allowed = {"out", "data", "overrides", "seeds", "methods", "segmentation", "complexity", "evaluation",
               "published"}
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
        if kind not in METHOD_KINDS:
            raise ConfigError(f"{path}: method {m['name']!r}: kind must be 'cloudy', 'mean' or 'train'")
        if kind == "train" and not (m.get("config") or m.get("checkpoint")):
            raise ConfigError(f"{path}: method {m['name']!r} needs a training config or a checkpoint")
        _check_seeds(m.get("seeds"), f"{path}: method {m['name']!r}")
        if m.get("seeds") is not None and (kind != "train" or m.get("checkpoint")):
            raise ConfigError(f"{path}: method {m['name']!r}: seeds only apply to methods that are trained")
    _check_seeds(config.get("seeds"), str(path))
    if not (config.get("data") or {}).get("root"):
        raise ConfigError(f"{path}: data.root is required")
    _check_data(config["data"], path)
    dataset = dataset_of(config)
    if dataset != "m3rcr" and config.get("segmentation"):
        raise ConfigError(f"{path}: segmentation: {dataset} has no land-cover maps, so there is no semantic "
                          "evaluation (and no NDVI step) on it; remove the segmentation section")
    if config.get("published") is not None:
        if dataset != "sen12mscr":
            raise ConfigError(f"{path}: published: the published rows are SEN12MS-CR's (data.dataset: sen12mscr)")
        config["published"] = check_published(config["published"], f"{path}: published")
    for entry in [*methods, config.get("segmentation") or {}]:
        for key in ("config", "checkpoint"):
            if entry.get(key):
                entry[key] = str(_resolve(entry[key], path, key))
    return config


def dataset_of(config: dict[str, Any]) -> str:
    """The dataset a benchmark runs on (``data.dataset``; M3R-CR when not given)."""
    return str((config.get("data") or {}).get("dataset") or "m3rcr")


def _check_data(data: Any, path: Path) -> None:
    """The data section: a known dataset, only the keys it takes, synthetic-data settings that the generator
    accepts (checked now, not after the first steps)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: data must be a mapping")
    dataset = str(data.get("dataset") or "m3rcr")
    if dataset not in DATA_KEYS:
        raise ConfigError(f"{path}: data.dataset {spelled(dataset, DATA_KEYS)} is not one a benchmark runs on "
                          f"({', '.join(DATA_KEYS)})")
    unknown = sorted(set(data) - DATA_KEYS[dataset])
    if unknown:
        raise ConfigError(f"{path}: data: unknown key {', '.join(spelled(k, DATA_KEYS[dataset]) for k in unknown)} "
                          f"for dataset {dataset!r}; keys: {', '.join(sorted(DATA_KEYS[dataset]))}")
    if data.get("split", "test") not in ("train", "val", "test", "all") and dataset == "sen12mscr":
        raise ConfigError(f"{path}: data.split must be train, val, test or all for sen12mscr")
    crop = data.get("crop")
    if crop is not None and (isinstance(crop, bool) or not isinstance(crop, int) or crop < 1):
        raise ConfigError(f"{path}: data.crop must be a positive whole number of pixels or null, got {crop!r}")
    if dataset == "sen12mscr":
        _check_dataset_options(data, path)
        if data.get("synth"):
            try:
                sen12mscr_synth_config(data["synth"])
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{path}: data.synth: {exc}") from None


def _check_dataset_options(data: dict[str, Any], path: Path) -> None:
    """The dataset's own options of the data section, checked by the dataset's constructor on no files."""
    from m3rcr.data.datasets import DATASETS

    keys = set(DATASETS.entry(data["dataset"]).parameters()) - {"root", "split", "files", "sampling"}
    options = {k: v for k, v in data.items() if k in keys}
    try:
        DATASETS.build(data["dataset"], root=data.get("root") or ".", split="all", files=[], **options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: data: {exc}") from None


def sen12mscr_synth_config(synth: dict[str, Any]) -> Any:
    """The synthetic SEN12MS-CR settings of ``data.synth`` (every key but ``seed``; lists become tuples)."""
    from m3rcr.data.synthetic.sen12mscr import Sen12mscrSynthConfig

    if not isinstance(synth, dict):
        raise TypeError("must be a mapping of generator settings")
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in synth.items() if k != "seed"}
    return Sen12mscrSynthConfig(**options)


def _spelled_any_case(key: str, allowed: set[str]) -> str:
    """``spelled`` that also catches a key in the wrong case ('psnr' for 'PSNR')."""
    same = [a for a in allowed if a.lower() == str(key).lower()]
    return f"{key!r} (did you mean {same[0]!r}?)" if same else spelled(key, allowed)


def check_published(rows: Any, where: str) -> list[dict[str, Any]]:
    """The ``published`` rows, checked: each a mapping with a distinct, non-empty ``method``, the four published
    metrics as finite numbers in their range and a ``source``; optional ``split`` and ``note`` texts."""
    if not isinstance(rows, list) or not rows:
        raise ConfigError(f"{where}: must be a list of rows (method, {', '.join(PUBLISHED_METRICS)}, source)")
    seen: set[str] = set()
    allowed = {"method", *PUBLISHED_METRICS, "source", "split", "note"}
    for i, row in enumerate(rows, start=1):
        at = f"{where}: row {i}"
        if not isinstance(row, dict):
            raise ConfigError(f"{at}: must be a mapping (method, {', '.join(PUBLISHED_METRICS)}, source)")
        unknown = sorted(set(row) - allowed)
        if unknown:
            raise ConfigError(f"{at}: unknown key {', '.join(_spelled_any_case(k, allowed) for k in unknown)}; "
                              f"keys: {', '.join(sorted(allowed))}")
        for key in ("method", "source"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise ConfigError(f"{at}: {key} must be a non-empty text")
        at = f"{where}: {row['method']!r}"
        if row["method"].strip().lower() in seen:
            raise ConfigError(f"{at}: listed twice; every published row needs its own method name")
        seen.add(row["method"].strip().lower())
        for metric, (low, high) in PUBLISHED_METRICS.items():
            value = row.get(metric)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"{at}: {metric} must be a number, got {value!r}")
            if not low <= value <= high:
                raise ConfigError(f"{at}: {metric} {value} is outside [{low}, {high}] (MAE on the [0, 1] scale, SAM "
                                  "in degrees, PSNR in dB)")
        for key in ("split", "note"):
            if key in row and not isinstance(row[key], str):
                raise ConfigError(f"{at}: {key} must be a text")
    return rows


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
