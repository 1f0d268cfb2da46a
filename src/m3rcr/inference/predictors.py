"""Predictors: functions from a batch (``cloudy``, ``sar``, ...) to its cloud-free estimate, as evaluation and
scene inference call them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

#: takes a batch (tensors on the device) and returns the (B, C, H, W) prediction, in the units of its ``cloudy``
Predictor = Callable[[dict[str, Any]], torch.Tensor]


def cloudy_predictor(batch: dict[str, Any]) -> torch.Tensor:
    """The 'method' that returns the cloudy input: the floor every table shows."""
    return batch["cloudy"]


def mean_fill_predictor(batch: dict[str, Any]) -> torch.Tensor:
    """The constant mean fill, a floor that needs no model: every pixel of a band is that band's mean over the
    cloudy input's clear pixels (cloud mask < 0.5), or over all its pixels where none is clear. Any band count.

    Without cloud masks (SEN12MS-CR with ``--no-cloud-masks``: masks are all 0) it is the whole image's mean."""
    x = batch["cloudy"].float()
    clear = (batch["cloudmask"].to(x.device) < 0.5).to(x.dtype).unsqueeze(1)
    n_clear = clear.flatten(1).sum(1)[:, None]
    mean_clear = (x * clear).flatten(2).sum(2) / n_clear.clamp(min=1)
    fill = torch.where(n_clear > 0, mean_clear, x.flatten(2).mean(2))
    return fill[:, :, None, None].expand_as(x).clone()


def model_predictor(model: torch.nn.Module, precision: str = "float32") -> Predictor:
    """Run ``model(cloudy, sar)`` without gradients, optionally under autocast (bfloat16 / float16)."""
    dtype = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[precision]

    def predict(batch: dict[str, Any]) -> torch.Tensor:
        x = batch["cloudy"]
        ctx = torch.autocast(x.device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            return model(x, batch["sar"]).float()

    return predict
