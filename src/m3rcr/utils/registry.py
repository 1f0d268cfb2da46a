"""One registry class for everything created by name: models, discriminators, segmentation models, losses and
datasets.

A registry maps a name to a class (or factory) plus the constructor arguments the name fixes (an ablation such as
``aligncr_wo_sar`` is Align-CR with ``use_sar=False``). ``build`` checks the arguments against the constructor's
signature, so a typo in a configuration is an error naming the close matches, not a silently ignored key::

    LOSSES = Registry("loss")

    @LOSSES.register("l1")
    class L1Loss(nn.Module): ...

    LOSSES.build("l1", reduction="mean")
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from m3rcr.utils.text import spelled

T = TypeVar("T")


class RegistryError(ValueError):
    """An unknown name, or arguments its constructor does not take."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered name: the class or factory it builds and the arguments the name fixes."""

    name: str
    target: Callable[..., T]
    fixed: dict[str, Any] = field(default_factory=dict)

    def signature(self) -> inspect.Signature:
        """The constructor's signature; a class that inherits ``object``'s or torch's ``__init__`` takes nothing
        (their ``*args, **kwargs`` would otherwise let any option through)."""
        if isinstance(self.target, type):
            owner = next(c for c in self.target.__mro__ if "__init__" in c.__dict__)
            if owner is object or owner.__module__.split(".")[0] == "torch":
                return inspect.Signature()
        return inspect.signature(self.target)

    def parameters(self) -> dict[str, inspect.Parameter]:
        """The constructor's keyword parameters a configuration may set (fixed ones excluded)."""
        params = self.signature().parameters
        return {name: p for name, p in params.items()
                if name not in self.fixed and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}

    def defaults(self) -> dict[str, Any]:
        """The constructor's default for every argument that has one (what an empty config means)."""
        return {name: p.default for name, p in self.parameters().items() if p.default is not p.empty}

    def accepts_any(self) -> bool:
        """Whether the constructor takes ``**kwargs`` (then unknown keys cannot be refused here)."""
        return any(p.kind is p.VAR_KEYWORD for p in self.signature().parameters.values())


class Registry(Generic[T]):
    """Names -> constructors of one kind of thing; ``kind`` words the error messages ("model", "loss")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, target: Callable[..., T] | None = None, **fixed: Any) -> Any:
        """Register ``target`` under ``name`` (or use as a class decorator: ``@REG.register("name")``)."""
        def add(obj: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise RegistryError(f"{self.kind} {name!r} is already registered")
            entry = Entry(name, obj, dict(fixed))
            params = entry.signature().parameters
            if not entry.accepts_any() and set(fixed) - set(params):
                raise RegistryError(f"{self.kind} {name!r} fixes {', '.join(sorted(set(fixed) - set(params)))}, "
                                    f"which its constructor does not take")
            self._entries[name] = entry
            return obj

        return add if target is None else add(target)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for plug-ins and tests that register a temporary entry)."""
        self.entry(name)
        del self._entries[name]

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def entry(self, name: str) -> Entry[T]:
        """The entry of ``name``; an unknown name is an error listing the known ones."""
        if name not in self._entries:
            raise RegistryError(f"unknown {self.kind} {spelled(name, self._entries)}; "
                                f"known: {', '.join(sorted(self._entries))}")
        return self._entries[name]

    def defaults(self, name: str) -> dict[str, Any]:
        """What an empty configuration of ``name`` means: its constructor defaults, with what the name fixes."""
        entry = self.entry(name)
        return {**entry.defaults(), **entry.fixed}

    def check(self, name: str, config: Mapping[str, Any]) -> None:
        """Refuse arguments the constructor does not take, and values that contradict what the name fixes."""
        entry = self.entry(name)
        if not entry.accepts_any():
            allowed = entry.parameters()
            unknown = sorted(set(config) - set(allowed) - set(entry.fixed))
            if unknown:
                raise RegistryError(f"{self.kind} {name!r} has no option "
                                    f"{', '.join(spelled(key, allowed) for key in unknown)}; "
                                    f"options: {', '.join(sorted(allowed)) or 'none'}")
        clash = {k: v for k, v in config.items() if k in entry.fixed and entry.fixed[k] != v}
        if clash:
            raise RegistryError(f"{self.kind} {name!r} fixes "
                                f"{', '.join(f'{k}={entry.fixed[k]!r}' for k in clash)}")

    def build(self, name: str, **config: Any) -> T:
        """Create ``name`` with ``config`` over its constructor defaults; objects that allow it get
        ``registry_name`` so a checkpoint can say what it holds."""
        self.check(name, config)
        entry = self.entry(name)
        obj = entry.target(**{**config, **entry.fixed})
        try:
            obj.registry_name = name  # type: ignore[attr-defined]
        except AttributeError:
            pass
        return obj
