"""What produced an output: versions, git commit, command line, host and time."""

from __future__ import annotations

import datetime
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch


def git_commit() -> dict[str, Any]:
    """The commit of the m3rcr source tree and whether it has uncommitted changes (None outside git)."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                    capture_output=True, text=True, timeout=10, check=True).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def environment() -> dict[str, Any]:
    """What produced a run: versions, git commit, command line, host and time."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for pkg in ("m3rcr", "torch", "torchvision", "lightning", "timm", "numpy", "rasterio"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    return {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": sys.argv, "python": platform.python_version(), "platform": platform.platform(),
        "host": socket.gethostname(), "versions": versions, "git": git_commit(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
    }
