"""Header checks of a SEN12MS-CR triplet: band counts, CRS, and one grid shared by S1 and both S2 files.

Only headers are read (no pixels), so a whole listing can be checked quickly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from affine import Affine
from rasterio.crs import CRS

from m3rcr.data.io import open_dataset
from m3rcr.data.sen12mscr.layout import MODALITIES, Triplet
from m3rcr.errors import DataError

#: Band count of each modality: S1 VV, VH; S2 L1C B1 ... B12 (with B8A and B10).
EXPECTED_BANDS: dict[str, int] = {"s1": 2, "s2": 13, "s2_cloudy": 13}
#: How errors name each modality.
LABELS: dict[str, str] = {"s1": "Sentinel-1", "s2": "cloud-free Sentinel-2", "s2_cloudy": "cloudy Sentinel-2"}


@dataclass(frozen=True)
class Header:
    """The grid and band count of one file."""

    path: Path
    count: int
    width: int
    height: int
    crs: CRS | None
    transform: Affine


def read_header(path: str | Path, modality: str) -> Header:
    """The header of one file of a triplet; a missing or unreadable file is a :class:`DataError`."""
    with open_dataset(path, f"SEN12MS-CR {LABELS[modality]}", "cannot be read as a GeoTIFF") as src:
        return Header(Path(path), src.count, src.width, src.height, src.crs, src.transform)


def _grid_difference(a: Header, b: Header) -> str | None:
    """How ``a``'s grid differs from ``b``'s, or None when they agree exactly."""
    if (a.width, a.height) != (b.width, b.height):
        return f"size {a.width}x{a.height} vs {b.width}x{b.height}"
    if a.crs != b.crs:
        return f"CRS {a.crs} vs {b.crs}"
    if tuple(a.transform) != tuple(b.transform):  # exact: SEN12MS-CR files share one grid to the last bit
        return f"transform {tuple(a.transform)[:6]} vs {tuple(b.transform)[:6]}"
    return None


def check_triplet(triplet: Triplet) -> dict[str, Header]:
    """Check a triplet's headers; returns them keyed by modality.

    Raises a :class:`DataError` naming the file for: a missing or unreadable file, a band count other than
    2 (S1) or 13 (S2), a missing CRS, and a size, CRS or transform that differs from the cloud-free S2's.
    """
    headers = {m: read_header(p, m) for m, p in triplet.paths().items()}
    for m in MODALITIES:
        h = headers[m]
        if h.count != EXPECTED_BANDS[m]:
            raise DataError(h.path, f"has {h.count} band(s); a SEN12MS-CR {LABELS[m]} file has "
                                    f"{EXPECTED_BANDS[m]} (patch {triplet.name})")
        if h.crs is None:
            raise DataError(h.path, f"has no CRS; SEN12MS-CR files are georeferenced in UTM "
                                    f"(patch {triplet.name})")
    ref = headers["s2"]
    for m in ("s1", "s2_cloudy"):
        diff = _grid_difference(headers[m], ref)
        if diff is not None:
            raise DataError(headers[m].path, f"grid differs from the cloud-free Sentinel-2 file {ref.path}: "
                                             f"{diff} (patch {triplet.name}; the three files must share one "
                                             "grid)")
    return headers
