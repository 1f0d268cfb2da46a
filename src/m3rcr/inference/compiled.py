"""Optional ``torch.compile`` of a model for inference (``--compile``), with its compile time measured.

Compiling happens lazily, in the first call for each input shape (and again when a guard fails): the
calls that compile are timed (compile plus that call's forward) and reported, so the commands can say what
the flag cost. Shapes are static (``dynamic=False``: tiles have one size); a batch smaller than one already
compiled for (the last batch of a scene or a split) is padded to it, since a recompile costs far more than
the padded rows. A model is compiled once per backend and reused (many scenes in one process do not
recompile).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from m3rcr.models.precision import is_channels_last

#: the inductor backend generates C++ (CPU) or Triton (CUDA) kernels; "eager" and "aot_eager" only trace
DEFAULT_BACKEND = "inductor"


class CompileError(RuntimeError):
    """``torch.compile`` failed: the message names ``--compile`` and the cause in one line."""


@dataclass(frozen=True)
class CompileReport:
    """What compiling cost: the seconds of the calls that compiled (compile plus that call's forward), how
    many calls compiled (1: no recompile) and how many graphs they made (one per graph break more)."""

    backend: str
    seconds: float
    compiles: int
    graphs: int = 0

    def describe(self) -> str:
        """One line for a terminal, e.g. ``torch.compile: 41.2 s to compile (first call, 1 graph)``."""
        backend = "" if self.backend == DEFAULT_BACKEND else f" ({self.backend} backend)"
        again = self.compiles - 1
        calls = "first call" if again == 0 else f"{self.compiles} calls: {again} recompile{'s' * (again > 1)}"
        graphs = f", {self.graphs} graph{'s' if self.graphs != 1 else ''}" if self.graphs else ""
        return f"torch.compile{backend}: {self.seconds:.1f} s to compile ({calls}{graphs})"

    def as_dict(self) -> dict[str, Any]:
        """The report as recorded in statistics and JSON output."""
        return {"backend": self.backend, "seconds": round(self.seconds, 3), "compiles": self.compiles,
                "graphs": self.graphs}

    def since(self, earlier: CompileReport | None) -> CompileReport:
        """What was compiled after ``earlier`` (a report of the same model taken before)."""
        if earlier is None:
            return self
        return CompileReport(self.backend, self.seconds - earlier.seconds, self.compiles - earlier.compiles,
                             self.graphs - earlier.graphs)


class CompiledModel:
    """``model`` compiled with ``torch.compile(dynamic=False)``; call it as the model. :attr:`report`
    says what compiling has cost so far. Inputs are tensors (or None) with the batch first.

    A call compiled when dynamo made a graph during it (its graph counter): the first call for an input
    shape, and any recompile a failed guard causes later (a module that changes its own Python state in
    ``forward``, e.g. a cache it fills, recompiles on the next call)."""

    def __init__(self, model: nn.Module, backend: str = DEFAULT_BACKEND) -> None:
        self.model, self.backend = model, backend
        self.compiled = torch.compile(model, dynamic=False, backend=backend)
        self.seconds, self.compiles, self.graphs = 0.0, 0, 0
        #: per input signature without the batch size: the batch sizes called with
        self._batches: dict[tuple[Any, ...], set[int]] = {}

    @property
    def report(self) -> CompileReport:
        """Compile time so far (0 s and 0 compiles before the first call)."""
        return CompileReport(self.backend, self.seconds, self.compiles, self.graphs)

    def __call__(self, *inputs: torch.Tensor | None) -> torch.Tensor:
        key = tuple(None if x is None else (tuple(x.shape[1:]), x.dtype, x.device.type, is_channels_last(x))
                    for x in inputs)
        batch = next(x.shape[0] for x in inputs if x is not None)
        seen = self._batches.setdefault(key, set())
        larger = [b for b in seen if b > batch]
        if batch not in seen and larger:  # a smaller last batch: pad it to a compiled size, not compile again
            return self._call(tuple(_pad(x, min(larger), k) for x, k in zip(inputs, key)), False)[:batch]
        first = batch not in seen
        seen.add(batch)
        return self._call(inputs, first)

    def warm(self, *inputs: torch.Tensor | None, limit: int = 8) -> int:
        """Call until a call compiles nothing (at most ``limit`` calls): what compiling costs is then
        behind; returns the number of calls."""
        for calls in range(1, limit + 1):
            before = self.compiles
            self(*inputs)
            if self.compiles == before:
                break
        return calls

    def _call(self, inputs: tuple[torch.Tensor | None, ...], first: bool) -> torch.Tensor:
        """One call, timed and counted as compiling if dynamo made a graph in it (or, without its counter,
        if it is the first call for its input shape)."""
        device = next(x.device for x in inputs if x is not None)
        graphs = _graph_count()
        start = time.perf_counter()
        try:
            out = self.compiled(*inputs)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        except Exception as exc:
            if type(exc).__module__.startswith(("torch._dynamo", "torch._inductor")):
                raise CompileError(_failure(exc, self.backend, inputs)) from exc
            raise  # the model's own error (bad input, out of memory), which eager would raise too
        made = _graph_count() - graphs if graphs is not None else int(first)
        if made > 0 or (first and graphs is None):
            self.seconds += time.perf_counter() - start
            self.compiles += 1
            self.graphs += made
        return out


def _graph_count() -> int | None:
    """Graphs dynamo has made in this process (its statistics counter), None if this torch has none."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:  # pragma: no cover - a torch without dynamo's counters
        return None
    return int(counters["stats"]["unique_graphs"])


def _failure(exc: BaseException, backend: str, inputs: tuple[torch.Tensor | None, ...]) -> str:
    """One line: the flag, the backend, the input shapes and the innermost cause."""
    root = exc
    # dynamo wraps a backend's error (BackendCompilerFailed keeps it as inner_exception, not as its cause)
    while (inner := root.__cause__ or getattr(root, "inner_exception", None)) is not None:
        root = inner
    shapes = ", ".join("None" if x is None else "x".join(map(str, x.shape)) for x in inputs)
    cause = next((line.strip() for line in str(root).splitlines() if line.strip()), "")[:300]
    return (f"--compile: torch.compile ({backend} backend) failed on inputs {shapes}: {type(root).__name__}: "
            f"{cause} (run without --compile)")


def _pad(x: torch.Tensor | None, size: int, key: tuple[Any, ...] | None) -> torch.Tensor | None:
    """``x`` with its last item repeated up to ``size`` items, in the memory format it was compiled for."""
    if x is None or key is None:
        return x
    # an inference tensor, or not, as the input (dynamo guards on it: the other kind would recompile)
    with torch.inference_mode(x.is_inference()):
        x = torch.cat([x, x[-1:].expand(size - x.shape[0], *x.shape[1:])])
        return x.contiguous(memory_format=torch.channels_last) if key[3] else x.contiguous()


#: where a model keeps its compiled wrappers, one per backend: many scenes, or evaluations, of one model
#: compile once. An attribute of the model, not a global weak-keyed cache: the wrapper refers to the model,
#: so a cache entry would keep every compiled model alive; on the model it is a cycle the collector frees.
_ATTRIBUTE = "_m3rcr_compiled"


def compiled_model(model: nn.Module, backend: str = DEFAULT_BACKEND) -> CompiledModel:
    """The :class:`CompiledModel` of ``model`` (made on the first request, then reused)."""
    per_backend = model.__dict__.setdefault(_ATTRIBUTE, {})
    if backend not in per_backend:
        per_backend[backend] = CompiledModel(model, backend)
    return per_backend[backend]


def compile_backend(compile: bool | str) -> str | None:
    """The backend of a ``compile`` argument: False (no compile) -> None, True -> inductor, a name -> it."""
    if compile is False or compile is None:
        return None
    return DEFAULT_BACKEND if compile is True else str(compile)
