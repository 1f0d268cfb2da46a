"""Synthetic data: a landscape model, M3R-CR-layout datasets from it, and whole scenes as a user brings them.

* :mod:`~m3rcr.data.synthetic.landscape`: the landscape (:class:`Landscape`) and what sensors see of it:
  land cover, optical reflectance (:func:`reflectance`), SAR backscatter (:func:`backscatter_db`) and
  clouds (:func:`tile_clouds`).
* :mod:`~m3rcr.data.synthetic.tiles`: a dataset in the official M3R-CR layout (:class:`SynthConfig`,
  :func:`generate_dataset`).
* :mod:`~m3rcr.data.synthetic.scene`: a whole scene of GeoTIFFs in several CRSs (:class:`SceneConfig`,
  :func:`generate_scene`), the input of ``m3rcr build-dataset`` and ``m3rcr predict``.
* :mod:`~m3rcr.data.synthetic.sen12mscr`: a dataset in the official SEN12MS-CR layout, 13-band L1C-like
  Sentinel-2 with cirrus in B10 and Sentinel-1 on the same grid (:class:`Sen12mscrSynthConfig`,
  :func:`generate_sen12mscr`).

Everything is deterministic for a seed.
"""

from m3rcr.data.synthetic.landscape import (
    BACKSCATTER_DB,
    BIOMES,
    REFLECTANCE,
    SEASONS,
    Landscape,
    SmoothField,
    backscatter_db,
    majority,
    per_class,
    reflectance,
    tile_clouds,
    to_uint16,
)
from m3rcr.data.synthetic.scene import SceneConfig, generate_scene
from m3rcr.data.synthetic.sen12mscr import (
    S2_SURFACE,
    Sen12mscrSynthConfig,
    generate_sen12mscr,
    generate_sen12mscr_patch,
)
from m3rcr.data.synthetic.tiles import SampleGeo, SynthConfig, generate_dataset, generate_sample, write_sample

__all__ = [
    "BACKSCATTER_DB",
    "BIOMES",
    "REFLECTANCE",
    "S2_SURFACE",
    "SEASONS",
    "Landscape",
    "SampleGeo",
    "SceneConfig",
    "Sen12mscrSynthConfig",
    "SmoothField",
    "SynthConfig",
    "backscatter_db",
    "generate_dataset",
    "generate_sample",
    "generate_scene",
    "generate_sen12mscr",
    "generate_sen12mscr_patch",
    "majority",
    "per_class",
    "reflectance",
    "tile_clouds",
    "to_uint16",
    "write_sample",
]
