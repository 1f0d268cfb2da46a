"""Image-reconstruction metrics of the M3R-CR benchmark (spec section 4.1), batched on any device.

Per image: MAE, PSNR, SSIM and SAM over all bands and pixels, then averaged over images. Per land-cover
class: MAE and SAM pooled over all pixels of the class in the whole set. Per cloud-cover bin: every
per-image metric averaged over the images of the bin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from m3rcr.data.preprocess import CLOUD_COVER_BINS, LEVEL1_CLASSES, cover_bin_label
from m3rcr.evaluation.confusion import miou
from m3rcr.evaluation.ndvi import level_confusion, ndvi, ndvi_histogram
from m3rcr.evaluation.removal import RemovalAccumulator

#: SAM floors each squared spectral norm at float16's machine epsilon, 2^-10, as the authors do.
SAM_NORM_FLOOR = 2.0**-10
#: PSNR reported for a perfect reconstruction (MSE = 0), as the authors do.
PSNR_PERFECT = 100.0
IMAGE_METRICS = ("mae", "psnr", "ssim", "sam")


def _check(pred: torch.Tensor, ref: torch.Tensor) -> None:
    if pred.shape != ref.shape or pred.ndim != 4:
        raise ValueError(f"expected two (B, C, H, W) tensors of one shape, got {tuple(pred.shape)} and {tuple(ref.shape)}")


def mae(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per image (B,), over all bands and pixels."""
    _check(pred, ref)
    return (pred - ref).abs().flatten(1).mean(1)


def mse(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image (B,)."""
    _check(pred, ref)
    return (pred - ref).pow(2).flatten(1).mean(1)


def psnr(pred: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB per image (B,): 20 log10(range / sqrt(MSE)); 100 dB where MSE is 0."""
    m = mse(pred, ref).double()
    out = 20 * torch.log10(data_range / m.sqrt())
    return torch.where(m == 0, torch.full_like(out, PSNR_PERFECT), out).to(pred.dtype)


def gaussian_window(size: int = 11, sigma: float = 1.5, device: torch.device | None = None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised 2-D Gaussian (size, size), centred on the middle pixel.

    (The authors' window is centred at size / 2 = 5.5 instead of 5, half a pixel off; see docs.)
    """
    x = torch.arange(size, device=device, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g).to(dtype)


def ssim_map(pred: torch.Tensor, ref: torch.Tensor, window: int = 11, sigma: float = 1.5, data_range: float = 1.0,
             center: float | None = None) -> torch.Tensor:
    """Per-pixel, per-band SSIM (B, C, H, W) with zero padding of window // 2 (the authors' convention).

    ``center`` moves the Gaussian's centre (the authors' code uses 5.5 for an 11-pixel window).
    """
    _check(pred, ref)
    c = pred.shape[1]
    if center is None:
        w = gaussian_window(window, sigma, pred.device, pred.dtype)
    else:
        x = torch.arange(window, device=pred.device, dtype=torch.float64) - center
        g = torch.exp(-(x**2) / (2 * sigma**2))
        g = g / g.sum()
        w = torch.outer(g, g).to(pred.dtype)
    w = w.expand(c, 1, window, window)
    pad = window // 2

    def filt(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, w, padding=pad, groups=c)

    mu1, mu2 = filt(pred), filt(ref)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1 = filt(pred * pred) - mu1_sq
    s2 = filt(ref * ref) - mu2_sq
    s12 = filt(pred * ref) - mu12
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return ((2 * mu12 + c1) * (2 * s12 + c2)) / ((mu1_sq + mu2_sq + c1) * (s1 + s2 + c2))


def ssim(pred: torch.Tensor, ref: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """SSIM per image (B,): the SSIM map averaged over all bands and ALL pixels, borders included."""
    return ssim_map(pred, ref, **kwargs).flatten(1).mean(1)


def sam_map(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Spectral angle in degrees per pixel (B, H, W) between the band vectors of ``pred`` and ``ref``."""
    _check(pred, ref)
    p, r = pred.double(), ref.double()
    dot = (p * r).sum(1)
    norms = (p * p).sum(1).clamp(min=SAM_NORM_FLOOR) * (r * r).sum(1).clamp(min=SAM_NORM_FLOOR)
    return torch.rad2deg(torch.arccos((dot / norms.sqrt()).clamp(-1, 1))).to(pred.dtype)


def sam(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Mean spectral angle in degrees per image (B,)."""
    return sam_map(pred, ref).flatten(1).mean(1)


@dataclass
class ImageRecord:
    """Metrics of one evaluated image."""

    name: str
    cloud_cover: float
    mae: float
    psnr: float
    ssim: float
    sam: float
    mae_cloudy: float | None = None  #: MAE over the image's cloudy pixels (None without clouds)
    mae_clear: float | None = None  #: MAE over its clear pixels
    ndvi_rmse: float | None = None  #: RMSE between the NDVI of prediction and reference, this image only


@dataclass
class MetricAccumulator:
    """Collects per-image metrics and per-class pixel sums over a test set, batch by batch.

    ``update`` takes (B, C, H, W) predictions and references, (B, H, W) level-1 land cover on the
    same grid (or None), (B, H, W) cloud masks (or None), the images' cloud-cover fractions and names,
    and optionally the cloudy inputs: with them and the masks, the cloud-removal measures of
    :mod:`m3rcr.evaluation.removal` are pooled too (each image's mean fill from its own clear pixels).
    """

    class_names: Sequence[str] = LEVEL1_CLASSES[:6]  # 'unknown' is left out of the per-class table
    records: list[ImageRecord] = field(default_factory=list)
    _abs_sum: torch.Tensor | None = None
    _sam_sum: torch.Tensor | None = None
    _count: torch.Tensor | None = None
    _bands: int = 0
    # NDVI, pooled over pixels: per bin [squared-error sum, pixel count] and 5-level confusion matrices
    _ndvi_sq: dict[str, list[float]] = field(default_factory=dict)
    _ndvi_cm: dict[str, torch.Tensor] = field(default_factory=dict)
    ndvi_hist: torch.Tensor | None = None  #: (200, 200) reference x predicted NDVI counts (Fig. 8)
    removal: RemovalAccumulator = field(default_factory=RemovalAccumulator)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, ref: torch.Tensor, landcover: torch.Tensor | None,
               cloudmask: torch.Tensor | None, cloud_cover: Sequence[float], names: Sequence[str],
               cloudy: torch.Tensor | None = None) -> None:
        pred, ref = pred.float(), ref.float()
        if cloudy is not None and cloudmask is not None:
            for p_i, r_i, x_i, m_i in zip(pred.cpu(), ref.cpu(), cloudy.float().cpu(), cloudmask.cpu()):
                self.removal.update(p_i, r_i, x_i, m_i)
        values = {"mae": mae(pred, ref), "psnr": psnr(pred, ref), "ssim": ssim(pred, ref), "sam": sam(pred, ref)}
        abs_err = (pred - ref).abs()
        split = [(None, None)] * len(names)
        if cloudmask is not None:
            m = cloudmask.to(pred.device, torch.float32).unsqueeze(1)
            n_cloud = m.flatten(1).sum(1) * pred.shape[1]
            n_clear = (1 - m).flatten(1).sum(1) * pred.shape[1]
            err_cloud = (abs_err * m).flatten(1).sum(1)
            err_clear = (abs_err * (1 - m)).flatten(1).sum(1)
            split = [(float(ec / nc) if nc > 0 else None, float(el / nl) if nl > 0 else None)
                     for ec, nc, el, nl in zip(err_cloud, n_cloud, err_clear, n_clear)]
        nd_pred, nd_ref = ndvi(pred), ndvi(ref)
        sq = (nd_pred.double() - nd_ref.double()).pow(2).flatten(1)
        hist = ndvi_histogram(nd_pred, nd_ref)
        self.ndvi_hist = hist if self.ndvi_hist is None else self.ndvi_hist + hist
        for i, name in enumerate(names):
            b = cover_bin_label(float(cloud_cover[i]))
            cm = level_confusion(nd_pred[i], nd_ref[i]).cpu()
            for key in ("all", b):
                acc = self._ndvi_sq.setdefault(key, [0.0, 0.0])
                acc[0] += float(sq[i].sum())
                acc[1] += sq.shape[1]
                self._ndvi_cm[key] = self._ndvi_cm[key] + cm if key in self._ndvi_cm else cm
            self.records.append(ImageRecord(str(name), float(cloud_cover[i]),
                                            *(float(values[k][i]) for k in IMAGE_METRICS), *split[i],
                                            ndvi_rmse=float(sq[i].mean().sqrt())))
        if landcover is None:
            return
        k = len(self.class_names)
        lc = landcover.to(pred.device).long()
        if lc.shape != pred.shape[:1] + pred.shape[2:]:
            raise ValueError(f"land cover {tuple(lc.shape)} must be on the prediction's grid {tuple(pred.shape)}")
        valid = (lc >= 0) & (lc < k)
        idx = lc[valid]
        per_pixel_abs = abs_err.sum(1)[valid].double()  # summed over bands
        per_pixel_sam = sam_map(pred, ref)[valid].double()
        if self._abs_sum is None:
            self._abs_sum = torch.zeros(k, dtype=torch.float64, device=pred.device)
            self._sam_sum = torch.zeros_like(self._abs_sum)
            self._count = torch.zeros_like(self._abs_sum)
        self._abs_sum.index_add_(0, idx, per_pixel_abs)
        self._sam_sum.index_add_(0, idx, per_pixel_sam)
        self._count.index_add_(0, idx, torch.ones_like(per_pixel_abs))
        self._bands = pred.shape[1]

    def per_class(self) -> dict[str, dict[str, float | None]]:
        """MAE and SAM pooled over all pixels of each class (None for classes never seen)."""
        out: dict[str, dict[str, float | None]] = {}
        for i, name in enumerate(self.class_names):
            n = float(self._count[i]) if self._count is not None else 0.0
            out[name] = {
                "mae": float(self._abs_sum[i]) / (n * self._bands) if n else None,
                "sam": float(self._sam_sum[i]) / n if n else None,
                "pixels": int(n),
            }
        return out

    def _mean(self, records: Sequence[ImageRecord], key: str) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for metric in (*IMAGE_METRICS, "mae_cloudy", "mae_clear"):
            vals = [getattr(r, metric) for r in records if getattr(r, metric) is not None]
            out[metric] = sum(vals) / len(vals) if vals else None
        sq = self._ndvi_sq.get(key)
        out["ndvi_rmse"] = math.sqrt(sq[0] / sq[1]) if sq and sq[1] else None
        out["ndvi_miou"] = miou(self._ndvi_cm[key]) if key in self._ndvi_cm else None
        out["images"] = len(records)
        return out

    def summary(self) -> dict[str, Any]:
        """``overall``, ``per_class``, ``per_bin`` (keys like ``0-20``) and, with cloudy inputs, ``removal``
        (the pooled :class:`~m3rcr.evaluation.removal.RemovalMeasures`) as plain dicts.

        Image metrics are averaged over images; ``ndvi_rmse`` pools the squared NDVI errors of all
        pixels of the set (or bin) and ``ndvi_miou`` (percent) comes from one confusion matrix of the
        five NDVI levels accumulated over them.
        """
        bins: dict[str, list[ImageRecord]] = {b: [] for b in CLOUD_COVER_BINS}
        for r in self.records:
            bins[cover_bin_label(r.cloud_cover)].append(r)
        out = {
            "overall": self._mean(self.records, "all"),
            "per_class": self.per_class(),
            "per_bin": {b: self._mean(rs, b) for b, rs in bins.items()},
        }
        if self.removal.bands is not None:
            out["removal"] = self.removal.measures().as_dict()
        return out


def finite_or_none(x: float | None) -> float | None:
    """JSON-safe float."""
    return None if x is None or not math.isfinite(x) else x
