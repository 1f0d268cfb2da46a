"""Inference on whole georeferenced scenes: tiling, blending and cloud-optimized output."""

from m3rcr.inference.predict import PredictOptions, PredictStats, predict_scene
from m3rcr.inference.tiling import PredictionGrid, PredictionWindow, tile_starts

__all__ = ["PredictOptions", "PredictStats", "PredictionGrid", "PredictionWindow", "predict_scene", "tile_starts"]
