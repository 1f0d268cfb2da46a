"""m3rcr: cloud removal for high-resolution optical imagery fused with low-resolution SAR.

Implements the M3R-CR data layer, the Align-CR network and the benchmark of Xu et al.,
"Multimodal and Multiresolution Data Fusion for High-Resolution Cloud Removal" (IEEE TGRS 2024).
"""

from m3rcr.errors import DataError, DataWarning

__version__ = "0.1.0"

__all__ = ["DataError", "DataWarning", "__version__"]
