"""Figures of M3R-CR samples.

Display conventions (used by every figure of the project):

* RGB composites show bands (red, green, blue). The stretch is linear, the same for every RGB panel
  of a figure so that they compare: by default each band maps its 2nd-98th percentile range over the
  cloud-free reference to [0, 1] (``stretch="percentile"``); ``stretch="fixed"`` maps reflectance
  [0, 0.3] to [0, 1] in every band instead. Values outside are clipped.
* SAR shows VV on its [0, 1] scale (-25 dB .. 0 dB) in grey.
* Land cover uses the WorldCover palette (level 2) or the level-1 colours of
  :data:`m3rcr.data.preprocess.LEVEL1_COLORS`.
* The cloud mask is white where cloudy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from m3rcr.data.preprocess import LEVEL2_NODATA, class_colors, class_names

Stretch = Literal["percentile", "fixed"]
RGB_BANDS = (2, 1, 0)  # red, green, blue in the 4-band (B, G, R, NIR) order


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float32).numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


def stretch_limits(reference: np.ndarray, stretch: Stretch = "percentile") -> tuple[np.ndarray, np.ndarray]:
    """Per-band (low, high) display limits for the RGB bands of a (4, H, W) reference image."""
    rgb = reference[list(RGB_BANDS)]
    if stretch == "fixed":
        return np.zeros(3), np.full(3, 0.3)
    if stretch != "percentile":
        raise ValueError(f"stretch must be 'percentile' or 'fixed', got {stretch!r}")
    lo = np.percentile(rgb.reshape(3, -1), 2, axis=1)
    hi = np.percentile(rgb.reshape(3, -1), 98, axis=1)
    return lo, np.maximum(hi, lo + 1e-6)


def rgb_composite(image: Any, limits: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """(H, W, 3) float image in [0, 1] from a (4, H, W) reflectance image."""
    rgb = _numpy(image)[list(RGB_BANDS)]
    lo, hi = limits
    return np.clip((rgb - lo[:, None, None]) / (hi - lo)[:, None, None], 0, 1).transpose(1, 2, 0)


def _landcover_cmap(level: int) -> tuple[ListedColormap, tuple[str, ...]]:
    return ListedColormap(class_colors(level)), class_names(level)


def plot_sample(
    sample: Mapping[str, Any],
    prediction: Any | None = None,
    *,
    landcover_level: int = 1,
    stretch: Stretch = "percentile",
    title: str | None = None,
    panel_size: float = 3.0,
) -> Figure:
    """A row of panels: cloudy, cloud-free, [prediction], SAR VV, land cover, cloud mask.

    ``sample`` is a dataset item (unbatched); ``prediction`` a (4, H, W) image on the [0, 1] scale.
    Returns a matplotlib figure; save it with ``fig.savefig(path)``.
    """
    cloudfree = _numpy(sample["cloudfree"])
    limits = stretch_limits(cloudfree, stretch)
    panels: list[tuple[str, Any]] = [("Cloudy", "cloudy"), ("Cloud-free", "cloudfree")]
    if prediction is not None:
        panels.append(("Prediction", "prediction"))
    panels += [("SAR VV", "sar"), ("Land cover", "landcover"), ("Cloud mask", "cloudmask")]
    # a bare Figure (no pyplot): nothing global is touched and nothing needs closing
    fig = Figure(figsize=(panel_size * len(panels), panel_size + 1.0), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)
    cmap, names = _landcover_cmap(landcover_level)
    for ax, (label, key) in zip(axes[0], panels):
        ax.set_xticks([])
        ax.set_yticks([])
        if key in ("cloudy", "cloudfree"):
            ax.imshow(rgb_composite(sample[key], limits), interpolation="nearest")
        elif key == "prediction":
            pred = _numpy(prediction)
            if pred.ndim == 4 and pred.shape[0] == 1:
                pred = pred[0]
            ax.imshow(rgb_composite(pred, limits), interpolation="nearest")
        elif key == "sar":
            ax.imshow(_numpy(sample["sar"])[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        elif key == "landcover":
            lc = _numpy(sample["landcover"]).astype(np.int64)
            shown = np.ma.masked_equal(lc, LEVEL2_NODATA)
            ax.imshow(shown, cmap=cmap, vmin=-0.5, vmax=len(names) - 0.5, interpolation="nearest")
            present = [int(v) for v in np.unique(lc) if v != LEVEL2_NODATA]
            handles = [Patch(facecolor=cmap(i), edgecolor="k", linewidth=0.3, label=names[i]) for i in present]
            # below the whole row, where the constrained layout makes room for it
            fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 8), fontsize=8,
                       frameon=False, handlelength=1.0, title="Land cover", title_fontsize=8)
        elif key == "cloudmask":
            mask = _numpy(sample["cloudmask"])
            ax.imshow(mask, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            label = f"Cloud mask ({100 * float(mask.mean()):.0f} %)"
        ax.set_title(label, fontsize=10)
    if title is None:
        title = str(sample.get("name", ""))
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
