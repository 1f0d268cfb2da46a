"""Cutting an M3R-CR-style dataset out of whole scenes (``m3rcr build-dataset``).

A *scene set* is what a user brings for one area: a cloudy and a cloud-free optical scene (UTM or
any projected CRS, any band count, no-data outside the footprint), Sentinel-1 VV/VH (any CRS and
resolution, dB or linear power), an ESA WorldCover map and a cloud mask (a raster, or Planet's UDM /
UDM2). :func:`build_dataset` cuts each set into tiles and writes them in the official layout
(:mod:`m3rcr.data.layout`) with ``train.csv``, ``test.csv`` and ``build.json``.

Grids. The optical grid is the cloudy scene's; an optical tile is ``tile`` x ``tile`` of its pixels.
The low-resolution grid (SAR, land cover) is one scene-wide grid anchored at the optical origin whose
pixel is ``tile * res / n`` with ``n = round(tile * res / lowres)``, so an ``n`` x ``n`` low-res tile
covers exactly the ground of its optical tile (3 m optical, 300 px tiles: n = 90 pixels of exactly
10 m). Tile origins must fall on low-res pixel boundaries: the stride is a multiple of
``tile / gcd(tile, n)`` optical pixels (10 for 3 m / 10 m). Everything else is warped onto these
grids window by window with :class:`~m3rcr.data.scene.WarpedLayer`, so no scene is ever read whole.

Modules: :mod:`~m3rcr.data.build.manifest` (scene sets, the manifest schema :data:`SCENE_KEYS`),
:mod:`~m3rcr.data.build.options` (:class:`BuildOptions`), :mod:`~m3rcr.data.build.splits` (AOI splits),
:mod:`~m3rcr.data.build.tiling` (the tiling maths), :mod:`~m3rcr.data.build.reading` (one scene set, tile
by tile), :mod:`~m3rcr.data.build.writing` (tiles and ``build.json``), :mod:`~m3rcr.data.build.pipeline`
(:func:`build_dataset`).
"""

from m3rcr.data.build.manifest import (
    MASK_KEYS,
    SCENE_KEYS,
    SPLITS,
    UDM2_CLASSES,
    SceneKey,
    SceneSet,
    Split,
    load_manifest,
    scene_set_from_mapping,
    scene_sets_from_flags,
)
from m3rcr.data.build.options import BuildOptions
from m3rcr.data.build.pipeline import build_dataset, iter_tiles
from m3rcr.data.build.reading import SKIP_REASONS, SceneReader, TileArrays
from m3rcr.data.build.splits import assign_splits
from m3rcr.data.build.tiling import SceneTiling, lowres_pixels, scene_tiling, stride_step
from m3rcr.data.build.writing import BuildResult, TileRecord

__all__ = [
    "MASK_KEYS",
    "SCENE_KEYS",
    "SKIP_REASONS",
    "SPLITS",
    "UDM2_CLASSES",
    "BuildOptions",
    "BuildResult",
    "SceneKey",
    "SceneReader",
    "SceneSet",
    "SceneTiling",
    "Split",
    "TileArrays",
    "TileRecord",
    "assign_splits",
    "build_dataset",
    "iter_tiles",
    "load_manifest",
    "lowres_pixels",
    "scene_set_from_mapping",
    "scene_sets_from_flags",
    "scene_tiling",
    "stride_step",
]
