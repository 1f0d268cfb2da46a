"""Predictors: functions from a batch (``cloudy``, ``sar``, ...) to its cloud-free estimate, as evaluation and
scene inference call them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

#: takes a batch (tensors on the device) and returns the (B, 4, H, W) prediction
Predictor = Callable[[dict[str, Any]], torch.Tensor]


def cloudy_predictor(batch: dict[str, Any]) -> torch.Tensor:
    """The 'method' that returns the cloudy input: the floor every table shows."""
    return batch["cloudy"]


def model_predictor(model: torch.nn.Module, precision: str = "float32") -> Predictor:
    """Run ``model(cloudy, sar)`` without gradients, optionally under autocast (bfloat16 / float16)."""
    dtype = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[precision]

    def predict(batch: dict[str, Any]) -> torch.Tensor:
        x = batch["cloudy"]
        ctx = torch.autocast(x.device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            return model(x, batch["sar"]).float()

    return predict
