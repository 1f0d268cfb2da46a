"""Inference on whole georeferenced scenes: tiling, blending and cloud-optimized output."""

from m3rcr.inference.predict import PredictStats, predict_scene
from m3rcr.inference.tiling import TileGrid, tile_starts

__all__ = ["PredictStats", "TileGrid", "predict_scene", "tile_starts"]
