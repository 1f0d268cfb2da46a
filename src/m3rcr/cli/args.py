"""Argument types and argument groups shared by the commands."""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported by the functions that need them: `m3rcr --help` stays instant
    import torch

    from m3rcr.data import CloudRemovalDataset


def positive(text: str) -> int:
    """argparse type: a whole number >= 1 (argparse prefixes the flag's name to the message)."""
    return _whole_number(text, 1)


def non_negative(text: str) -> int:
    """argparse type: a whole number >= 0."""
    return _whole_number(text, 0)


def finite_float(text: str) -> float:
    """argparse type: a finite number (NaN and infinity would turn every pixel into no-data or garbage)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def _whole_number(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {least}, got {value}")
    return value


def add_overwrite(p: argparse.ArgumentParser, text: str = "replace outputs that exist (default: refuse; missing "
                   "parent folders are always created)") -> None:
    p.add_argument("--overwrite", action="store_true", help=text)


#: datasets the data commands open (the registry's names; kept here so that --help does not import torch)
DATASET_NAMES = ("m3rcr", "sen12mscr")


def add_data_args(p: argparse.ArgumentParser, split_default: str | None = None) -> None:
    g = p.add_argument_group("dataset")
    g.add_argument("--dataset", choices=DATASET_NAMES, default="m3rcr",
                   help="which dataset ROOT holds (default: m3rcr)")
    g.add_argument("--data", required=True, metavar="ROOT", help="dataset root (M3R-CR: <split>/ folders and "
                                                                  "<split>.csv lists; SEN12MS-CR: either layout)")
    g.add_argument("--split", default=split_default, required=split_default is None, metavar="NAME",
                   help="split name, e.g. train or test (SEN12MS-CR: train, val, test or all)"
                        + (f" (default: {split_default})" if split_default else ""))
    g.add_argument("--csv", metavar="FILE", help="split list to use instead of ROOT/<split>.csv (SEN12MS-CR: the "
                                                  "flat layout's split CSV)")
    s = p.add_argument_group("SEN12MS-CR (with --dataset sen12mscr)")
    s.add_argument("--layout", choices=("official", "flat"), help="folder layout (default: detected)")
    s.add_argument("--preprocessing", choices=("default", "resnet", "glfcr"),
                   help="value scaling: default (UnCRtainTS), resnet (DSen2-CR) or glfcr (default: default, or the "
                        "checkpoint's)")
    s.add_argument("--bands", metavar="B,B,...", help="Sentinel-2 bands: all, rgbn, rgb or names such as B2,B3,B4,B8 "
                                                      "(default: all, or the checkpoint's)")
    s.add_argument("--reference-compatible", action="store_true",
                   help="select the published split by the reference loader's substring rule (leaks 6 test and 3 "
                        "val ROIs into train; only to compare with published numbers)")
    s.add_argument("--mask-cache", metavar="DIR", help="folder of cached s2cloudless masks ('off': no cache; "
                                                       "default: ROOT/.m3rcr_cache/s2cloudless or a per-user cache)")
    s.add_argument("--no-cloud-masks", action="store_true",
                   help="do not compute s2cloudless masks (no cloud-cover bins; cloud masks are all 0)")


_SEN12MSCR_FLAGS = {"layout": "--layout", "preprocessing": "--preprocessing", "bands": "--bands",
                    "reference_compatible": "--reference-compatible", "mask_cache": "--mask-cache",
                    "no_cloud_masks": "--no-cloud-masks"}
_M3RCR_FLAGS = {"sar_mode": ("--sar-mode", "nearest"), "sar_resampling": ("--sar-resampling", "nearest"),
                "landcover_level": ("--landcover-level", 1)}


def dataset_options(args: argparse.Namespace, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """The dataset's own constructor arguments from the dataset and loading flags; ``defaults`` (e.g. what a
    checkpoint was trained with) fill those not given. A flag of the other dataset is a usage error."""
    name = getattr(args, "dataset", "m3rcr")
    given = {k: getattr(args, k, None) for k in _SEN12MSCR_FLAGS}
    if name == "m3rcr":
        wrong = [flag for k, flag in _SEN12MSCR_FLAGS.items() if given[k] not in (None, False)]
        if wrong:
            raise SystemExit(f"m3rcr: error: {', '.join(wrong)} apply to --dataset sen12mscr")
        return {k: getattr(args, k) for k in _M3RCR_FLAGS if hasattr(args, k)}
    wrong = [flag for k, (flag, default) in _M3RCR_FLAGS.items() if getattr(args, k, default) != default]
    if wrong:
        raise SystemExit(f"m3rcr: error: {', '.join(wrong)} apply to --dataset m3rcr")
    out = dict(defaults or {})
    for key in ("layout", "preprocessing", "mask_cache"):
        if given[key] is not None:
            out[key] = given[key]
    if given["bands"] is not None:
        text = given["bands"]
        out["bands"] = text if text.lower() in ("all", "rgbn", "rgb") else [b.strip() for b in text.split(",")]
    if given["reference_compatible"]:
        out["reference_compatible"] = True
    if given["no_cloud_masks"]:
        out["cloud_masks"] = "none"
    return out


def add_loading_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("loading")
    g.add_argument("--sar-mode", choices=("nearest", "geo", "native"), default="nearest",
                   help="how SAR reaches the optical grid (default: nearest, the paper's protocol)")
    g.add_argument("--sar-resampling", choices=("nearest", "bilinear"), default="nearest",
                   help="interpolation in geo mode (default: nearest)")
    g.add_argument("--landcover-level", type=int, choices=(1, 2), default=1, help="land-cover classes (default: 1)")
    g.add_argument("--crop", type=positive, metavar="N", help="centred crop of N x N optical pixels (default: whole tile)")


def add_stretch_arg(p: argparse.ArgumentParser, source: str = "the pixels clear in the cloudy image and in the "
                                                                  "cloud-free image") -> None:
    # the same choices and meaning on every command that draws RGB images (m3rcr.data.plot.stretch_limits)
    p.add_argument("--stretch", choices=("percentile", "fixed"), default="percentile",
                   help=f"RGB display stretch, one for all RGB panels of a sample: 'percentile' maps each band's "
                        f"2nd-98th percentile over {source} to the display range, 'fixed' maps reflectance 0-0.3 "
                        f"(default: percentile)")


def open_dataset(args: argparse.Namespace, defaults: dict[str, Any] | None = None) -> CloudRemovalDataset:
    """The split of the dataset and loading groups (:func:`add_data_args`, :func:`add_loading_args`);
    ``defaults`` as for :func:`dataset_options`."""
    from m3rcr.data import DATASETS, Sampling
    from m3rcr.errors import DataError

    options = dataset_options(args, defaults)
    try:
        return DATASETS.build(getattr(args, "dataset", "m3rcr"), root=args.data, split=args.split, files=args.csv,
                              sampling=Sampling(crop_size=getattr(args, "crop", None), crop="center"), **options)
    except DataError:
        raise
    except ValueError as exc:  # an option's value (a band name, a split): the dataset's message, no traceback
        raise DataError(args.data, str(exc)) from None


#: the names ``--precision`` offers: m3rcr.models.precision.PRECISION_CHOICES, repeated here so that
#: ``--help`` does not import torch (a test checks they are the same)
PRECISION_NAMES = ("float32", "fp32", "bf16", "bfloat16", "fp16", "float16")


def precision_name(text: str) -> str:
    """argparse type: a precision name or alias (bf16, bfloat16, fp16, float16, fp32, float32) -> its
    canonical name (``bfloat16``, ``float16``, ``float32``)."""
    from m3rcr.models.precision import canonical_precision

    try:
        return canonical_precision(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_precision_arg(p: argparse.ArgumentParser, default: str | None = "float32", text: str = "") -> None:
    """``--precision``, the same names on every command (:data:`PRECISION_NAMES`); the value is the
    canonical name, or ``default`` (None: ``text`` says what not giving it means)."""
    text = text or ("numeric precision of the model: float32, bf16 (the model converted to bfloat16, "
                    "channels-last; sensitive parts stay float32) or fp16 (autocast)")
    text += f" (default: {default})" if default else ""
    p.add_argument("--precision", type=precision_name, default=default,
                   metavar="{" + ",".join(PRECISION_NAMES) + "}", help=text)


def add_compile_arg(p: argparse.ArgumentParser) -> None:
    """``--compile``: run the model through torch.compile (off by default; the compile time is reported)."""
    p.add_argument("--compile", action="store_true",
                   help="run the model through torch.compile (inductor); the first call per input shape "
                        "compiles (tens of seconds to minutes), its time is reported (default: off)")


def device_of(name: str) -> torch.device:
    """``--device``: cpu, cuda, cuda:N or auto."""
    from m3rcr.utils.device import resolve_device

    return resolve_device(name)
