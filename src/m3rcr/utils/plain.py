"""Settings as plain values: what YAML files and checkpoints hold (read back with ``weights_only=True``)."""

from __future__ import annotations

import dataclasses
from pathlib import PurePath
from typing import Any

_SCALARS = (str, int, float, bool, type(None))


def plain(obj: Any) -> Any:
    """``obj`` (dataclasses, dicts, lists, tuples, paths and scalars, nested) as dicts, lists, strings and numbers.

    Anything else is a TypeError naming it: saved as it is, it would make a checkpoint that ``torch.load`` with
    ``weights_only=True`` refuses to read (a resumed run would fail, not this one).
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, _SCALARS):
        return obj
    raise TypeError(f"{type(obj).__name__} value {obj!r} cannot be saved as a setting (use numbers, strings, "
                    "lists and mappings)")
