"""Figures laid out like the paper's: metrics per cloud-cover level (Fig. 5), qualitative grid (Fig. 4)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from m3rcr.data.plot import rgb_composite, stretch_limits
from m3rcr.data.preprocess import CLOUD_COVER_BINS
from m3rcr.reports.tables import OVERALL


def outside_legend(fig: Figure, ax: Any) -> None:
    """One legend for the figure, outside the panels (on the right) so that no line is hidden."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8, frameon=False)


def plot_per_bin(ax: Any, x: np.ndarray, summary: Mapping[str, Any], key: str, scale: float, label: str) -> None:
    """One method's line over the cloud-cover bins, with ± one standard deviation over seeds as error bars."""
    from m3rcr.evaluation.aggregate import spread, value

    y = [value(summary, "per_bin", b, key) for b in CLOUD_COVER_BINS]
    y = np.array([np.nan if v is None else v * scale for v in y])
    err = [spread(summary, "per_bin", b, key) for b in CLOUD_COVER_BINS]
    if any(e is not None for e in err):
        ax.errorbar(x, y, yerr=[0.0 if e is None else e * scale for e in err], marker="o", capsize=3, label=label)
    else:
        ax.plot(x, y, marker="o", label=label)


def metrics_by_cloud_cover(results: Mapping[str, Mapping[str, Any]]) -> Figure:
    """One panel per metric (MAE x100, PSNR, SAM, SSIM) against the cloud-cover bin; one line per method
    (error bars: ± one standard deviation over seeds, for methods trained with several)."""
    fig = Figure(figsize=(13, 3.4), layout="constrained")
    axes = fig.subplots(1, len(OVERALL))
    x = np.arange(len(CLOUD_COVER_BINS))
    for ax, (key, title, scale, _) in zip(axes, OVERALL):
        for method, summary in results.items():
            plot_per_bin(ax, x, summary, key, scale, method)
        ax.set_xticks(x, [f"{b} %" for b in CLOUD_COVER_BINS], rotation=30, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("value")
    outside_legend(fig, axes[-1])
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


def ndvi_by_cloud_cover(results: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Fig. 9 layout: NDVI RMSE and NDVI mIoU against the cloud-cover bin; one line per method."""
    fig = Figure(figsize=(8, 3.4), layout="constrained")
    axes = fig.subplots(1, 2)
    x = np.arange(len(CLOUD_COVER_BINS))
    for ax, (key, title) in zip(axes, (("ndvi_rmse", "NDVI RMSE"), ("ndvi_miou", "NDVI mIoU (%)"))):
        for method, summary in results.items():
            plot_per_bin(ax, x, summary, key, 1.0, method)
        ax.set_xticks(x, [f"{b} %" for b in CLOUD_COVER_BINS], rotation=30, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    outside_legend(fig, axes[-1])
    fig.supxlabel("cloud cover", fontsize=9)
    return fig


def ndvi_density(histograms: Mapping[str, np.ndarray]) -> Figure:
    """Fig. 8 layout: density of predicted vs reference NDVI (log colour scale), one panel per method.

    Each histogram is (bins, bins) over [-1, 1], rows = reference, columns = prediction.
    """
    from matplotlib.colors import LogNorm

    n = len(histograms)
    fig = Figure(figsize=(3.2 * n + 0.8, 3.3), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    vmax = max(float(h.max()) for h in histograms.values()) or 1.0
    im = None
    for ax, (method, hist) in zip(axes, histograms.items()):
        h = np.asarray(hist, dtype=float)
        im = ax.imshow(np.ma.masked_equal(h.T, 0), origin="lower", extent=(-1, 1, -1, 1), cmap="viridis",
                       norm=LogNorm(vmin=1, vmax=vmax), interpolation="nearest")
        ax.plot([-1, 1], [-1, 1], color="w", lw=0.8, ls="--")
        ax.set_title(method, fontsize=10)
        ax.set_xlabel("reference NDVI", fontsize=8)
        ax.set_aspect("equal")
    axes[0].set_ylabel("predicted NDVI", fontsize=8)
    if im is not None:
        fig.colorbar(im, ax=list(axes), shrink=0.8, label="pixels")
    return fig


def scene_before_after(before: np.ndarray, after: np.ndarray, titles: Sequence[str] = ("cloudy input",
                       "cloud removed"), suptitle: str | None = None) -> Figure:
    """Two RGB quicklooks, (3, h, w) red, green, blue with NaN as no-data, side by side on one stretch.

    The stretch (2nd-98th percentile per band) comes from the ``after`` image, so clouds in the input
    do not wash out the colours; no-data is shown light grey.
    """
    valid = np.isfinite(after).all(axis=0)
    ref = after[:, valid] if valid.any() else np.zeros((3, 1))
    lo, hi = np.percentile(ref, 2, axis=1), np.percentile(ref, 98, axis=1)
    hi = np.maximum(hi, lo + 1e-9)
    h, w = after.shape[-2:]
    fig = Figure(figsize=(2 * 5.0 * min(w / h, 1.6) + 0.4, 5.4), layout="constrained")
    for ax, image, title in zip(fig.subplots(1, 2), (before, after), titles):
        rgb = np.clip((image - lo[:, None, None]) / (hi - lo)[:, None, None], 0, 1).transpose(1, 2, 0)
        rgb[~np.isfinite(image).all(axis=0)] = 0.85
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig


def history_from_csv(path: str | Path) -> list[dict[str, float]]:
    """Per-epoch training / validation values from a run's CSV log (``RUN/logs/csv/metrics.csv``), in the
    form :func:`training_curves` draws: one dict per epoch with the keys logged in it."""
    import csv

    keys = ("train/loss_epoch", "val/loss", "val/psnr", "val/miou")
    epochs: dict[int, dict[str, float]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            if not row.get("epoch"):
                continue
            e = int(float(row["epoch"]))
            entry = epochs.setdefault(e, {"epoch": float(e)})
            for k in keys:
                if row.get(k):
                    entry[k] = float(row[k])
            if row.get("step"):
                entry["step"] = max(entry.get("step", 0.0), float(row["step"]))
    return [epochs[e] for e in sorted(epochs)]


def training_curves(history: Sequence[Mapping[str, float]]) -> Figure:
    """Per-epoch training and validation loss (left) and validation PSNR or mIoU (right) of one run."""
    fig = Figure(figsize=(10, 3.4), layout="constrained")
    ax_loss, ax_score = fig.subplots(1, 2)
    epochs = np.array([h["epoch"] + 1 for h in history])

    def series(key: str) -> np.ndarray:
        return np.array([h.get(key, np.nan) for h in history], dtype=float)

    for key, label in (("train/loss_epoch", "training loss"), ("val/loss", "validation loss")):
        y = series(key)
        ok = np.isfinite(y)  # validation may run every few epochs only
        if ok.any():
            ax_loss.plot(epochs[ok], y[ok], marker="o", ms=3, label=label)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.xaxis.get_major_locator().set_params(integer=True)
    ax_loss.set_title("loss per epoch", fontsize=10)
    ax_loss.grid(alpha=0.3)
    if ax_loss.lines:
        ax_loss.legend(fontsize=8)
    score, title = ("val/psnr", "validation PSNR (dB)")
    if not np.isfinite(series(score)).any() and np.isfinite(series("val/miou")).any():
        score, title = "val/miou", "validation mIoU (%)"
    y = series(score)
    if np.isfinite(y).any():
        ok = np.isfinite(y)
        ax_score.plot(epochs[ok], y[ok], marker="o", ms=3, color="tab:green")
        best = int(np.nanargmax(y))
        ax_score.plot(epochs[best], y[best], marker="*", ms=10, color="tab:red", ls="none",
                      label=f"best {y[best]:.2f} (epoch {epochs[best]:.0f})")
        ax_score.legend(fontsize=8, loc="lower right")
    else:
        ax_score.text(0.5, 0.5, "no validation", ha="center", va="center", transform=ax_score.transAxes)
    ax_score.set_xlabel("epoch")
    ax_score.xaxis.get_major_locator().set_params(integer=True)
    ax_score.set_title(title, fontsize=10)
    ax_score.grid(alpha=0.3)
    return fig
