"""Figures laid out like the paper's: metrics per cloud-cover level (Fig. 5), qualitative grid (Fig. 4),
NDVI (Figs. 8, 9) and a scene's before / after quicklook (training curves: :mod:`m3rcr.training.curves`).

Every figure is meant to print: at most :data:`MAX_WIDTH_PX` pixels wide at :data:`DPI` (image grids
wrap their panels into rows), every panel titled, every plot axis labelled with its unit, and the
number of images of each cloud-cover bin under its tick. RGB panels follow the display conventions
of :mod:`m3rcr.data.plot` (one stretch per sample, set by its observed images at their clear pixels).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from m3rcr.data.plot import Stretch, apply_stretch, rgb_composite, rgb_stretch_limits, stretch_limits
from m3rcr.data.preprocess import CLOUD_COVER_BINS

#: resolution every figure of the project is saved at, and the widest a saved figure may be
DPI = 100
MAX_WIDTH_PX = 2000
#: axis label of each metric of the image tables (key: label with unit)
METRIC_AXES = {"mae": ("MAE", "MAE (x100, reflectance)", 100.0), "psnr": ("PSNR", "PSNR (dB)", 1.0),
               "sam": ("SAM", "SAM (degrees)", 1.0), "ssim": ("SSIM", "SSIM (1 = identical)", 1.0)}
CLOUD_COVER_LABEL = "cloud cover (%)"


def save_figure(fig: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Write ``fig`` as a PNG through a temporary name (a reader never sees half a file)."""
    from m3rcr.utils.files import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    return Path(path)


def grid_columns(panels: int, panel_inches: float, margin_inches: float = 0.6, dpi: int = DPI) -> int:
    """Columns for ``panels`` panels of ``panel_inches`` so the figure fits :data:`MAX_WIDTH_PX`; the rows
    are then balanced (11 panels at most 8 a row give 2 rows of 6, not 8 + 3)."""
    most = max(1, int((MAX_WIDTH_PX / dpi - margin_inches) // panel_inches))
    rows = math.ceil(panels / most)
    return max(1, math.ceil(panels / rows))


def image_axes(fig: Any, panels: int, panel_inches: float, margin_inches: float = 0.6) -> list[Any]:
    """``panels`` image axes in a wrapped grid on ``fig`` (a figure or subfigure), ticks off; unused cells
    of the last row are hidden."""
    cols = grid_columns(panels, panel_inches, margin_inches)
    rows = math.ceil(panels / cols)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[panels:]:
        ax.set_axis_off()
    return list(axes[:panels])


def bin_counts(results: Mapping[str, Mapping[str, Any]], key: str = "images") -> list[str]:
    """Per cloud-cover bin, the number of images the results were computed on ("3", or "2-3" where the
    methods differ; "?" where no result says)."""
    out = []
    for b in CLOUD_COVER_BINS:
        counts = {int(r["per_bin"][b][key]) for r in results.values()
                  if isinstance(r.get("per_bin", {}).get(b, {}).get(key), int | float)}
        out.append("?" if not counts else str(min(counts)) if len(counts) == 1 else f"{min(counts)}-{max(counts)}")
    return out


def set_bin_axis(ax: Any, counts: Sequence[str]) -> None:
    """Cloud-cover bins on the x axis, each tick with its number of images."""
    x = np.arange(len(CLOUD_COVER_BINS))
    ax.set_xticks(x, [f"{b}\nn={n}" for b, n in zip(CLOUD_COVER_BINS, counts)], fontsize=8)
    ax.set_xlim(-0.5, len(CLOUD_COVER_BINS) - 0.5)
    ax.set_xlabel(CLOUD_COVER_LABEL, fontsize=9)
    ax.grid(alpha=0.3)


def _style(i: int) -> dict[str, Any]:
    # ten colours, then the same colours with other markers: eleven methods stay distinguishable
    return {"color": f"C{i % 10}", "marker": "os^Dv<>p"[(i // 10) % 8]}


def outside_legend(fig: Figure, ax: Any, title: str | None = None) -> None:
    """One legend for the figure, outside the panels (on the right) so that no line is hidden."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8, frameon=False, title=title,
               title_fontsize=8)


def plot_per_bin(ax: Any, x: np.ndarray, summary: Mapping[str, Any], key: str, scale: float, label: str,
                 style: Mapping[str, Any] | None = None) -> bool:
    """One method's line over the cloud-cover bins, with ± one standard deviation over seeds as error bars;
    True when error bars were drawn."""
    from m3rcr.evaluation.aggregate import spread, value

    y = [value(summary, "per_bin", b, key) for b in CLOUD_COVER_BINS]
    y = np.array([np.nan if v is None else v * scale for v in y])
    err = [spread(summary, "per_bin", b, key) for b in CLOUD_COVER_BINS]
    if any(e is not None for e in err):
        ax.errorbar(x, y, yerr=[0.0 if e is None else e * scale for e in err], capsize=3, label=label,
                    **(style or {"marker": "o"}))
        return True
    ax.plot(x, y, label=label, **(style or {"marker": "o"}))
    return False


def per_bin_lines(ax: Any, results: Mapping[str, Mapping[str, Any]], key: str, scale: float) -> bool:
    """Every method's line on ``ax``, dodged sideways a little so that error bars at one bin stay apart;
    True when any error bars were drawn."""
    n = len(results)
    step = min(0.06, 0.5 / max(n, 1))
    x = np.arange(len(CLOUD_COVER_BINS), dtype=float)
    bars = False
    for i, (method, summary) in enumerate(results.items()):
        bars |= plot_per_bin(ax, x + (i - (n - 1) / 2) * step, summary, key, scale, method, _style(i))
    return bars


def _seed_note(bars: bool) -> str | None:
    return "method (error bars: ± 1 std over seeds)" if bars else "method"


def metrics_by_cloud_cover(results: Mapping[str, Mapping[str, Any]]) -> Figure:
    """One panel per metric (MAE x100, PSNR, SAM, SSIM) against the cloud-cover bin; one line per method
    (error bars: ± one standard deviation over seeds, for methods trained with several)."""
    fig = Figure(figsize=(15, 3.8), layout="constrained")
    axes = fig.subplots(1, len(METRIC_AXES))
    counts = bin_counts(results)
    bars = False
    for ax, (key, (title, label, scale)) in zip(axes, METRIC_AXES.items()):
        bars |= per_bin_lines(ax, results, key, scale)
        set_bin_axis(ax, counts)
        ax.set_ylabel(label, fontsize=9)
        ax.set_title(f"{title} per cloud-cover level", fontsize=10)
    outside_legend(fig, axes[-1], _seed_note(bars))
    return fig


def _keep_method(prediction: Sequence[Any], samples: Sequence[Mapping[str, Any]]) -> bool:
    """False for a 'method' that is the cloudy input itself: its column would repeat the first one."""
    for pred, sample in zip(prediction, samples):
        p = np.asarray(pred.float().numpy() if isinstance(pred, torch.Tensor) else pred, dtype=np.float64)
        c = np.asarray(sample["cloudy"].float().numpy() if isinstance(sample["cloudy"], torch.Tensor)
                       else sample["cloudy"], dtype=np.float64)
        if p.shape != c.shape or not np.allclose(p, c, atol=2e-4):  # predictions are stored x 10000
            return True
    return False


def sample_title(sample: Mapping[str, Any]) -> str:
    """'name, NN % cloud' of a sample (or of a kept figure sample); 'name, cloud cover unknown' without one
    (NaN: SEN12MS-CR without cloud masks)."""
    cover = float(sample["cloud_cover"])
    if math.isnan(cover):
        return f"{sample['name']}, cloud cover unknown"
    return f"{sample['name']}, {100 * cover:.0f} % cloud"


def _array(x: Any) -> np.ndarray:
    return x.detach().to("cpu", torch.float32).numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float32)


def _rgb_painter(sample: Mapping[str, Any], stretch: Stretch, spec: Any | None) -> Callable[[Any], np.ndarray]:
    """The function that turns an image of ``sample``'s figure row into a display RGB: M3R-CR's (B, G, R, NIR)
    bands without ``spec``; with it, the bands ``spec.rgb`` converted to reflectance by
    ``spec.reflectance_per_unit``. The stretch is set by the sample's cloudy image at its clear pixels and its
    reference (:mod:`m3rcr.data.plot`)."""
    rgb = {} if spec is None else {"rgb": spec.rgb_indices(), "scale": float(spec.reflectance_per_unit)}
    limits = stretch_limits([(sample["cloudy"], sample.get("cloudmask")), (sample["cloudfree"], None)], stretch,
                            **rgb)
    return lambda image: rgb_composite(image, limits, **rgb)


def _show_sar(ax: Any, sar: Any, spec: Any | None) -> None:
    """SAR VV in grey: on its [0, 1] scale (M3R-CR), or, with a ``spec``, under its own 2nd-98th percentile
    stretch (the SAR scale depends on the dataset's preprocessing, e.g. [0, 2] for SEN12MS-CR's resnet)."""
    if spec is None:
        ax.imshow(np.asarray(sar[0]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        return
    vv = _array(sar)[0]
    finite = vv[np.isfinite(vv)]
    lo, hi = (float(np.percentile(finite, 2)), float(np.percentile(finite, 98))) if finite.size else (0.0, 1.0)
    ax.imshow(vv, cmap="gray", vmin=lo, vmax=max(hi, lo + 1e-6), interpolation="nearest")


def qualitative_grid(samples: Sequence[Mapping[str, Any]], predictions: Mapping[str, Sequence[Any]],
                     stretch: Stretch = "percentile", spec: Any | None = None) -> Figure:
    """Per sample: cloudy, cloud-free reference, SAR VV and each method's prediction, wrapped into rows
    that fit :data:`MAX_WIDTH_PX`.

    All RGB panels of a sample share one stretch, set by its cloudy image at its clear pixels and its
    reference (:func:`m3rcr.data.plot.stretch_limits`); predictions are drawn on it. A method named
    'cloudy' whose predictions are the cloudy inputs is left out: the first column shows them.
    Images hold M3R-CR's 4 bands on the [0, 1] scale, or, with a dataset ``spec``
    (:class:`~m3rcr.data.DatasetSpec`), its optical bands: true colour from ``spec.rgb`` (SEN12MS-CR: B4, B3, B2)
    in reflectance (``spec.reflectance_per_unit``).
    """
    methods = [m for m in predictions
               if m.strip().lower() != "cloudy" or _keep_method(predictions[m], samples)]
    cols = ["Cloudy", "Cloud-free (reference)", "SAR VV", *methods]
    panel = 2.1
    per_row = grid_columns(len(cols), panel)
    rows = math.ceil(len(cols) / per_row)
    fig = Figure(figsize=(panel * per_row + 0.6, (panel * rows + 0.35) * len(samples)), layout="constrained")
    subfigs = fig.subfigures(len(samples), 1, squeeze=False)[:, 0]
    for r, (sample, sub) in enumerate(zip(samples, subfigs)):
        paint = _rgb_painter(sample, stretch, spec)
        for c, ax in enumerate(image_axes(sub, len(cols), panel)):
            if c == 2:
                _show_sar(ax, sample["sar"], spec)
            else:
                image = {0: sample["cloudy"], 1: sample["cloudfree"]}.get(c)
                image = predictions[cols[c]][r] if image is None else image
                ax.imshow(paint(image), interpolation="nearest")
            ax.set_title(cols[c], fontsize=9)
        sub.suptitle(sample_title(sample), fontsize=10, x=0.01, ha="left")
    return fig


def ndvi_by_cloud_cover(results: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Fig. 9 layout: NDVI RMSE and NDVI mIoU against the cloud-cover bin; one line per method."""
    fig = Figure(figsize=(9, 3.8), layout="constrained")
    axes = fig.subplots(1, 2)
    counts = bin_counts(results)
    bars = False
    for ax, (key, title, label) in zip(axes, (("ndvi_rmse", "NDVI RMSE", "NDVI RMSE (NDVI units)"),
                                               ("ndvi_miou", "NDVI-level mIoU", "NDVI-level mIoU (%)"))):
        bars |= per_bin_lines(ax, results, key, 1.0)
        set_bin_axis(ax, counts)
        ax.set_ylabel(label, fontsize=9)
        ax.set_title(f"{title} per cloud-cover level", fontsize=10)
    outside_legend(fig, axes[-1], _seed_note(bars))
    return fig


def ndvi_density(histograms: Mapping[str, np.ndarray]) -> Figure:
    """Fig. 8 layout: density of predicted vs reference NDVI (log colour scale), one panel per method,
    wrapped into rows.

    Each histogram is (bins, bins) over [-1, 1], rows = reference, columns = prediction.
    """
    from matplotlib.colors import LogNorm

    n = len(histograms)
    panel = 3.0
    cols = grid_columns(n, panel, margin_inches=1.2)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(panel * cols + 1.2, (panel + 0.3) * rows), layout="constrained")
    grid = fig.subplots(rows, cols, squeeze=False).ravel()
    axes = list(grid[:n])
    for ax in grid[n:]:
        ax.set_axis_off()
    vmax = max(float(h.max()) for h in histograms.values()) or 1.0
    im = None
    for ax, (method, hist) in zip(axes, histograms.items()):
        h = np.asarray(hist, dtype=float)
        im = ax.imshow(np.ma.masked_equal(h.T, 0), origin="lower", extent=(-1, 1, -1, 1), cmap="viridis",
                       norm=LogNorm(vmin=1, vmax=vmax), interpolation="nearest")
        ax.plot([-1, 1], [-1, 1], color="k", lw=0.8, ls="--")
        ax.set_title(method, fontsize=10)
        ax.set_xlabel("reference NDVI", fontsize=8)
        ax.set_ylabel("predicted NDVI", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_aspect("equal")
    if im is not None:
        fig.colorbar(im, ax=list(grid), shrink=0.8, label="pixels per bin (count)")
    return fig


# Clouds are bright in every visible band; clear land and water rarely reach this reflectance in all three.
BRIGHT_CLOUD_REFLECTANCE = 0.2


def scene_before_after(before: np.ndarray, after: np.ndarray, titles: Sequence[str] = ("cloudy input",
                       "cloud removed"), suptitle: str | None = None, *, cloudmask: np.ndarray | None = None,
                       stretch: Stretch = "percentile") -> Figure:
    """Two RGB quicklooks, (3, h, w) red, green, blue reflectance with NaN as no-data, side by side on one
    stretch; no-data is shown light grey.

    The stretch comes from the input's clear pixels, deterministically and whatever the model returned:
    those clear in ``cloudmask`` ((h, w), non-zero = cloudy) when given (where a masked prediction keeps
    the input, so both panels agree there), else those the input itself does not show as cloud, i.e. not
    bright in all three visible bands (:data:`BRIGHT_CLOUD_REFLECTANCE`; snow and bright sand count as
    cloud too, which only narrows the pixels the stretch is taken from).
    """
    if cloudmask is None:
        with np.errstate(invalid="ignore"):
            cloudmask = np.min(before, axis=0) > BRIGHT_CLOUD_REFLECTANCE  # NaN (no-data) compares False
    limits = rgb_stretch_limits([(before, cloudmask)], stretch)  # the model's output has no say
    h, w = after.shape[-2:]
    panel_h = 5.0
    panel_w = panel_h * min(w / h, 1.6)
    fig = Figure(figsize=(min(2 * panel_w + 0.4, MAX_WIDTH_PX / DPI), panel_h + 0.6), layout="constrained")
    for ax, image, title in zip(fig.subplots(1, 2), (before, after), titles):
        ax.imshow(apply_stretch(image, limits), interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig
