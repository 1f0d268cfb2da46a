"""Figures of dataset samples (M3R-CR, SEN12MS-CR), and the display stretch every RGB figure of the project uses.

Display conventions (used by every figure of the project):

* RGB composites show bands (red, green, blue) with one linear stretch shared by the RGB panels it
  is computed for, so that they compare (:func:`stretch_limits`). ``stretch="percentile"`` (the
  default) takes, per band, the 2nd-98th percentile range of each given panel over the pixels that
  are clear in every one of them (clouds, grown a little, and no-data left out), and keeps the
  widest range over the panels: a cloudy image that is brighter than its cloud-free reference even
  where clear (haze, another date) is not washed out; the reference then looks darker than it would
  on its own stretch, as it is darker. :func:`rgb_stretch_limits` has the details and the fallbacks
  for nearly overcast images. ``stretch="fixed"``
  maps reflectance [0, 0.3] to [0, 1] in every band instead. Values outside are clipped; no-data is
  light grey. Images on another scale than reflectance (SEN12MS-CR's ``resnet`` values in [0, 5]) are
  converted to reflectance first (``scale``, a dataset spec's ``reflectance_per_unit``), so both
  stretches mean the same for every dataset.
* Which bands are red, green and blue comes from the dataset's spec (``rgb`` positions): (2, 1, 0) in
  M3R-CR's (B, G, R, NIR), B4, B3, B2 in Sentinel-2's 13 bands.
* Which panels set the stretch: the observed images (the cloudy input at its clear pixels and the
  cloud-free reference); predictions are drawn on that stretch, so a method that brightens, darkens
  or returns garbage shows it instead of changing how every other panel looks.
* SAR shows its first band (VV) in grey on the items' scale: [0, 1] is -25 dB .. 0 dB (0 .. 2 with
  SEN12MS-CR's ``resnet`` scaling: ``sar_max``).
* Land cover uses the WorldCover palette (level 2) or the level-1 colours of
  :data:`m3rcr.data.preprocess.LEVEL1_COLORS`.
* The cloud mask is white where cloudy. Datasets without land cover (SEN12MS-CR) have no land-cover
  panel (``landcover_level=None``); items without a computed mask (``cloud_cover`` NaN) no mask panel.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from m3rcr.data.preprocess import LEVEL2_NODATA, class_colors, class_names

if TYPE_CHECKING:
    from m3rcr.data.datasets.base import DatasetSpec

Stretch = Literal["percentile", "fixed"]
STRETCHES: tuple[str, ...] = ("percentile", "fixed")
RGB_BANDS = (2, 1, 0)  # red, green, blue in the 4-band (B, G, R, NIR) order
#: low percentiles tried in turn (the high ones are 100 minus them) until CLIP_FRACTION holds
_LOW_STEPS = (2.0, 1.0, 0.5)
PERCENTILES = (_LOW_STEPS[0], 100.0 - _LOW_STEPS[0])
#: at most this fraction of a panel's clear pixels may clip in some band; where the bands' tails do not
#: coincide (2 % in each of three bands can clip 12 % of the pixels) the percentiles move outwards
CLIP_FRACTION = 0.04
FIXED_RANGE = (0.0, 0.3)  # reflectance
#: clouds grow by this fraction of the image's larger side (at least 2 pixels) before "clear" is taken:
#: masks miss the thin, bright fringe around clouds, which would otherwise set the top of the stretch
CLOUD_BUFFER = 0.02
#: fewer jointly clear pixels than this cannot give stable percentiles: see :func:`rgb_stretch_limits`
MIN_CLEAR_PIXELS = 100
NODATA_GREY = 0.85
#: red, green, blue band names of true-colour composites (M3R-CR's, Sentinel-2's); other ``spec.rgb`` are false colour
TRUE_COLOUR = (("red", "green", "blue"), ("B4", "B3", "B2"))

Limits = tuple[np.ndarray, np.ndarray]


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float32).numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


def rgb_stretch_limits(panels: Sequence[tuple[Any, Any | None]], stretch: Stretch = "percentile") -> Limits:
    """Per-band (low, high) display limits shared by RGB panels.

    ``panels``: (image, cloud mask) pairs; images (3, H, W) red, green, blue on one grid (NaN / inf =
    no-data), masks (H, W) non-zero where cloudy or None (a clear image). With ``"percentile"`` the
    pixels used are those clear in every panel's mask (clouds grown by :data:`CLOUD_BUFFER` first, where
    enough pixels stay clear) and finite in every image; each panel gives its
    own 2nd-98th percentile per band there and the limits span them all (low = the lowest panel's,
    high = the highest's). Where that would clip more than :data:`CLIP_FRACTION` of some panel's clear
    pixels in some band (bands whose tails lie on different pixels), the percentiles move outwards
    (1st-99th, then 0.5th-99.5th).

    Fallbacks, when fewer than :data:`MIN_CLEAR_PIXELS` pixels are jointly clear (a nearly overcast
    image): each panel without a cloud mask over its own finite pixels (the clouds of masked panels
    then saturate, which is what an overcast image looks like); if every panel has a mask, each panel's
    finite pixels clouds included; with no finite pixel at all, the fixed reflectance range.
    """
    if stretch == "fixed":
        return np.full(3, FIXED_RANGE[0]), np.full(3, FIXED_RANGE[1])
    if stretch != "percentile":
        raise ValueError(f"stretch must be one of {', '.join(STRETCHES)}, got {stretch!r}")
    if not panels:
        raise ValueError("no panel to compute a display stretch from")
    images = [_numpy(image).astype(np.float64, copy=False) for image, _ in panels]
    shape = images[0].shape
    if any(im.ndim != 3 or im.shape[0] != 3 or im.shape != shape for im in images):
        raise ValueError(f"stretch panels must be (3, H, W) on one grid, got {[im.shape for im in images]}")
    finite = [np.isfinite(im).all(axis=0) for im in images]
    clear = np.logical_and.reduce(finite)
    masks = [_numpy(mask).reshape(shape[1:]) != 0 for _, mask in panels if mask is not None]
    if masks:
        cloudy = np.logical_or.reduce(masks)
        buffered = clear & ~grow(cloudy, max(2, round(CLOUD_BUFFER * max(shape[1:]))))
        clear = buffered if buffered.sum() >= MIN_CLEAR_PIXELS else clear & ~cloudy
    if clear.sum() >= MIN_CLEAR_PIXELS:
        samples = [im[:, clear] for im in images]
    else:
        unmasked = [im[:, ok] for im, ok, (_, mask) in zip(images, finite, panels) if mask is None]
        samples = unmasked if any(s.size for s in unmasked) else [im[:, ok] for im, ok in zip(images, finite)]
    samples = [s for s in samples if s.size]
    if not samples:
        return np.full(3, FIXED_RANGE[0]), np.full(3, FIXED_RANGE[1])
    steps = np.asarray(_LOW_STEPS)
    # per panel, (2 * steps, 3): the low percentiles of every step, then the high ones
    q = [np.percentile(s, np.concatenate([steps, 100.0 - steps]), axis=1) for s in samples]
    for k in range(len(steps)):
        lo = np.min([p[k] for p in q], axis=0)
        hi = np.max([p[len(steps) + k] for p in q], axis=0)
        if all(_clipped(s, lo, hi) <= CLIP_FRACTION for s in samples):
            break
    return lo, np.maximum(hi, lo + 1e-6)  # a flat band must not divide by zero


def grow(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` (H, W) dilated by a (2 radius + 1)-pixel square: True within ``radius`` pixels of a True pixel."""
    out = mask.astype(bool)
    for axis in (0, 1):
        # a running sum over the window along one axis at a time (the square is separable)
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)])
        c = np.cumsum(padded, axis=axis, dtype=np.int64)
        c = np.concatenate([np.zeros_like(c.take([0], axis=axis)), c], axis=axis)
        n = out.shape[axis]
        out = (c.take(np.arange(2 * radius + 1, n + 2 * radius + 1), axis=axis)
               - c.take(np.arange(n), axis=axis)) > 0
    return out


def _clipped(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Fraction of the (3, N) values' pixels at or beyond the limits in some band."""
    return float(((values <= lo[:, None]) | (values >= hi[:, None])).any(axis=0).mean())


def _rgb(image: Any, rgb: Sequence[int], scale: float) -> np.ndarray:
    """The (3, H, W) red, green, blue bands of an image at positions ``rgb``, in reflectance (x ``scale``)."""
    out = _numpy(image)[list(rgb)]
    return out if scale == 1.0 else out.astype(np.float64) * scale


def stretch_limits(panels: Sequence[tuple[Any, Any | None]], stretch: Stretch = "percentile", *,
                   rgb: Sequence[int] = RGB_BANDS, scale: float = 1.0) -> Limits:
    """:func:`rgb_stretch_limits` of multi-band images: ``panels`` are (image, cloud mask) pairs.

    ``rgb``: positions of the red, green and blue bands (default :data:`RGB_BANDS`, M3R-CR's (B, G, R, NIR);
    a spec's ``rgb_indices()`` otherwise); ``scale``: reflectance of one unit of the images (a spec's
    ``reflectance_per_unit``). The limits are in reflectance: pass the same ``rgb`` and ``scale`` to
    :func:`rgb_composite`.
    """
    return rgb_stretch_limits([(_rgb(image, rgb, scale), mask) for image, mask in panels], stretch)


def apply_stretch(rgb: Any, limits: Limits) -> np.ndarray:
    """(H, W, 3) display image in [0, 1] from a (3, H, W) red, green, blue array; no-data light grey."""
    rgb = _numpy(rgb).astype(np.float64, copy=False)
    lo, hi = limits
    with np.errstate(invalid="ignore"):
        out = np.clip((rgb - lo[:, None, None]) / (hi - lo)[:, None, None], 0, 1).transpose(1, 2, 0)
    out[~np.isfinite(rgb).all(axis=0)] = NODATA_GREY
    return out


def rgb_composite(image: Any, limits: Limits, *, rgb: Sequence[int] = RGB_BANDS, scale: float = 1.0) -> np.ndarray:
    """(H, W, 3) float image in [0, 1] from a (C, H, W) image: bands ``rgb`` (default: M3R-CR's 4-band order)
    times ``scale`` (reflectance per unit) on ``limits`` (from :func:`stretch_limits` with the same ``rgb``
    and ``scale``)."""
    return apply_stretch(_rgb(image, rgb, scale), limits)


def _landcover_cmap(level: int) -> tuple[ListedColormap, tuple[str, ...]]:
    return ListedColormap(class_colors(level)), class_names(level)


def _has_mask(sample: Mapping[str, Any]) -> bool:
    """Whether the item carries a computed cloud mask (SEN12MS-CR without masks: ``cloud_cover`` NaN)."""
    if "cloudmask" not in sample:
        return False
    cover = sample.get("cloud_cover")
    try:
        return cover is None or not math.isnan(float(cover))
    except (TypeError, ValueError):  # not a number: the mask is what counts
        return True


def _draw_landcover(fig: Figure, ax: Any, landcover: Any, level: int) -> None:
    """Land-cover ids in their palette, with the legend of the classes present below the row."""
    cmap, names = _landcover_cmap(level)
    lc = _numpy(landcover).astype(np.int64)
    ax.imshow(np.ma.masked_equal(lc, LEVEL2_NODATA), cmap=cmap, vmin=-0.5, vmax=len(names) - 0.5,
              interpolation="nearest")
    present = [int(v) for v in np.unique(lc) if v != LEVEL2_NODATA]
    handles = [Patch(facecolor=cmap(i), edgecolor="k", linewidth=0.3, label=names[i]) for i in present]
    # below the whole row, where the constrained layout makes room for it
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 8), fontsize=8,
               frameon=False, handlelength=1.0, title="Land cover", title_fontsize=8)


def plot_sample(
    sample: Mapping[str, Any],
    prediction: Any | None = None,
    *,
    spec: DatasetSpec | None = None,
    landcover_level: int | None = 1,
    stretch: Stretch = "percentile",
    title: str | None = None,
    panel_size: float = 3.0,
    sar_max: float = 1.0,
) -> Figure:
    """A row of panels: cloudy, cloud-free, [prediction], SAR, [land cover], [cloud mask].

    ``sample`` is a dataset item (unbatched); ``prediction`` a (C, H, W) image with the item's bands and
    scale. ``spec`` (the dataset's :class:`~m3rcr.data.datasets.base.DatasetSpec`) says which bands are red,
    green and blue, the SAR band's name and the reflectance of one optical unit; None means M3R-CR's 4 bands
    in reflectance. ``landcover_level=None`` leaves the land-cover panel out (SEN12MS-CR has none); the
    cloud-mask panel is left out when the item has no computed mask. ``sar_max``: the SAR value shown white
    (the top of the items' SAR scale). Returns a matplotlib figure; save it with ``fig.savefig(path)``.
    """
    rgb = spec.rgb_indices() if spec is not None else RGB_BANDS
    scale = spec.reflectance_per_unit if spec is not None else 1.0
    sar_name = spec.sar_bands[0] if spec is not None else "VV"
    has_mask = _has_mask(sample)
    # the observed images set the stretch; a prediction is drawn on it (see the module's conventions)
    limits = stretch_limits([(sample["cloudy"], sample["cloudmask"] if has_mask else None),
                             (sample["cloudfree"], None)], stretch, rgb=rgb, scale=scale)
    panels: list[tuple[str, Any]] = [("Cloudy", "cloudy"), ("Cloud-free", "cloudfree")]
    if prediction is not None:
        panels.append(("Prediction", "prediction"))
    panels.append((f"SAR {sar_name}", "sar"))
    if landcover_level is not None:
        panels.append(("Land cover", "landcover"))
    if has_mask:
        panels.append(("Cloud mask", "cloudmask"))
    # a bare Figure (no pyplot): nothing global is touched and nothing needs closing
    fig = Figure(figsize=(panel_size * len(panels), panel_size + 1.0), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (label, key) in zip(axes[0], panels):
        ax.set_xticks([])
        ax.set_yticks([])
        if key in ("cloudy", "cloudfree", "prediction"):
            image = _numpy(prediction) if key == "prediction" else sample[key]
            if key == "prediction" and image.ndim == 4 and image.shape[0] == 1:
                image = image[0]
            ax.imshow(rgb_composite(image, limits, rgb=rgb, scale=scale), interpolation="nearest")
        elif key == "sar":
            ax.imshow(_numpy(sample["sar"])[0], cmap="gray", vmin=0, vmax=sar_max, interpolation="nearest")
        elif key == "landcover":
            _draw_landcover(fig, ax, sample["landcover"], landcover_level)  # type: ignore[arg-type]
        elif key == "cloudmask":
            mask = _numpy(sample["cloudmask"])
            ax.imshow(mask, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            label = f"Cloud mask (white: {100 * float(mask.mean()):.0f} % cloudy)"
        ax.set_title(label, fontsize=10)
    if title is None:
        title = str(sample.get("name", ""))
        if spec is not None and spec.rgb not in TRUE_COLOUR:  # e.g. bands B8, B4, B3: say it is not true colour
            title += f" (false colour: R, G, B = {', '.join(spec.rgb)})"
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
