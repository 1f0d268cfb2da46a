"""Exceptions and warnings raised for bad input."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """A data file or list is missing or malformed.

    The message always names the offending file (or CSV row) first, then the problem, so it can be
    shown to a user as is.
    """

    def __init__(self, where: str | Path, problem: str) -> None:
        self.where = str(where)
        self.problem = problem
        super().__init__(f"{where}: {problem}")


class DataWarning(UserWarning):
    """Something in a data file was repaired on the fly (for example NaN pixels were filled)."""
