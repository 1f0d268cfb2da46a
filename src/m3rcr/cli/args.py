"""Argument types and argument groups shared by the commands."""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported by the functions that need them: `m3rcr --help` stays instant
    import torch

    from m3rcr.data import M3RCRDataset


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


def add_data_args(p: argparse.ArgumentParser, split_default: str | None = None) -> None:
    g = p.add_argument_group("dataset")
    g.add_argument("--data", required=True, metavar="ROOT", help="dataset root holding <split>/ and <split>.csv")
    g.add_argument("--split", default=split_default, required=split_default is None, metavar="NAME",
                   help="split name, e.g. train or test" + (f" (default: {split_default})" if split_default else ""))
    g.add_argument("--csv", metavar="FILE", help="split list to use instead of ROOT/<split>.csv")


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


def open_dataset(args: argparse.Namespace) -> M3RCRDataset:
    """The split of the dataset and loading groups (:func:`add_data_args`, :func:`add_loading_args`)."""
    from m3rcr.data import M3RCRDataset, Sampling

    return M3RCRDataset(args.data, args.split, args.csv, sar_mode=args.sar_mode, sar_resampling=args.sar_resampling,
                        landcover_level=args.landcover_level, sampling=Sampling(crop_size=args.crop, crop="center"))


def device_of(name: str) -> torch.device:
    """``--device``: cpu, cuda, cuda:N or auto."""
    from m3rcr.utils.device import resolve_device

    return resolve_device(name)
