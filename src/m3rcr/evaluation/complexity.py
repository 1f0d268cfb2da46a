"""Model complexity: exact parameter counts, MACs from PyTorch's flop counter, forward latency."""

from __future__ import annotations

import copy
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from m3rcr.inference.compiled import CompiledModel, CompileReport, compile_backend
from m3rcr.models.base import CloudRemovalModel
from m3rcr.models.blocks import deform_conv_impl
from m3rcr.models.precision import InferencePrecision


def count_parameters(model: nn.Module) -> int:
    """Every parameter, including those owned directly by non-leaf modules (which thop misses)."""
    return sum(p.numel() for p in model.parameters())


def _deform_conv2d_flops(x_shape, weight_shape, offset_shape, mask_shape, bias_shape, *args, out_shape=None,
                         **kwargs) -> int:
    """FLOPs of torchvision's deformable convolution: those of the convolution it generalises.

    Bilinear sampling and modulation are not counted, as pooling and activations are not.
    """
    batch, _, h_out, w_out = out_shape
    c_out, c_in_per_group, kh, kw = weight_shape
    return 2 * batch * c_out * c_in_per_group * kh * kw * h_out * w_out


def _flop_formulas() -> dict[Any, Any]:
    import torchvision  # noqa: F401  (registers torch.ops.torchvision)

    # the counter looks formulas up by overload packet, not by overload
    return {torch.ops.torchvision.deform_conv2d: _deform_conv2d_flops}


def count_macs(model: nn.Module, *inputs: torch.Tensor | None) -> int:
    """Multiply-accumulates of one forward pass: convolutions (deformable included), linear layers and
    matrix products (attention), as counted by ``torch.utils.flop_counter`` (FLOPs = 2 x MACs)."""
    counter = FlopCounterMode(display=False, custom_mapping=_flop_formulas())
    # torchvision's operator, which the formula above counts (the CPU sampling kernel would count as a matmul)
    with torch.no_grad(), deform_conv_impl(model, "torchvision"), counter:
        model(*inputs)
    return counter.get_total_flops() // 2


@dataclass
class Complexity:
    """What ``m3rcr complexity`` reports."""

    model: str
    input_size: list[int]
    parameters: int
    macs: int
    flops: int
    latency_ms: float | None
    latency_runs_ms: list[float]
    device: str
    dtype: str
    threads: int
    batch_size: int = 1
    padded_size: list[int] | None = None  #: the size the model computes on, if it pads its input
    #: with ``compile``: torch.compile's backend, seconds of its first call (not in the latency), compiles
    compile: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """The measurements as aligned lines for a terminal."""
        runs = len(self.latency_runs_ms)
        lat = f"{self.latency_ms:.1f} ms (median of {runs})" if self.latency_ms is not None else "not measured"
        padded = f" (computed at {self.padded_size[0]} x {self.padded_size[1]})" if self.padded_size else ""
        h, w = self.input_size
        return (f"model       {self.model}\ninput       {self.batch_size} x {h} x {w}{padded}\n"
                f"parameters  {self.parameters:,}\nMACs        {self.macs / 1e9:.2f} G\n"
                f"FLOPs       {self.flops / 1e9:.2f} G\nlatency     {lat}\n"
                f"device      {self.device}, {self.dtype}, {self.threads} threads"
                + (f"\ncompile     {self._compile_line()}" if self.compile else ""))

    def _compile_line(self) -> str:
        c = self.compile or {}
        return CompileReport(c["backend"], c["seconds"], c["compiles"]).describe()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores visible)"


def timed_forward(model: nn.Module, inputs: tuple[torch.Tensor | None, ...], repeats: int = 5,
                  warmup: int = 1, dtype: torch.dtype = torch.float32, compile: bool | str = False
                  ) -> tuple[list[float], CompileReport | None]:
    """Forward times in ms of ``repeats`` runs after ``warmup`` runs, run as ``m3rcr predict --precision``
    runs it (bf16: a bf16 copy of the model with channels-last maps; float16: autocast), optionally
    compiled by ``torch.compile`` (``compile``: True for inductor, or a backend's name; the model is
    converted to ``dtype`` first, as predict does). Untimed calls
    run until one compiles nothing (recompiles included), then the ``warmup`` runs: compiling is excluded
    from the latency and returned as its own :class:`~m3rcr.inference.compiled.CompileReport` (None
    without ``compile``)."""
    device = next(t.device for t in inputs if t is not None)
    if dtype == torch.bfloat16:
        model = copy.deepcopy(model)
    run = InferencePrecision(model, str(dtype).removeprefix("torch."))
    inputs = run.inputs(*inputs)
    backend = compile_backend(compile)
    # a fresh wrapper: a cached one may have compiled already, and its time would not be this measurement's
    forward = CompiledModel(run.model, backend) if backend else run.model
    times = []
    with torch.inference_mode(), run.context(device.type):
        if isinstance(forward, CompiledModel):
            forward.warm(*inputs)  # until a call compiles nothing (recompiles included); then the warm-up
        for i in range(warmup + repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            forward(*inputs)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append(1000 * (time.perf_counter() - t0))
    return times, forward.report if isinstance(forward, CompiledModel) else None


#: the seed of the random inputs (their values change neither the MACs nor, noticeably, the latency)
_INPUT_SEED = 0


def measure(model: CloudRemovalModel, name: str, size: tuple[int, int] = (160, 160), repeats: int = 5,
            warmup: int = 1, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
            batch_size: int = 1, *, compile: bool | str = False) -> Complexity:
    """Parameters, MACs and forward latency of ``model`` on ``device`` (the model is moved there, in eval mode).

    The inputs have the bands of ``model.spec`` (no SAR for a model that reads none). MACs are counted in
    float32; a model that pads its input (``spec.size_multiple``) computes, and is counted, on the padded
    size, which is reported as ``padded_size``. ``compile`` times the model compiled by ``torch.compile``
    (:func:`timed_forward`); its compile time is reported as ``compile``, apart from the latency.
    Latency runs as ``predict --precision`` runs: bf16 on a converted copy; float32 and float16 on ``model``
    itself, whose convolution weights are then stored channels-last on a CPU (values unchanged).
    """
    device = torch.device(device)
    gen = torch.Generator().manual_seed(_INPUT_SEED)
    spec = model.spec
    cloudy = torch.rand(batch_size, spec.optical_in, *size, generator=gen).to(device)
    sar = torch.rand(batch_size, spec.sar_bands, *size, generator=gen).to(device) if spec.uses_sar else None
    model = model.to(device).eval()
    macs = count_macs(model, cloudy, sar)
    runs, compiled = ([], None)
    if repeats > 0:
        runs, compiled = timed_forward(model, (cloudy, sar), repeats, warmup, dtype, compile)
    multiple = spec.size_multiple
    padded = [-(-n // multiple) * multiple for n in size]
    return Complexity(
        model=name, input_size=list(size), parameters=count_parameters(model), macs=macs, flops=2 * macs,
        latency_ms=statistics.median(runs) if runs else None, latency_runs_ms=[round(t, 2) for t in runs],
        device=_device_name(device), dtype=str(dtype).removeprefix("torch."), threads=torch.get_num_threads(),
        batch_size=batch_size, padded_size=padded if padded != list(size) else None,
        compile=compiled.as_dict() if compiled else None,
    )
