"""Cloud-removal models by name: ``MODELS.build("aligncr", features=32)``, or :func:`create_model`.

A name may fix constructor arguments: the ablations of Align-CR are Align-CR with ``use_sar=False`` or
``use_align=False``. Register a new network with ``MODELS.register("name", cls)``; it must be a
:class:`~m3rcr.models.base.CloudRemovalModel`.
"""

from __future__ import annotations

from typing import Any

from m3rcr.models.aligncr import AlignCR
from m3rcr.models.base import CloudRemovalModel
from m3rcr.models.dsen2cr import DSen2CR
from m3rcr.models.glfcr import GLFCR
from m3rcr.models.mcgan import McGAN
from m3rcr.models.saroptcgan import SAROptCGAN
from m3rcr.models.segmentation import SEGMENTATION_MODELS
from m3rcr.models.spagan import SpAGAN
from m3rcr.utils.registry import Registry

MODELS: Registry[CloudRemovalModel] = Registry("model")
MODELS.register("aligncr", AlignCR)
MODELS.register("aligncr_wo_sar", AlignCR, use_sar=False)
MODELS.register("aligncr_wo_align", AlignCR, use_align=False)
MODELS.register("dsen2cr", DSen2CR)
MODELS.register("glfcr", GLFCR)
MODELS.register("mcgan", McGAN)
MODELS.register("saroptcgan", SAROptCGAN)
MODELS.register("spagan", SpAGAN)

#: the models of each task a training run or a checkpoint may hold
MODELS_BY_TASK: dict[str, Registry[Any]] = {"cloud_removal": MODELS, "segmentation": SEGMENTATION_MODELS}


def create_model(name: str, **config: Any) -> CloudRemovalModel:
    """Build a registered model; ``config`` overrides its constructor defaults (see ``model.config``)."""
    return MODELS.build(name, **config)


def list_models() -> list[str]:
    """Names of every registered model."""
    return MODELS.names()
