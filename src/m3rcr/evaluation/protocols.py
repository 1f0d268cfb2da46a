"""Per-image metric protocols: the M3R-CR one and the community's SEN12MS-CR one (UnCRtainTS, EMRDM, ECRformer).

A :class:`Protocol` names its metrics and computes them for a batch of predictions and references
(B, C, H, W) on the [0, 1] scale, one dict per image; :meth:`Protocol.aggregate` averages such dicts over
a data set with :func:`nan_mean`. Nothing registers itself: :data:`PROTOCOLS` is a plain dict.

SEN12MS-CR protocol (spec ``sen12mscr.md`` section 5), per image over all bands and pixels, no cloud mask:

- RMSE = sqrt(mean((t - p)^2)); PSNR = 20 log10(1 / RMSE) dB; MAE = mean |t - p|;
- SAM = mean over pixels of arccos(clamp(<t, p> / (|t| |p|), -1, 1)), in degrees;
- SSIM: 11 x 11 Gaussian window, sigma 1.5, centred on the middle pixel, C1 = 0.01^2, C2 = 0.03^2, zero
  padding of 5 pixels and the map averaged over all bands and ALL pixels, borders included (the
  reference's ``pytorch_ssim``; the same map as :func:`m3rcr.evaluation.metrics.ssim`, reused here);
- data-set score = mean over images of the finite values (:func:`nan_mean`).

Two degenerate cases the formulas leave undefined, decided here:

- A pixel whose band vector has zero norm (in the prediction or the reference) has no angle: it is left out
  of that image's SAM mean and counted in ``sam_zero_norm_pixels``; an image with no such pixel left gets
  SAM = NaN. (The reference divides by the zero norm, so ONE such pixel turns the whole image's SAM into NaN
  and the image drops out of the SAM mean; skipping only the pixel keeps the rest of the image. The M3R-CR
  protocol instead floors the squared norms at 2^-10, see :data:`~m3rcr.evaluation.metrics.SAM_NORM_FLOOR`,
  which also bends the angle of dark but nonzero pixels; the SEN12MS-CR formula has no floor, so none here.)
- A perfect image (RMSE = 0) gets PSNR = +inf, not M3R-CR's 100 dB. The spec only says "skipping NaN
  values"; :func:`nan_mean` also keeps +-inf out of the mean and reports how many it left out (the
  reference's running mean would turn the whole data-set PSNR into inf).

RMSE, PSNR, MAE and SAM are computed in float64, SSIM in float32 (as the reference; float64 convolutions are
very slow on CPU), on the inputs' device; the outputs are Python floats.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from m3rcr.evaluation.metrics import IMAGE_METRICS, mae, mse, psnr, sam, ssim

#: Per-image metric names of the SEN12MS-CR protocol, in the order the published tables use.
SEN12MSCR_METRICS = ("rmse", "psnr", "mae", "sam", "ssim")

ImageMetrics = Callable[[torch.Tensor, torch.Tensor], list[dict[str, float]]]


def check_pair(pred: torch.Tensor, ref: torch.Tensor) -> None:
    """Raise TypeError / ValueError unless ``pred`` and ``ref`` are floating (B, C, H, W) tensors of one shape."""
    for label, x in (("prediction", pred), ("reference", ref)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{label} must be a torch.Tensor, got {type(x).__name__}")
        if not torch.is_floating_point(x):
            # raw Sentinel-2 digital numbers (uint16) must be scaled to [0, 1] first
            raise TypeError(f"{label} must be a floating tensor on the [0, 1] scale, got {x.dtype}")
    if pred.ndim != 4 or pred.shape != ref.shape:
        raise ValueError(f"expected prediction and reference as (B, C, H, W) tensors of one shape, "
                         f"got {tuple(pred.shape)} and {tuple(ref.shape)}")
    if pred.device != ref.device:
        raise ValueError(f"prediction is on {pred.device} but reference on {ref.device}")


def rmse(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Root mean squared error per image (B,), float64, over all bands and pixels."""
    check_pair(pred, ref)
    return mse(pred.double(), ref.double()).sqrt()


def psnr_from_rmse(rmse_values: torch.Tensor) -> torch.Tensor:
    """PSNR in dB for data range 1: 20 log10(1 / RMSE); +inf where RMSE is 0 (no 100 dB cap)."""
    return 20 * torch.log10(1 / rmse_values.double())  # 1 / 0 = inf, log10(inf) = inf


def sam_skipping_zero_norm(pred: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean spectral angle in degrees per image (B,) over the pixels where both band vectors are nonzero,
    and the number of zero-norm pixels left out (B,); NaN for an image with no pixel left.

    NaN inputs still give NaN (a NaN norm is not zero), as in the reference.
    """
    check_pair(pred, ref)
    p, r = pred.double(), ref.double()
    dot = (p * r).sum(1)
    norms = (p * p).sum(1).sqrt() * (r * r).sum(1).sqrt()
    valid = norms != 0
    cos = dot / torch.where(valid, norms, torch.ones_like(norms))
    angle = torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))
    n_valid = valid.flatten(1).sum(1)
    total = torch.where(valid, angle, torch.zeros_like(angle)).flatten(1).sum(1)
    mean = torch.where(n_valid > 0, total / n_valid.clamp(min=1), torch.full_like(total, math.nan))
    return mean, valid[0].numel() - n_valid


def _rows(values: Mapping[str, torch.Tensor], batch: int) -> list[dict[str, float]]:
    """{name: (B,) tensor} -> one {name: float} per image (one device -> host copy per metric)."""
    host = {k: v.detach().double().cpu().tolist() for k, v in values.items()}
    return [{k: float(v[i]) for k, v in host.items()} for i in range(batch)]


@torch.no_grad()
def sen12mscr_image_metrics(pred: torch.Tensor, ref: torch.Tensor) -> list[dict[str, float]]:
    """SEN12MS-CR protocol per image: {rmse, psnr, mae, sam, ssim, sam_zero_norm_pixels} for each of B images.

    Inputs: (B, C, H, W) floating tensors on the [0, 1] scale (e.g. S2 clipped to [0, 10000] / 10000).
    """
    check_pair(pred, ref)
    if pred.shape[0] == 0:
        return []
    p, r = pred.double(), ref.double()
    err = rmse(p, r)
    angle, zero_norm = sam_skipping_zero_norm(p, r)
    # SSIM in float32, as the reference: float64 grouped conv2d is ~80x slower on CPU (3 s per 13 x 256 x 256
    # image) and float32 moves SSIM by ~1e-6 only
    values = {"rmse": err, "psnr": psnr_from_rmse(err), "mae": mae(p, r), "sam": angle,
              "ssim": ssim(pred.float(), ref.float(), window=11, sigma=1.5, data_range=1.0),
              "sam_zero_norm_pixels": zero_norm}
    return _rows(values, pred.shape[0])


@torch.no_grad()
def m3rcr_image_metrics(pred: torch.Tensor, ref: torch.Tensor) -> list[dict[str, float]]:
    """M3R-CR per-image metrics {mae, psnr, ssim, sam}, exactly as MetricAccumulator computes them (float32).

    Only the per-image part: the per-class, per-bin and NDVI measures stay in MetricAccumulator.
    """
    check_pair(pred, ref)
    if pred.shape[0] == 0:
        return []
    p, r = pred.float(), ref.float()
    values = {"mae": mae(p, r), "psnr": psnr(p, r), "ssim": ssim(p, r), "sam": sam(p, r)}
    return _rows(values, pred.shape[0])


@dataclass(frozen=True)
class MeanResult:
    """Mean of the finite values of one metric over a data set, and what was left out."""

    mean: float | None  #: None when no finite value was seen
    count: int  #: values averaged
    nan: int  #: NaN or None values left out
    inf: int  #: +inf or -inf values left out (e.g. PSNR of a perfect image)

    @property
    def skipped(self) -> int:
        return self.nan + self.inf

    def as_dict(self) -> dict[str, float | int | None]:
        return {"mean": self.mean, "count": self.count, "nan": self.nan, "inf": self.inf}


def nan_mean(values: Iterable[float | None]) -> MeanResult:
    """Mean of the finite values, skipping NaN / None and +-inf and counting each kind (math.fsum, exact order-free)."""
    kept: list[float] = []
    n_nan = n_inf = 0
    for v in values:
        if v is None or math.isnan(v):
            n_nan += 1
        elif math.isinf(v):
            n_inf += 1
        else:
            kept.append(float(v))
    return MeanResult(math.fsum(kept) / len(kept) if kept else None, len(kept), n_nan, n_inf)


@dataclass(frozen=True)
class Protocol:
    """A named set of per-image metrics and how to compute them for a (B, C, H, W) batch."""

    name: str
    metrics: tuple[str, ...]  #: per-image metric names, in table order
    image_metrics: ImageMetrics  #: (pred, ref) -> one dict per image (may carry extra diagnostic keys)
    higher_is_better: frozenset[str]
    description: str

    def aggregate(self, records: Sequence[Mapping[str, float | None]]) -> dict[str, MeanResult]:
        """Data-set score per metric: :func:`nan_mean` over the images' values (a missing key counts as NaN)."""
        return {m: nan_mean(r.get(m) for r in records) for m in self.metrics}


SEN12MSCR = Protocol(
    name="sen12mscr",
    metrics=SEN12MSCR_METRICS,
    image_metrics=sen12mscr_image_metrics,
    higher_is_better=frozenset({"psnr", "ssim"}),
    description="SEN12MS-CR community protocol (UnCRtainTS): all 13 bands and pixels on [0, 1], no cloud mask; "
                "data-set mean over images skipping NaN (and, here, inf)",
)

M3RCR = Protocol(
    name="m3rcr",
    metrics=IMAGE_METRICS,
    image_metrics=m3rcr_image_metrics,
    higher_is_better=frozenset({"psnr", "ssim"}),
    description="M3R-CR benchmark per-image metrics (spec section 4.1); the full protocol is MetricAccumulator",
)

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (M3RCR, SEN12MSCR)}


def protocol(name: str) -> Protocol:
    """The protocol called ``name``; ValueError listing the known names otherwise."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown metric protocol {name!r}; known: {', '.join(sorted(PROTOCOLS))}") from None
