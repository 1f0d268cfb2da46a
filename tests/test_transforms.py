"""Crop windows and dihedral augmentation with their georeference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from affine import Affine

from m3rcr.data.transforms import Dihedral, Window, crop_window, grid_step


def test_grid_step() -> None:
    assert grid_step(300, 90) == (10, 3)
    assert grid_step(160, 48) == (10, 3)
    assert grid_step(256, 64) == (4, 1)


def test_center_crop_matches_the_authors_loader() -> None:
    assert crop_window((300, 300), (160, 160), mode="center") == Window(70, 70, 160, 160)
    assert crop_window((300, 300), (160, 160), mode="center", step=10) == Window(70, 70, 160, 160)
    assert crop_window((300, 300), (150, 150), mode="center", step=10) == Window(70, 70, 150, 150)
    assert crop_window((300, 300), (64, 100), mode="center") == Window(118, 100, 64, 100)


def test_random_crop_positions_cover_the_allowed_set() -> None:
    rng = np.random.default_rng(0)
    seen = {crop_window((300, 300), (160, 160), mode="random", step=10, rng=rng).row for _ in range(500)}
    assert seen == set(range(0, 141, 10))  # 0, 10, ..., 140: every aligned start, and only those
    seen = {crop_window((300, 300), (299, 299), mode="random", rng=rng).col for _ in range(100)}
    assert seen == {0, 1}
    with pytest.raises(ValueError, match="does not fit"):
        crop_window((300, 300), (301, 10), mode="center")


def test_window_scaled_to_the_coarse_grid() -> None:
    assert Window(70, 30, 160, 160).scaled(3, 10) == Window(21, 9, 48, 48)
    with pytest.raises(ValueError):
        Window(5, 0, 160, 160).scaled(3, 10)


@pytest.mark.parametrize("k,flip", list(itertools.product(range(4), (False, True))))
def test_dihedral_transform_keeps_every_pixel_on_its_ground(k: int, flip: bool) -> None:
    h, w = 5, 7
    parent = Affine(3, 0, 1000, 0, -3, 2000)
    array = np.arange(h * w).reshape(h, w)
    d = Dihedral(k, flip)
    out = d.apply(array)
    tf = d.transform(parent, (h, w))
    for r, c in itertools.product(range(out.shape[0]), range(out.shape[1])):
        x, y = tf @ (c + 0.5, r + 0.5)
        col, row = ~parent @ (x, y)
        assert out[r, c] == array[int(np.floor(row)), int(np.floor(col))]


def test_random_dihedral_keeps_non_square_shapes() -> None:
    rng = np.random.default_rng(0)
    ks = {Dihedral.random(rng, square=False).k for _ in range(50)}
    assert ks == {0, 2}
    assert len({Dihedral.random(rng) for _ in range(200)}) == 8
