"""Crops and dihedral augmentation that keep every modality, and its georeference, consistent."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from affine import Affine


@dataclass(frozen=True)
class Window:
    """A rectangular pixel window: top row, left column, height, width."""

    row: int
    col: int
    height: int
    width: int

    def slices(self) -> tuple[slice, slice]:
        """Index the last two axes of an array with ``array[..., *window.slices()]``."""
        return slice(self.row, self.row + self.height), slice(self.col, self.col + self.width)

    def transform(self, parent: Affine) -> Affine:
        """Georeference of the window's grid given its parent grid's."""
        return parent @ Affine.translation(self.col, self.row)

    def scaled(self, num: int, den: int) -> Window:
        """The same ground on a grid whose pixels are ``den/num`` times as large (exact multiples only)."""
        vals = [v * num for v in (self.row, self.col, self.height, self.width)]
        if any(v % den for v in vals):
            raise ValueError(f"{self} does not map onto whole pixels of a grid {num}/{den} as fine")
        return Window(*(v // den for v in vals))


def grid_step(fine: int, coarse: int) -> tuple[int, int]:
    """Smallest (fine, coarse) pixel counts that cover the same ground: (10, 3) for 300 px vs 90 px."""
    g = math.gcd(fine, coarse)
    return fine // g, coarse // g


def crop_window(
    shape: tuple[int, int],
    size: tuple[int, int],
    *,
    mode: str,
    step: int = 1,
    rng: np.random.Generator | None = None,
) -> Window:
    """A crop of ``size`` (height, width) inside a grid of ``shape``, its origin on multiples of ``step``.

    ``mode="center"`` centres the crop (origin rounded down to the step, as the authors' loader does);
    ``mode="random"`` draws the origin uniformly from the allowed positions with ``rng``.
    """
    origin = []
    for n, s in zip(shape, size):
        if s > n:
            raise ValueError(f"crop of {size[0]}x{size[1]} does not fit in a {shape[0]}x{shape[1]} image")
        positions = (n - s) // step  # last allowed origin, in steps
        if mode == "center":
            origin.append((positions // 2) * step)
        elif mode == "random":
            if rng is None:
                raise ValueError("random crops need a random generator")
            origin.append(int(rng.integers(0, positions + 1)) * step)
        else:
            raise ValueError(f"crop mode must be 'random' or 'center', got {mode!r}")
    return Window(origin[0], origin[1], size[0], size[1])


@dataclass(frozen=True)
class Dihedral:
    """One of the 8 symmetries of the square: optional horizontal flip, then ``k`` quarter turns.

    Quarter turns are counter-clockwise, as ``numpy.rot90`` and ``torch.rot90``.
    """

    k: int = 0
    flip: bool = False

    @staticmethod
    def random(rng: np.random.Generator, square: bool = True) -> Dihedral:
        """Draw one of the 8 symmetries (or of the 4 that keep a non-square shape)."""
        k = int(rng.integers(0, 4)) if square else 2 * int(rng.integers(0, 2))
        return Dihedral(k=k, flip=bool(rng.integers(0, 2)))

    @property
    def is_identity(self) -> bool:
        return self.k % 4 == 0 and not self.flip

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Apply to the last two axes of an array (a view where possible)."""
        if self.flip:
            array = array[..., ::-1]
        return np.rot90(array, self.k % 4, axes=(-2, -1))

    def transform(self, parent: Affine, shape: tuple[int, int]) -> Affine:
        """Georeference of the transformed grid, given the original grid's ``parent`` and ``shape`` (h, w).

        Each step maps output pixel coordinates (col, row) to input pixel coordinates, so the ground
        position of every pixel is preserved.
        """
        h, w = shape
        out = parent
        if self.flip:
            out = out @ Affine(-1, 0, w, 0, 1, 0)
        for _ in range(self.k % 4):
            # np.rot90: out[r', c'] = in[c', w - 1 - r']; shape (h, w) -> (w, h)
            out = out @ Affine(0, -1, w, 1, 0, 0)
            h, w = w, h
        return out


def crop_and_augment(arrays: dict[str, np.ndarray], transform: Affine, *, size: tuple[int, int] | None,
                     mode: str, augment: bool, rng: np.random.Generator | None) -> tuple[dict[str, np.ndarray], Affine]:
    """Crop (``size`` None: keep all) and optionally augment arrays that share one grid; return them and the
    transform of their new grid. Every array gets the same window and symmetry (a ValueError if the crop does
    not fit)."""
    shape = next(iter(arrays.values())).shape[-2:]
    if size is not None:
        win = crop_window(shape, size, mode=mode, rng=rng)
        arrays = {k: a[..., win.slices()[0], win.slices()[1]] for k, a in arrays.items()}
        transform = win.transform(transform)
        shape = size
    if augment:
        if rng is None:
            raise ValueError("augmentation needs a random generator")
        aug = Dihedral.random(rng, square=shape[0] == shape[1])
        transform = aug.transform(transform, shape)
        arrays = {k: aug.apply(a) for k, a in arrays.items()}
    return arrays, transform
