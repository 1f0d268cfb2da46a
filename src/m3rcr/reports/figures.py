"""Figures laid out like the paper's: metrics per cloud-cover level (Fig. 5), qualitative grid (Fig. 4)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from m3rcr.data.plot import rgb_composite, stretch_limits
from m3rcr.data.preprocess import CLOUD_COVER_BINS
from m3rcr.reports.tables import OVERALL


def metrics_by_cloud_cover(results: Mapping[str, Mapping[str, Any]]) -> Figure:
    """One panel per metric (MAE x100, PSNR, SAM, SSIM) against the cloud-cover bin; one line per method."""
    fig = Figure(figsize=(13, 3.4), layout="constrained")
    axes = fig.subplots(1, len(OVERALL))
    x = np.arange(len(CLOUD_COVER_BINS))
    for ax, (key, title, scale, _) in zip(axes, OVERALL):
        for method, summary in results.items():
            y = [summary["per_bin"][b].get(key) for b in CLOUD_COVER_BINS]
            y = [np.nan if v is None else v * scale for v in y]
            ax.plot(x, y, marker="o", label=method)
        ax.set_xticks(x, [f"{b} %" for b in CLOUD_COVER_BINS], rotation=30, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("value")
    axes[-1].legend(fontsize=8, loc="best")
    fig.supxlabel("cloud cover", fontsize=9)
    return fig


def qualitative_grid(samples: Sequence[Mapping[str, Any]], predictions: Mapping[str, Sequence[Any]]) -> Figure:
    """Rows: samples; columns: cloudy, SAR VV, each method's prediction, cloud-free reference.

    All RGB panels of a row share one stretch (2-98 % of the reference), as in :mod:`m3rcr.data.plot`.
    """
    methods = list(predictions)
    cols = ["Cloudy", "SAR VV", *methods, "Reference"]
    fig = Figure(figsize=(2.4 * len(cols), 2.5 * len(samples) + 0.3), layout="constrained")
    axes = fig.subplots(len(samples), len(cols), squeeze=False)
    for r, sample in enumerate(samples):
        ref = sample["cloudfree"]
        limits = stretch_limits(np.asarray(ref.numpy() if isinstance(ref, torch.Tensor) else ref))
        panels = [rgb_composite(sample["cloudy"], limits), None]
        panels += [rgb_composite(predictions[m][r], limits) for m in methods]
        panels.append(rgb_composite(ref, limits))
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 1:
                sar = sample["sar"]
                ax.imshow(np.asarray(sar[0]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(panels[c], interpolation="nearest")
            if r == 0:
                ax.set_title(cols[c], fontsize=10)
        axes[r][0].set_ylabel(f"{sample['name']}\n{100 * float(sample['cloud_cover']):.0f} % cloud", fontsize=8)
    return fig
