"""Cloud-removal networks, created by name from a registry."""

from m3rcr.models.checkpoint import load_model, load_segmentation_model, read_checkpoint, save_checkpoint
from m3rcr.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "load_model", "load_segmentation_model", "read_checkpoint", "register_model",
           "save_checkpoint"]
