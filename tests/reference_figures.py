"""The reference parameter counts and MACs (tests/data/reference_figures.tsv), each with its source."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest
from paths import TEST_DATA

TABLE = TEST_DATA / "reference_figures.tsv"


@dataclass(frozen=True)
class Figure:
    """One row of the table."""

    model: str
    setting: str
    quantity: str
    unit: str
    value: float
    tolerance: str
    source: str
    paper: str

    @property
    def expected(self) -> Any:
        """What a measurement must equal: the exact integer, or ``pytest.approx`` within the tolerance."""
        if self.tolerance == "exact":
            return int(self.value)
        kind, amount = self.tolerance.split()
        return pytest.approx(self.value, **{kind: float(amount)})


@cache
def figures() -> dict[tuple[str, str], Figure]:
    """Every row, by (model, quantity)."""
    with open(TABLE, newline="") as fh:
        lines = [line for line in fh if not line.startswith("#")]
    reader = csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    rows = [Figure(**{**row, "value": float(row["value"])}) for row in reader]
    table = {(f.model, f.quantity): f for f in rows}
    assert len(table) == len(rows), "a (model, quantity) pair appears twice in the reference table"
    return table


def reference(model: str, quantity: str) -> Any:
    """The expected value of ``quantity`` for ``model`` (see :attr:`Figure.expected`)."""
    return figures()[model, quantity].expected
