"""The tiling maths: how a scene's optical grid and its scene-wide low-res grid are cut into dataset tiles."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from affine import Affine
from rasterio.windows import Window

from m3rcr.data.build.options import BuildOptions
from m3rcr.data.scene import Grid
from m3rcr.errors import DataError


def lowres_pixels(tile: int, res: float, lowres: float) -> int:
    """Low-res pixels per tile side: ``round(tile * res / lowres)`` (90 for 300 px at 3 m and 10 m)."""
    n = round(tile * res / lowres)
    if n < 1:
        raise ValueError(f"a {tile} px tile at {res:g} m is smaller than one {lowres:g} m low-res pixel")
    return n


def stride_step(tile: int, n: int) -> int:
    """The smallest stride (optical pixels) keeping tile origins on low-res pixel boundaries.

    tile / gcd(tile, n): the origin ``k * stride`` maps to low-res pixel ``k * stride * n / tile``.
    """
    return tile // math.gcd(tile, n)


@dataclass(frozen=True)
class SceneTiling:
    """How a scene is cut into dataset tiles: its optical grid, its scene-wide low-res grid, the tile origins."""

    optical: Grid
    lowres: Grid
    tile: int
    n: int  #: low-res pixels per tile side
    stride: int

    @property
    def factor(self) -> float:
        """Optical pixels per low-res pixel (tile / n)."""
        return self.tile / self.n

    def origins(self) -> list[tuple[int, int]]:
        """(row, col) of every tile lying fully inside the optical grid, row by row."""
        rows = range(0, self.optical.height - self.tile + 1, self.stride)
        cols = range(0, self.optical.width - self.tile + 1, self.stride)
        return [(r, c) for r in rows for c in cols]

    def optical_window(self, row: int, col: int) -> Window:
        """The optical window of the tile at (row, col)."""
        return Window(col, row, self.tile, self.tile)

    def lowres_window(self, row: int, col: int) -> Window:
        """The low-res window covering the same ground (the origin is a low-res pixel boundary)."""
        return Window(col * self.n // self.tile, row * self.n // self.tile, self.n, self.n)

    def transforms(self, row: int, col: int) -> tuple[Affine, Affine]:
        """Optical and low-res transforms of a tile; both start at the same corner."""
        t = self.optical.transform @ Affine.translation(col, row)
        return t, t @ Affine.scale(self.factor)


def scene_tiling(optical: Grid, options: BuildOptions, where: str | Path = "optical scene") -> SceneTiling:
    """The tiling of an optical grid under ``options``; a :class:`DataError` if it cannot be tiled."""
    if optical.crs.is_geographic:
        raise DataError(where, f"optical scene is in the geographic CRS {optical.crs.to_string()}; it must "
                               "be in a projected CRS in metres (e.g. UTM)")
    rx, ry = optical.res
    if abs(rx - ry) > 1e-6 * max(rx, ry):
        raise DataError(where, f"optical pixels must be square, found {rx:g} x {ry:g}")
    tile = options.tile
    if optical.height < tile or optical.width < tile:
        raise DataError(where, f"scene is {optical.height}x{optical.width} pixels, smaller than one "
                               f"{tile}x{tile} tile")
    n = lowres_pixels(tile, rx, options.lowres)
    stride = options.stride or tile
    step = stride_step(tile, n)
    if stride % step:
        pixel = tile * rx / n
        raise DataError(where, f"stride {stride} does not keep tile origins on low-res pixel boundaries: "
                               f"with {tile} px tiles of {n} low-res pixels ({rx:g} m -> {pixel:g} m) "
                               f"it must be a multiple of {step} optical pixels")
    # the scene-wide low-res grid: anchored at the optical origin, covering every whole tile
    lowres = Grid(optical.crs, optical.transform @ Affine.scale(tile / n),
                  math.ceil(optical.height * n / tile), math.ceil(optical.width * n / tile))
    return SceneTiling(optical, lowres, tile, n, stride)
