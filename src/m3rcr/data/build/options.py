"""The settings of a build: tiling, filters and split.

Each field of :class:`BuildOptions` carries what a command line needs in its metadata (``help``,
``group``, ``parse``: how the value is read, ``metavar``, ``choices``), so the ``build-dataset`` flags can be
generated from the dataclass instead of being kept in step by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


def _opt(default: Any, help: str, group: str, parse: str, **extra: Any) -> Any:
    """A field with its command-line description."""
    return field(default=default, metadata={"help": help, "group": group, "parse": parse, **extra})


@dataclass(frozen=True)
class BuildOptions:
    """Tiling, filters and split settings of :func:`~m3rcr.data.build.build_dataset`.

    Field metadata: ``group`` ("tiles" or "filters and split"), ``help``, ``parse`` ("positive": an
    integer >= 1, "float": a finite number, "int": any integer, "choice": one of ``choices``) and an
    optional ``metavar``.
    """

    tile: int = _opt(300, "optical tile size in pixels (default: 300)", "tiles", "positive")
    #: optical pixels between tile origins; None: ``tile`` (no overlap)
    stride: int | None = _opt(None, "optical pixels between tile origins (default: --tile); must keep origins on "
                                    "low-res pixel boundaries (a multiple of 10 at 3 m)", "tiles", "positive")
    #: target low-res pixel size in metres (the actual one is tile * res / n)
    lowres: float = _opt(10.0, "SAR / land-cover pixel size in metres; the tile holds round(tile * res / M) such "
                               "pixels covering its ground exactly (default: 10)", "tiles", "float", metavar="M")
    sar_resampling: Literal["nearest", "bilinear"] = _opt(
        "bilinear", "SAR onto the low-res grid (default: bilinear)", "tiles", "choice", choices=("nearest", "bilinear"))
    #: keep tiles whose valid fraction is at least this
    min_valid: float = _opt(1.0, "keep tiles with at least this fraction of valid pixels (default: 1.0)",
                            "filters and split", "float", metavar="F")
    #: keep tiles whose cloud cover is in [min_cloud, max_cloud]
    min_cloud: float = _opt(0.0, "minimum cloud cover (default: 0)", "filters and split", "float", metavar="F")
    max_cloud: float = _opt(1.0, "maximum cloud cover (default: 1)", "filters and split", "float", metavar="F")
    #: fraction of the AOIs without an explicit split that go to test
    test_fraction: float = _opt(0.2, "fraction of the AOIs without a split that go to test (default: 0.2)",
                                "filters and split", "float", metavar="F")
    seed: int = _opt(0, "seed of the AOI split (default: 0)", "filters and split", "int")

    def __post_init__(self) -> None:
        if self.tile < 1:
            raise ValueError(f"tile must be positive, got {self.tile}")
        if self.stride is not None and self.stride < 1:
            raise ValueError(f"stride must be positive, got {self.stride}")
        if not self.lowres > 0:
            raise ValueError(f"lowres must be positive, got {self.lowres}")
        if self.sar_resampling not in ("nearest", "bilinear"):
            raise ValueError(f"SAR resampling must be nearest or bilinear, got {self.sar_resampling!r}")
        for name in ("min_valid", "min_cloud", "max_cloud"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.min_cloud > self.max_cloud:
            raise ValueError(f"min_cloud {self.min_cloud} is above max_cloud {self.max_cloud}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test fraction must be in [0, 1), got {self.test_fraction}")

    def settings(self) -> dict[str, Any]:
        """JSON-ready settings (for ``build.json``), with the stride resolved."""
        return {"tile": self.tile, "stride": self.stride or self.tile, "lowres": self.lowres,
                "sar_resampling": self.sar_resampling, "min_valid": self.min_valid, "min_cloud": self.min_cloud,
                "max_cloud": self.max_cloud, "test_fraction": self.test_fraction, "seed": self.seed}
