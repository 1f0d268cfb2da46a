"""Cloud-removal networks, created by name from a registry; the model contract they follow."""

from m3rcr.models.base import CloudRemovalModel, ConfiguredModule, ModelSpec
from m3rcr.models.checkpoint import load_model, load_segmentation_model, read_checkpoint, save_checkpoint
from m3rcr.models.registry import MODELS, create_model, list_models

__all__ = ["MODELS", "CloudRemovalModel", "ConfiguredModule", "ModelSpec", "create_model", "list_models", "load_model",
           "load_segmentation_model", "read_checkpoint", "save_checkpoint"]
