"""Our checkpoint format: model name, full configuration and weights, loadable with ``weights_only=True``."""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Any

import torch

from m3rcr.errors import DataError
from m3rcr.models.base import CloudRemovalModel, ConfiguredModule
from m3rcr.models.registry import MODELS_BY_TASK
from m3rcr.utils.files import atomic_path

FORMAT = "m3rcr-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(model: ConfiguredModule, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Save a registry model with its name and configuration (written atomically)."""
    from m3rcr.version import __version__

    if model.task not in MODELS_BY_TASK or model.registry_name is None:
        raise ValueError("only models made from a registry (m3rcr.models.create_model, ...) can be saved this way")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "task": model.task,
        "model": model.registry_name,
        "config": dict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": {"m3rcr_version": __version__, "torch_version": str(torch.__version__),
                 "saved": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), **(extra or {})},
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load our checkpoint file safely (tensors and plain containers only)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "checkpoint not found")
    with open(path, "rb") as fh:
        head = fh.read(4)
    # torch.save writes a zip archive (legacy: a pickle, protocol 2+); anything else gets torch's odd messages
    if not head:
        raise DataError(path, "cannot be read as an m3rcr checkpoint: the file is empty")
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise DataError(path, "cannot be read as an m3rcr checkpoint: not a PyTorch file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(path, f"cannot be read as an m3rcr checkpoint: {_load_failure(exc)}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        hint = " (a checkpoint of the authors' code? convert it with `m3rcr convert-checkpoint`)" \
            if isinstance(payload, dict) and ("network" in payload or "state_dict" in payload) else ""
        raise DataError(path, f"not an m3rcr checkpoint{hint}")
    return payload


def _load_failure(exc: BaseException) -> str:
    """One line saying why torch.load failed; torch's own messages run to a paragraph of advice."""
    text = str(exc)
    if isinstance(exc, EOFError) or not text:
        return "the file ends early (empty or truncated)"
    found = re.search(r"unsupported GLOBAL:? (?:GLOBAL )?([\w.]+)", text, re.IGNORECASE)
    if found:
        return (f"it holds a Python object ({found.group(1)}); only tensors and plain containers are loaded, "
                "for safety")
    found = re.search(r"Unsupported operand (\d+)", text)
    if found:
        return f"not a PyTorch file (its pickle stream has an unknown operand {found.group(1)})"
    if "zip archive" in text or "central directory" in text:
        return "not a complete PyTorch file (truncated, or another format)"
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    first = first.split(". ")[0]
    return first if len(first) <= 160 else first[:157] + "..."


def load_model(path: str | Path, device: str | torch.device | None = None) -> CloudRemovalModel:
    """The cloud-removal model stored in an m3rcr checkpoint, in eval mode, on ``device`` (default: CPU).

    Call it as ``model(cloudy, sar)`` with (B, 4, H, W) and (B, 2, H, W) tensors in [0, 1].
    """
    model = _load(path, device, "cloud_removal")
    assert isinstance(model, CloudRemovalModel)  # what the cloud-removal registry builds
    return model


def load_segmentation_model(path: str | Path, device: str | torch.device | None = None) -> ConfiguredModule:
    """The land-cover segmentation model stored in an m3rcr checkpoint, in eval mode; ``model(image)`` gives logits."""
    return _load(path, device, "segmentation")


def _load(path: str | Path, device: str | torch.device | None, task: str) -> ConfiguredModule:
    payload = read_checkpoint(path)
    found = payload.get("task", "cloud_removal")
    if found != task:
        raise DataError(path, f"is a {found.replace('_', '-')} checkpoint, not a {task.replace('_', '-')} one")
    model = MODELS_BY_TASK[task].build(payload["model"], **payload["config"])
    missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    if missing or unexpected:
        raise DataError(path, f"weights do not fit model {payload['model']!r}: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    return model.to(device or "cpu").eval()


def data_record(spec: Any, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a checkpoint records of the data it was trained on: the dataset's name, its optical and SAR band names
    and the value convention (``preprocessing`` for SEN12MS-CR), from a :class:`~m3rcr.data.DatasetSpec` and the
    dataset's options; saved under ``meta["data"]``."""
    options = options or {}
    return {"dataset": spec.name, "optical_bands": list(spec.optical_bands), "sar_bands": list(spec.sar_bands),
            "preprocessing": options.get("preprocessing"), "reflectance_per_unit": float(spec.reflectance_per_unit)}


def checkpoint_data(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The data record of a checkpoint read by :func:`read_checkpoint` (None for checkpoints saved before it was
    recorded, which were all trained on M3R-CR)."""
    record = payload.get("meta", {}).get("data")
    return dict(record) if isinstance(record, dict) else None


#: M3R-CR's PlanetScope bands and the Sentinel-2 bands that cover the same part of the spectrum: a model trained on
#: one can be run on the other (SEN12MS-CR with ``bands: rgbn``)
SENTINEL2_EQUIVALENT = {"blue": "B2", "green": "B3", "red": "B4", "nir": "B8"}
#: what an M3R-CR model expects of SEN12MS-CR: its 4 bands as reflectance and VV [-25, 0], VH [-32.5, 0] dB to
#: [0, 1], which is SEN12MS-CR's ``glfcr`` convention
M3RCR_ON_SEN12MSCR = {"bands": list(SENTINEL2_EQUIVALENT.values()), "preprocessing": "glfcr"}


def _m3rcr_record() -> dict[str, Any]:
    """The record of a checkpoint saved before records were written: all were trained on M3R-CR."""
    from m3rcr.data.preprocess import OPTICAL_BANDS

    return {"dataset": "m3rcr", "optical_bands": list(OPTICAL_BANDS), "sar_bands": ["VV", "VH"],
            "preprocessing": None, "reflectance_per_unit": 1.0}


def record_preprocessing(record: dict[str, Any] | None) -> str | None:
    """The value convention a data record names (SEN12MS-CR's ``default`` for a SEN12MS-CR record written before
    the default was recorded; None for M3R-CR, which has one convention)."""
    if record is None:
        return None
    found = record.get("preprocessing")
    return "default" if found is None and record.get("dataset") == "sen12mscr" else found


def dataset_defaults(record: dict[str, Any] | None, dataset: str) -> dict[str, Any]:
    """Options of dataset ``dataset`` that give the data a checkpoint of data ``record`` was trained on (the
    user's own options override them): a SEN12MS-CR checkpoint's bands and preprocessing; an M3R-CR checkpoint's
    on SEN12MS-CR (:data:`M3RCR_ON_SEN12MSCR`). Nothing for M3R-CR, whose options do not change bands or values."""
    record = record or _m3rcr_record()
    if dataset != "sen12mscr":
        return {}
    if record.get("dataset") == "sen12mscr":
        return {"bands": list(record["optical_bands"]), "preprocessing": record_preprocessing(record)}
    if record.get("dataset") == "m3rcr":
        return dict(M3RCR_ON_SEN12MSCR)
    return {}


def check_data_fits(record: dict[str, Any] | None, spec: Any, where: str | Path,
                    preprocessing: str | None = None) -> None:
    """Refuse data whose band layout or value convention is not what the checkpoint at ``where`` was trained on:
    a DataError naming both (e.g. a 13-band SEN12MS-CR model on 4-band M3R-CR tiles). ``record`` None (an older
    checkpoint) is taken as M3R-CR's. M3R-CR's bands match their Sentinel-2 equivalents
    (:data:`SENTINEL2_EQUIVALENT`) under SEN12MS-CR's ``glfcr`` preprocessing."""
    record = record or _m3rcr_record()
    trained, given = list(record.get("optical_bands", [])), list(spec.optical_bands)
    named = ", ".join(trained)
    if record.get("dataset") == "m3rcr" and spec.name == "sen12mscr":
        trained = [SENTINEL2_EQUIVALENT.get(b, b) for b in trained]
        named += f" (Sentinel-2 {', '.join(trained)})"
    if trained != given:
        advice = ("pick the same bands (SEN12MS-CR: --bands) or use a checkpoint trained on this band layout"
                  if record.get("dataset") == spec.name or spec.name == "sen12mscr"
                  else f"is the data {record.get('dataset')} (--dataset {record.get('dataset')})?")
        raise DataError(where, f"was trained on {record.get('dataset')} with optical bands {named}, "
                               f"but the data ({spec.name}) has {', '.join(given)}; {advice}")
    wanted = record_preprocessing(record)
    if record.get("dataset") == "m3rcr" and spec.name == "sen12mscr":
        wanted = M3RCR_ON_SEN12MSCR["preprocessing"]
    if wanted is not None and preprocessing is not None and wanted != preprocessing:
        raise DataError(where, f"was trained with preprocessing {wanted!r}, but the data is scaled with "
                               f"{preprocessing!r}; leave --preprocessing out to use the checkpoint's")
