"""The contract every network of m3rcr follows, so that training, inference, complexity and checkpoints read
what a model is instead of probing it.

* :class:`ConfiguredModule` records the arguments it was constructed with in ``config`` (every constructor
  parameter, defaults included), once, for every subclass: a checkpoint rebuilds the model from its registry
  name and this mapping.
* :class:`CloudRemovalModel` adds ``spec``, a :class:`ModelSpec`: the optical bands in and out, the SAR bands it
  reads (0: none) and the multiple its input size is padded to. Models are called ``model(cloudy, sar)``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    """What a cloud-removal model reads and writes.

    Attributes:
        optical_in, optical_out: optical bands of the cloudy input and of the output.
        sar_bands: SAR bands it fuses; 0 for a model that ignores SAR (it may still be given one).
        size_multiple: the model pads H and W up to a multiple of this inside (1: it takes any size as is).
    """

    optical_in: int
    optical_out: int
    sar_bands: int = 0
    size_multiple: int = 1

    @property
    def uses_sar(self) -> bool:
        """Whether the model reads its ``sar`` input."""
        return self.sar_bands > 0

    @property
    def input_bands(self) -> int:
        """Bands the model reads in all: optical, then SAR (what a conditional GAN conditions on)."""
        return self.optical_in + self.sar_bands


def _recording(init: Callable[..., None]) -> Callable[..., None]:
    """``init`` that first stores its bound arguments, defaults filled in, as ``self.config``."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self: ConfiguredModule, *args: Any, **kwargs: Any) -> None:
        # only the class being built records (a parent's __init__, called through super(), does not), and
        # before running: __init__ may then write what an argument left open (None: "derived from others")
        if type(self).__init__ is wrapper:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            config: dict[str, Any] = {}
            for name, value in list(bound.arguments.items())[1:]:  # [0] is self
                kind = signature.parameters[name].kind
                if kind is inspect.Parameter.VAR_KEYWORD:
                    config.update(value)
                elif kind is not inspect.Parameter.VAR_POSITIONAL:
                    config[name] = value
            for name in type(self).unrecorded:
                if name in config:
                    config[name] = signature.parameters[name].default
            self.config = config
        init(self, *args, **kwargs)

    return wrapper


class ConfiguredModule(nn.Module):
    """A module that records its constructor arguments in ``config``; subclasses write no code for it."""

    #: constructor arguments recorded at their default rather than as given (a weights file, loaded into the
    #: state dict already, must not be read again when a checkpoint is loaded)
    unrecorded: ClassVar[tuple[str, ...]] = ()
    #: what a checkpoint of this module holds (``cloud_removal``, ``segmentation``); None: not saved on its own
    task: ClassVar[str | None] = None
    #: the registry name it was built under (set by :meth:`m3rcr.utils.registry.Registry.build`)
    registry_name: str | None = None
    config: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            params = inspect.signature(cls.__dict__["__init__"]).parameters
            bare = [n for n in cls.unrecorded if n in params and params[n].default is inspect.Parameter.empty]
            if bare:  # recorded "at its default", it would record inspect's marker, which no checkpoint can hold
                raise TypeError(f"{cls.__name__}.unrecorded names {', '.join(bare)}, which must have a default")
            cls.__init__ = _recording(cls.__dict__["__init__"])  # type: ignore[method-assign]


class CloudRemovalModel(ConfiguredModule):
    """Base of every cloud-removal network: ``model(cloudy, sar)`` with ``cloudy`` (B, spec.optical_in, H, W) and
    ``sar`` (B, spec.sar_bands, H, W) on the same grid (or None when ``spec.uses_sar`` is False) gives
    (B, spec.optical_out, H, W). Subclasses set ``self.spec`` in ``__init__``."""

    task: ClassVar[str | None] = "cloud_removal"
    spec: ModelSpec

    def compute_dtype(self) -> torch.dtype:
        """The type the network computes in: its first parameter's (bfloat16 after
        :func:`m3rcr.models.precision.to_inference_precision`, float32 otherwise, also under autocast)."""
        param = next(self.parameters(), None)
        return torch.float32 if param is None else param.dtype

    def to_compute(self, x: torch.Tensor | None) -> torch.Tensor | None:
        """An input in :meth:`compute_dtype` (None stays None). Models cast on entry, so that float32 inputs
        reach a bf16 model and a residual model adds its float32 input back unrounded."""
        return None if x is None else x.to(self.compute_dtype())

    def condition(self, cloudy: torch.Tensor, sar: torch.Tensor | None = None) -> torch.Tensor:
        """What a conditional-GAN discriminator is conditioned on: the model's input, optical then SAR (the
        ``spec.input_bands`` bands it reads), so any model of the registry can be trained as a GAN generator."""
        if not self.spec.uses_sar:
            return cloudy
        if sar is None:
            raise ValueError(f"{type(self).__name__} fuses SAR: its condition needs the SAR input")
        return torch.cat([cloudy, sar], dim=1)

    def forward_with_attention(self, cloudy: torch.Tensor, sar: torch.Tensor | None = None
                               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The output and the model's attention map (B, 1, H, W), for models trained to attend to clouds
        (SpA-GAN); None for the others."""
        return self(cloudy, sar), None
