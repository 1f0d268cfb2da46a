"""Exceptions and warnings raised for bad input."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """A data file or list is missing or malformed.

    The message always names the offending file (or CSV row) first, then the problem, so it can be
    shown to a user as is.
    """

    def __init__(self, where: str | Path, problem: str | None = None) -> None:
        if problem is None:
            # rebuilt from one message, as torch's DataLoader does with a worker's error ("Caught DataError in
            # DataLoader worker process 0. Original Traceback ...: m3rcr.errors.DataError: FILE: problem")
            last = next((line for line in reversed(str(where).splitlines()) if line.strip()), str(where))
            last = last.split("DataError: ", 1)[-1].strip()
            where, sep, problem = last.partition(": ")
            if not sep:
                where, problem = "", last
        self.where = str(where)
        self.problem = problem
        super().__init__(f"{where}: {problem}" if where else problem)

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # rebuilt from both arguments: DataLoader workers pickle the errors of __getitem__
        return type(self), (self.where, self.problem)


class DataWarning(UserWarning):
    """Something in a data file was repaired on the fly (for example NaN pixels were filled)."""
