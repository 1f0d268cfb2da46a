"""Writing a build: tiles in the official layout, what ``build.json`` records, and the build's summary."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from m3rcr.data.build.manifest import SPLITS, SceneSet, Split
from m3rcr.data.build.options import BuildOptions
from m3rcr.data.build.reading import SKIP_REASONS, SceneReader, TileArrays
from m3rcr.data.io import GeoTiffLayout, write_geotiff
from m3rcr.data.layout import relative_paths
from m3rcr.data.preprocess import OPTICAL_BANDS, SAR_BANDS, WORLDCOVER_NODATA
from m3rcr.utils.files import atomic_path
from m3rcr.version import __version__

#: The ``generator`` of ``build.json``: ``--overwrite`` replaces only folders that say it.
GENERATOR = "m3rcr.data.build"
_BAND_INTERLEAVED = GeoTiffLayout(interleave="band")  # land cover, as in the official files


def write_tile(reader: SceneReader, tile: TileArrays, split_dir: Path, patch: int, origin: tuple[int, int]
               ) -> list[str]:
    """Write a tile read by ``reader`` at ``origin`` (row, col): its five files in the official layout.

    Returns its CSV row.
    """
    scene = reader.scene
    rel = relative_paths(scene.season, scene.aoi, patch)
    paths = [split_dir / r for r in rel]
    t_opt, t_low = reader.tiles.transforms(*origin)
    crs = reader.grid.crs
    write_geotiff(paths[0], tile.cloudfree, crs, t_opt, reader.cf_nodata, descriptions=OPTICAL_BANDS)
    write_geotiff(paths[1], tile.cloudy, crs, t_opt, reader.nodata, descriptions=OPTICAL_BANDS)
    write_geotiff(paths[2], tile.sar, crs, t_low, math.nan, descriptions=SAR_BANDS)
    write_geotiff(paths[3], tile.landcover, crs, t_low, WORLDCOVER_NODATA, _BAND_INTERLEAVED,
                  descriptions=("WorldCover",))
    with atomic_path(paths[4]) as tmp, open(tmp, "wb") as fh:
        np.save(fh, tile.cloudmask, allow_pickle=False)
    return rel


@dataclass
class TileRecord:
    """What ``build.json`` records of a written tile."""

    name: str
    split: Split
    scene: int  #: index of the scene set
    row: int  #: optical window origin in the cloudy scene
    col: int
    size: int
    bounds: tuple[float, float, float, float]  #: (left, bottom, right, top) in the optical CRS
    valid_fraction: float
    cloud_cover: float

    def as_dict(self, scenes: Sequence[SceneSet]) -> dict[str, Any]:
        """JSON-ready form."""
        return {"name": self.name, "split": self.split, "scene": self.scene,
                "cloudy": str(scenes[self.scene].cloudy.absolute()),
                "window": {"row": self.row, "col": self.col, "height": self.size, "width": self.size},
                "bounds": [round(v, 6) for v in self.bounds], "valid_fraction": round(self.valid_fraction, 6),
                "cloud_cover": round(self.cloud_cover, 6)}


@dataclass
class BuildResult:
    """What :func:`~m3rcr.data.build.build_dataset` wrote."""

    root: Path
    tiles: list[TileRecord] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  #: skip reason -> tiles
    considered: int = 0  #: candidate tiles (written + skipped)

    def counts(self) -> dict[str, int]:
        """Tiles written per split."""
        c = Counter(t.split for t in self.tiles)
        return {s: c.get(s, 0) for s in SPLITS}

    def summary(self) -> str:
        """A few lines for the terminal."""
        counts = self.counts()
        lines = [f"wrote {len(self.tiles)} of {self.considered} tiles to {self.root}: "
                 + ", ".join(f"{s} {n}" for s, n in counts.items())]
        if self.skipped:
            reasons = sorted(self.skipped.items())
            lines.append("skipped: " + ", ".join(f"{n} ({SKIP_REASONS[r]})" for r, n in reasons))
        lines += [f"note: the {s} split is empty (no {s}.csv written)" for s, n in counts.items() if n == 0]
        return "\n".join(lines)


def scene_metadata(reader: SceneReader, index: int, split: Split, considered: int, skipped: Counter
                   ) -> dict[str, Any]:
    """What ``build.json`` records of one scene set once its tiles are written."""
    grid = reader.tiles
    written = considered - sum(skipped.values())
    return {
        "index": index, **reader.scene.as_dict(), "split": split, "udm_format": reader.udm_format,
        "bands": list(reader.bands), "crs": grid.optical.crs.to_string(),
        "optical_res": grid.optical.res[0], "shape": list(grid.optical.shape),
        "lowres_shape": list(grid.lowres.shape), "lowres_pixels": grid.n,
        "lowres_pixel_size": grid.optical.res[0] * grid.factor, "tiles_considered": considered,
        "tiles_written": written, "skipped": dict(skipped)}


def write_metadata(path: Path, result: BuildResult, options: BuildOptions, splits: Mapping[str, Split],
                   scenes: Sequence[SceneSet], per_scene: Sequence[dict[str, Any]]) -> None:
    """Write ``build.json``: settings, AOI splits, skipped tiles by reason, every scene set and tile."""
    meta = {
        "generator": GENERATOR, "m3rcr_version": __version__,
        "settings": options.settings(),
        "splits": result.counts(), "aoi_splits": dict(sorted(splits.items())),
        "skipped": {r: result.skipped.get(r, 0) for r in SKIP_REASONS},
        "scenes": list(per_scene),
        "tiles": [t.as_dict(scenes) for t in result.tiles],
    }
    path.write_text(json.dumps(meta, indent=1))


def is_previous_build(folder: Path) -> bool:
    """Whether ``folder`` holds a dataset this package wrote (so --overwrite may replace it)."""
    try:
        meta = json.loads((folder / "build.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("generator") == GENERATOR
