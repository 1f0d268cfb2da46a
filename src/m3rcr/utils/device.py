"""One reading of a device name for every command and the benchmark."""

from __future__ import annotations

import torch


def resolve_device(name: str, flag: str = "--device") -> torch.device:
    """``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; anything else, or CUDA without a
    GPU, is a :class:`ValueError` naming ``flag``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"{flag} {name}: no CUDA device is available")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{flag} {name}: not a device; use cpu, cuda, cuda:N or auto") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"{flag} {name}: m3rcr runs on cpu or cuda (cuda:N), not {device.type}")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"{flag} {name}: there are {torch.cuda.device_count()} CUDA device(s)")
    return device
