"""m3rcr: cloud removal for high-resolution optical imagery fused with low-resolution SAR.

Implements the M3R-CR data layer, the Align-CR network and the benchmark of Xu et al.,
"Multimodal and Multiresolution Data Fusion for High-Resolution Cloud Removal" (IEEE TGRS 2024).

``m3rcr.load_model(path, device=None)`` returns a trained model, called as ``model(cloudy, sar)``;
``m3rcr.predict_scene(model, cloudy_tif, out_tif, sar_tif, m3rcr.PredictOptions(...))`` runs it over a whole
georeferenced scene.
"""

from typing import Any

from m3rcr.errors import DataError, DataWarning
from m3rcr.version import __version__

__all__ = [
    "DataError",
    "DataWarning",
    "PredictOptions",
    "__version__",
    "create_model",
    "list_models",
    "load_model",
    "predict_scene",
]


def __getattr__(name: str) -> Any:
    # torch and the model zoo load only when asked for, so `import m3rcr` (and the CLI) stay light
    if name in ("load_model", "create_model", "list_models"):
        from m3rcr import models

        return getattr(models, name)
    if name in ("predict_scene", "PredictOptions"):
        from m3rcr import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'm3rcr' has no attribute {name!r}")
