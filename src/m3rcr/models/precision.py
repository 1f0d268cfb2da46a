"""Numeric precision of a model at inference: names, and the conversion to a 16-bit model.

``--precision bf16`` converts the model's weights once (:func:`to_inference_precision`) and runs it in
bf16 with channels-last maps instead of autocasting: autocast re-casts every weight at every call, keeps
the elementwise work (residual adds, activations, the dynamic filter) in float32 and leaves oneDNN to
reorder every plain-layout output, which kept bf16 at 0.7x of float32 on a CPU with AMX. What must stay
float32 does: modules with ``keep_float32 = True`` (the deformable convolutions: offsets, bilinear
sampling), the attention's softmax; LayerNorm accumulates in float32 inside its kernel. float16 keeps
autocast (its range is too small for a model cast whole).
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

#: accepted names (command line, configurations) -> canonical name
_ALIASES = {"float32": "float32", "fp32": "float32", "32": "float32", "32-true": "float32",
            "bfloat16": "bfloat16", "bf16": "bfloat16", "bf16-mixed": "bfloat16", "bf16-true": "bfloat16",
            "float16": "float16", "fp16": "float16", "16": "float16", "16-mixed": "float16"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: the names ``--precision`` offers
PRECISION_CHOICES = ("float32", "fp32", "bf16", "bfloat16", "fp16", "float16")


def canonical_precision(name: str) -> str:
    """``'bf16'``, ``'bfloat16'``, ``'bf16-mixed'`` ... -> ``'bfloat16'`` (likewise float32, float16)."""
    try:
        return _ALIASES[str(name).lower()]
    except KeyError:
        raise ValueError(f"unknown precision {name!r}: use one of {', '.join(PRECISION_CHOICES)}") from None


def precision_dtype(name: str) -> torch.dtype:
    """The torch dtype of a precision name (any alias of :func:`canonical_precision`)."""
    return DTYPES[canonical_precision(name)]


def channels_last_default(device: torch.device, dtype: torch.dtype = torch.bfloat16) -> bool:
    """Channels-last maps at inference: on CPUs in every precision (oneDNN computes in that layout; a plain
    NCHW output costs a reorder of every output map: full-width Align-CR at 160 x 160, 2 cores, float32
    0.90x the time, bf16 0.65x), on CUDA for 16-bit types (tensor-core convolutions; float32 unmeasured)."""
    return device.type == "cpu" or (device.type == "cuda" and dtype != torch.float32)


@functools.cache
def _cpu_flags() -> frozenset[str] | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None  # not Linux: unknown
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), None)
    return None if line is None else frozenset(line.partition(":")[2].split())  # None: no x86 flags


def native_bf16(device: torch.device) -> bool | None:
    """Whether ``device`` computes bf16 in hardware (CPU: AVX512-BF16 or AMX; CUDA: compute capability 8+);
    None when unknown. Without it oneDNN emulates bf16, slower than float32."""
    if device.type == "cuda":
        with torch.cuda.device(device):
            return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return None
    flags = _cpu_flags()
    return None if flags is None else bool(flags & {"avx512_bf16", "amx_bf16"})


def to_inference_precision(model: nn.Module, precision: str, channels_last: bool | None = None) -> nn.Module:
    """Convert ``model`` in place for inference in ``precision`` and return it.

    float32 leaves the weights as they are. bfloat16 / float16 cast every parameter and buffer once,
    except those of modules that declare ``keep_float32 = True``; parametrized weights (weight
    normalisation) are computed once in float32 first, so the converted model's state dict has plain
    ``weight`` entries (keep the float32 model to save or train). ``channels_last`` (default:
    :func:`channels_last_default`) stores the convolution weights channels-last; feed inputs
    through :meth:`InferencePrecision.inputs`. A model converted here runs without autocast.
    """
    dtype = precision_dtype(precision)
    if dtype != torch.float32:
        _bake_parametrizations(model)
        _cast(model, dtype)
    if channels_last is None:
        channels_last = channels_last_default(_device_of(model), dtype)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        for module in model.modules():
            for name in getattr(module, "plain_layout", ()):
                param = getattr(module, name)
                param.data = param.data.contiguous()
    return model


def _cast(module: nn.Module, dtype: torch.dtype) -> None:
    """Cast ``module``'s floating-point parameters and buffers to ``dtype``, except in subtrees whose root
    has ``keep_float32 = True``: those are never rounded (casting all, then back, would leave their values
    with bf16 precision)."""
    if getattr(module, "keep_float32", False):
        return
    module._apply(lambda t: t.to(dtype) if t.is_floating_point() else t, recurse=False)
    for child in module.children():
        _cast(child, dtype)


def _bake_parametrizations(model: nn.Module) -> None:
    """Replace each parametrized submodule (weight normalisation) by a plain one holding its float32 weights:
    at inference they are constants, and recomputing them at every call in 16 bits would round the norm
    and cost time. ``parametrize.remove_parametrizations`` is not used: it deletes the property from a
    class that a deep copy of the module shares, which would break the original model."""
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if parametrize.is_parametrized(child):
                setattr(parent, child_name, _plain_copy(child))


def _plain_copy(module: nn.Module) -> nn.Module:
    """``module`` without its parametrizations: same attributes and submodules, its parametrized tensors as
    parameters with their current values."""
    base = type(module).__bases__[0]  # parametrize puts the module in a generated subclass of its class
    plain = base.__new__(base)
    plain.__dict__.update(module.__dict__)
    plain._parameters = dict(module._parameters)
    plain._buffers = dict(module._buffers)
    plain._modules = {k: v for k, v in module._modules.items() if k != "parametrizations"}
    with torch.no_grad():
        for name in module.parametrizations:
            plain._parameters[name] = nn.Parameter(getattr(module, name).detach().clone(),
                                                   requires_grad=getattr(module, name).requires_grad)
    return plain


def _device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is a 4-D map stored channels-last (and not also plain, as 1 x 1 maps or C = 1 are)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class InferencePrecision:
    """How to run ``model`` at ``precision`` without gradients: :meth:`inputs` converts the inputs,
    :meth:`context` is the autocast context (float16 only). The model is prepared in place when this
    object is made (:func:`to_inference_precision`): bfloat16 converts it; float32 and float16 keep its
    weights' type and, where :func:`channels_last_default` says so, store them channels-last."""

    def __init__(self, model: nn.Module, precision: str = "float32",
                 channels_last: bool | None = None) -> None:
        self.name = canonical_precision(precision)
        self.dtype = DTYPES[self.name]
        self.autocast = self.name == "float16"
        cast = self.name == "bfloat16"
        device = _device_of(model)
        if cast and native_bf16(device) is False:
            warnings.warn(f"{device} has no native bf16 (AVX512-BF16 / AMX on a CPU, compute "
                          "capability 8 on a GPU): bf16 is emulated and likely slower than float32",
                          stacklevel=2)
        if channels_last is None:
            channels_last = channels_last_default(device, self.dtype)
        self.channels_last = channels_last
        self.model = to_inference_precision(model, self.name if cast else "float32", channels_last)

    def inputs(self, *xs: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        """The model's inputs in its memory format (channels-last or not). Their type stays: the models
        cast on entry (:meth:`~m3rcr.models.base.CloudRemovalModel.to_compute`), so that a residual model
        adds its float32 input back to its bf16 correction instead of a rounded copy."""
        if not self.channels_last:
            return xs
        return tuple(x.contiguous(memory_format=torch.channels_last) if x is not None and x.dim() == 4 else x
                     for x in xs)

    def context(self, device_type: str) -> contextlib.AbstractContextManager[None]:
        """``torch.autocast`` for float16, a no-op otherwise."""
        return torch.autocast(device_type, dtype=self.dtype) if self.autocast else contextlib.nullcontext()
