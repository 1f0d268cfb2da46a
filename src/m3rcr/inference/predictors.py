"""Predictors: functions from a batch (``cloudy``, ``sar``, ...) to its cloud-free estimate, as evaluation and
scene inference call them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from m3rcr.inference.compiled import compile_backend, compiled_model
from m3rcr.models.precision import InferencePrecision

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


def model_predictor(model: torch.nn.Module, precision: str = "float32",
                    compile: bool | str = False) -> ModelPredictor:
    """Run ``model(cloudy, sar)`` without gradients in ``precision`` (float32; bf16: the model is converted
    in place to bf16 with channels-last maps, see :mod:`m3rcr.models.precision`; float16: autocast).
    The prediction comes back as float32. ``compile`` (True: inductor, or a backend's name) runs the
    converted model through ``torch.compile`` (:mod:`m3rcr.inference.compiled`)."""
    return ModelPredictor(model, precision, compile)


class ModelPredictor:
    """The :data:`Predictor` of :func:`model_predictor`; :attr:`compiled` is the compiled model (None without
    ``compile``), whose ``report`` says what compiling cost."""

    def __init__(self, model: torch.nn.Module, precision: str = "float32",
                 compile: bool | str = False) -> None:
        self.run = InferencePrecision(model, precision)
        backend = compile_backend(compile)
        self.compiled = compiled_model(self.run.model, backend) if backend else None
        self.forward = self.compiled or self.run.model

    def __call__(self, batch: dict[str, Any]) -> torch.Tensor:
        x, run = batch["cloudy"], self.run
        with torch.inference_mode(), run.context(x.device.type):
            return self.forward(*run.inputs(x, batch["sar"])).float().contiguous()
