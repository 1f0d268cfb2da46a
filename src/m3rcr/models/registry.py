"""Models created by name: ``create_model("aligncr", features=32)``."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its class and the constructor arguments the name fixes."""

    name: str
    cls: type[nn.Module]
    fixed: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, cls: type[nn.Module], **fixed: Any) -> None:
    """Register ``cls`` under ``name``; ``fixed`` arguments are part of what the name means (ablations)."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = ModelEntry(name, cls, dict(fixed))


def _load_builtin_models() -> None:
    # importing the model modules registers them
    from m3rcr.models import aligncr, dsen2cr, glfcr, mcgan, saroptcgan, spagan  # noqa: F401


def list_models() -> list[str]:
    """Names of every registered model."""
    _load_builtin_models()
    return sorted(_REGISTRY)


def create_model(name: str, **config: Any) -> nn.Module:
    """Build a registered model; ``config`` overrides its constructor defaults.

    The model gets ``registry_name`` and keeps its full configuration in ``model.config``.
    """
    _load_builtin_models()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    entry = _REGISTRY[name]
    accepted = set(inspect.signature(entry.cls).parameters)
    unknown = sorted(set(config) - accepted)
    if unknown:
        raise ValueError(f"model {name!r} has no option {', '.join(map(repr, unknown))}; "
                         f"options: {', '.join(sorted(accepted - set(entry.fixed)))}")
    clash = {k: v for k, v in config.items() if k in entry.fixed and entry.fixed[k] != v}
    if clash:
        raise ValueError(f"model {name!r} fixes {', '.join(f'{k}={entry.fixed[k]!r}' for k in clash)}")
    model = entry.cls(**{**config, **entry.fixed})
    model.registry_name = name
    return model
