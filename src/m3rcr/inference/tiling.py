"""Overlapping tiles over a large grid, blended back with smooth weights in bounded memory.

Tiles are visited in raster order. The grid is cut into cells at every tile edge; a cell is covered
by a fixed set of tiles, so it is final (and is handed to the writer, then freed) as soon as the
last of them has been added. Only cells still waiting for a tile are held: about one overlap band
across the grid plus a row of tiles, whatever the grid's height.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``min(tile, length)`` covering ``[0, length)``, overlapping by >= ``overlap``.

    The fewest tiles that achieve this are spread evenly from 0 to ``length - tile``, so every tile has
    the same size and neighbours overlap by about the same amount (a last tile pulled back to the end
    would overlap its neighbour by up to a whole tile, and hold that much more in the blender).
    """
    if tile < 1 or overlap < 0:
        raise ValueError(f"tile must be >= 1 and overlap >= 0, got tile={tile}, overlap={overlap}")
    if length <= tile:
        return [0]
    if overlap >= tile:
        raise ValueError(f"overlap ({overlap}) must be smaller than the tile ({tile})")
    n = math.ceil((length - overlap) / (tile - overlap))
    span = length - tile
    # floor keeps every gap <= ceil(span / (n - 1)) <= tile - overlap
    return [i * span // (n - 1) for i in range(n)]


def blend_ramp(size: int, overlap: int, ramp_start: bool, ramp_end: bool) -> np.ndarray:
    """1-D weights: a raised-cosine rise over ``overlap`` pixels at each end that meets another tile, 1 elsewhere.

    Weights are strictly positive, so every pixel of a tile counts.
    """
    w = np.ones(size)
    if overlap <= 0:
        return w
    n = min(overlap, size)
    rise = np.sin(0.5 * math.pi * (np.arange(n) + 0.5) / n) ** 2
    if ramp_start:
        w[:n] = np.minimum(w[:n], rise)
    if ramp_end:
        w[size - n:] = np.minimum(w[size - n:], rise[::-1])
    return w


@dataclass(frozen=True)
class PredictionWindow:
    """One prediction tile of a :class:`PredictionGrid`: its index in raster order, its (row, column) in the
    grid of tiles, and its window of the scene."""

    index: int
    row: int
    col: int
    window: Window


class PredictionGrid:
    """Overlapping prediction tiles over a (height, width) scene, with blending weights and cell bookkeeping.

    (Not the tiling of a scene into dataset tiles: that is :class:`m3rcr.data.build.SceneTiling`.)
    """

    def __init__(self, height: int, width: int, tile: int, overlap: int) -> None:
        self.height, self.width, self.overlap = height, width, overlap
        self.rows = tile_starts(height, tile, overlap)
        self.cols = tile_starts(width, tile, overlap)
        self.tile_h, self.tile_w = min(tile, height), min(tile, width)
        # cell edges: every tile start and end
        self.row_edges = sorted({0, height, *self.rows, *(r + self.tile_h for r in self.rows)})
        self.col_edges = sorted({0, width, *self.cols, *(c + self.tile_w for c in self.cols)})
        self._wy = [blend_ramp(self.tile_h, overlap, i > 0, i < len(self.rows) - 1) for i in range(len(self.rows))]
        self._wx = [blend_ramp(self.tile_w, overlap, j > 0, j < len(self.cols) - 1) for j in range(len(self.cols))]

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def __iter__(self) -> Iterator[PredictionWindow]:
        for i, r in enumerate(self.rows):
            for j, c in enumerate(self.cols):
                yield PredictionWindow(i * len(self.cols) + j, i, j, Window(c, r, self.tile_w, self.tile_h))

    def weights(self, tile: PredictionWindow) -> np.ndarray:
        """(h, w) blending weights of a tile."""
        return np.outer(self._wy[tile.row], self._wx[tile.col])

    def _cells(self, edges: list[int], start: int, size: int) -> range:
        return range(bisect.bisect_left(edges, start), bisect.bisect_left(edges, start + size))

    def cells_of(self, tile: PredictionWindow) -> Iterator[tuple[int, int]]:
        """(cell row, cell column) indices of the cells a tile covers."""
        w = tile.window
        for ci in self._cells(self.row_edges, w.row_off, w.height):
            for cj in self._cells(self.col_edges, w.col_off, w.width):
                yield ci, cj

    def cell_window(self, ci: int, cj: int) -> Window:
        """The window of a cell."""
        r0, r1 = self.row_edges[ci], self.row_edges[ci + 1]
        c0, c1 = self.col_edges[cj], self.col_edges[cj + 1]
        return Window(c0, r0, c1 - c0, r1 - r0)

    def tiles_covering(self, ci: int, cj: int) -> int:
        """How many tiles cover a cell."""
        win = self.cell_window(ci, cj)
        ny = sum(r <= win.row_off and win.row_off + win.height <= r + self.tile_h for r in self.rows)
        nx = sum(c <= win.col_off and win.col_off + win.width <= c + self.tile_w for c in self.cols)
        return ny * nx


CellWriter = Callable[[Window, np.ndarray, np.ndarray], None]


class Blender:
    """Accumulates weighted tile predictions; calls ``write(window, values, valid)`` once per final cell.

    ``values`` is the weighted mean (channels, h, w) in float64; ``valid`` is the (h, w) mask passed
    with the tiles (a pixel's validity does not depend on the tile it is read in), cleared where no
    tile gave a finite value.
    """

    def __init__(self, grid: PredictionGrid, channels: int, write: CellWriter) -> None:
        self.grid, self.channels, self.write = grid, channels, write
        self._pending: dict[tuple[int, int], list] = {}
        self._remaining: dict[tuple[int, int], int] = {}
        self.peak_cells = 0
        self.cells_written = 0

    def add(self, tile: PredictionWindow, values: np.ndarray | None, valid: np.ndarray) -> None:
        """Add a tile's prediction (channels, h, w), or None for a tile with no valid pixel."""
        g = self.grid
        weights = g.weights(tile) if values is not None else None
        w = tile.window
        for cell in g.cells_of(tile):
            cw = g.cell_window(*cell)
            sl = (slice(cw.row_off - w.row_off, cw.row_off - w.row_off + cw.height),
                  slice(cw.col_off - w.col_off, cw.col_off - w.col_off + cw.width))
            acc = self._pending.get(cell)
            if acc is None:
                acc = [np.zeros((self.channels, cw.height, cw.width)), np.zeros((cw.height, cw.width)),
                       valid[sl].copy()]
                self._pending[cell] = acc
                self._remaining[cell] = g.tiles_covering(*cell)
            if values is not None:
                v = values[(slice(None), *sl)]
                finite = np.isfinite(v).all(axis=0)
                wt = np.where(finite, weights[sl], 0.0)  # a NaN from the model must not spread to its cell
                acc[0] += np.where(finite, v, 0.0) * wt
                acc[1] += wt
            self._remaining[cell] -= 1
            self.peak_cells = max(self.peak_cells, len(self._pending))
            if self._remaining[cell] == 0:
                total, wsum, ok = self._pending.pop(cell)
                del self._remaining[cell]
                ok &= wsum > 0
                self.write(cw, total / np.where(wsum > 0, wsum, 1.0), ok)
                self.cells_written += 1

    @property
    def pending_bytes(self) -> int:
        """Bytes held by cells waiting for tiles."""
        return sum(a[0].nbytes + a[1].nbytes + a[2].nbytes for a in self._pending.values())

    def finished(self) -> bool:
        """Whether every cell has been written."""
        return not self._pending and self.cells_written == (len(self.grid.row_edges) - 1) * (
            len(self.grid.col_edges) - 1)
