"""Evaluation: image metrics, semantic and NDVI agreement, model complexity."""
