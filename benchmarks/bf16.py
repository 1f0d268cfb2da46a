"""float32 against bf16 autocast on the CPU for the full-width Align-CR (issue 15, item 2), in one process.

Run by hand: ``.venv/bin/python benchmarks/bf16.py [--sizes 160 256] [--repeats 3] [--threads 2]
[--profile-size 160] [--seed 0]``. Builds the registry's ``aligncr`` at its default widths (eval mode, no
autograd; ``residual_init=False`` so that the random head is not the identity and the outputs differ
measurably) and times the batch-1 forward in float32 and under ``torch.autocast("cpu", torch.bfloat16)``,
alternating, one warm-up each then the median of ``--repeats``. Reports the max and mean abs difference of
the two outputs at each size, the same on the golden inputs of ``../shared/golden`` (the authors' weights
for a reduced configuration) when present, and one ``torch.profiler`` run under bf16: time per dtype of the
convolutions, and the count and time of the dtype casts (``aten::to`` / ``aten::_to_copy``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from _machine import cpu_description  # benchmarks/_machine.py, beside this script
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from m3rcr.models import create_model, load_model
from m3rcr.models.convert import convert_checkpoint

GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "golden" / "aligncr_small.pt"
CASTS = ("aten::to", "aten::_to_copy", "aten::copy_")


def _forward(model: torch.nn.Module, cloudy: torch.Tensor, sar: torch.Tensor, bf16: bool) -> torch.Tensor:
    """One forward pass, under bf16 autocast when ``bf16``; the output as float32."""
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        return model(cloudy, sar).float()


def _diff(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    d = (a - b).abs()
    return d.max().item(), d.mean().item()


def time_size(model: torch.nn.Module, size: int, repeats: int, seed: int) -> dict[str, float]:
    """Median float32 and bf16 forward seconds at ``size`` and the output differences."""
    gen = torch.Generator().manual_seed(seed)
    cloudy, sar = torch.rand(1, 4, size, size, generator=gen), torch.rand(1, 2, size, size, generator=gen)
    outs = {bf16: _forward(model, cloudy, sar, bf16) for bf16 in (False, True)}  # warm-ups
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats):
        for bf16 in (False, True):
            start = time.perf_counter()
            _forward(model, cloudy, sar, bf16)
            times[bf16].append(time.perf_counter() - start)
    fp32, bf = statistics.median(times[False]), statistics.median(times[True])
    mx, mean = _diff(outs[True], outs[False])
    return {"fp32": fp32, "bf16": bf, "ratio": bf / fp32, "max": mx, "mean": mean,
            "fp32_all": times[False], "bf16_all": times[True]}


def golden_diff() -> tuple[float, float] | None:
    """Max and mean abs difference bf16 vs float32 on the golden model and inputs, None without them."""
    if not GOLDEN.exists():
        return None
    golden = torch.load(GOLDEN, weights_only=True)
    with tempfile.TemporaryDirectory() as tmp:
        authors = Path(tmp) / "authors.pth"
        torch.save({"network": {f"module.{k}": v for k, v in golden["state_dict"].items()}}, authors)
        convert_checkpoint(authors, Path(tmp) / "ours.ckpt")
        model = load_model(Path(tmp) / "ours.ckpt").eval()
    ref = _forward(model, golden["cloudy"], golden["sar"], False)
    return _diff(_forward(model, golden["cloudy"], golden["sar"], True), ref)


class _Census(TorchDispatchMode):
    """Counts the compute ops by their floating input dtypes, and the casts by (from, to)."""

    OPS = ("convolution", "mkldnn_convolution", "addmm", "mm", "bmm", "grid_sampler_2d", "_softmax",
           "native_layer_norm", "_to_copy", "gelu", "sigmoid", "upsample_bilinear2d", "im2col")

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = defaultdict(int)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in self.OPS:
            dts = sorted({str(a.dtype).removeprefix("torch.") for a in args if isinstance(a, torch.Tensor)
                          and a.is_floating_point()})
            if name == "_to_copy":
                dts = [dts[0] if dts else "?", "->", str((kwargs or {}).get("dtype")).removeprefix("torch.")]
            self.counts[f"{name} [{' '.join(dts)}]"] += 1
        return func(*args, **(kwargs or {}))


def _dtype_census(model: torch.nn.Module, cloudy: torch.Tensor, sar: torch.Tensor) -> dict[str, int]:
    census = _Census()
    with census:
        _forward(model, cloudy, sar, True)
    return dict(census.counts)


def _profile_summary(model: torch.nn.Module, cloudy: torch.Tensor, sar: torch.Tensor) -> None:
    """Convolution (inclusive, self) and copy_ seconds of one profiled forward in each precision."""
    for bf16 in (False, True):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            _forward(model, cloudy, sar, bf16)
        ev = {e.key: e for e in prof.key_averages()}
        conv, copy = ev["aten::mkldnn_convolution"], ev.get("aten::copy_")
        total = sum(e.self_cpu_time_total for e in ev.values()) / 1e6
        print(f"  {'bf16' if bf16 else 'float32'}: total {total:.2f} s, mkldnn_convolution inclusive "
              f"{conv.cpu_time_total / 1e6:.2f} s (self {conv.self_cpu_time_total / 1e6:.2f} s), copy_ self "
              f"{(copy.self_cpu_time_total if copy else 0) / 1e6:.2f} s in {copy.count if copy else 0} calls")


def profile_bf16(model: torch.nn.Module, size: int, seed: int) -> None:
    """One profiled bf16 forward: top ops, convolution time per input dtype, dtype casts."""
    gen = torch.Generator().manual_seed(seed)
    cloudy, sar = torch.rand(1, 4, size, size, generator=gen), torch.rand(1, 2, size, size, generator=gen)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        _forward(model, cloudy, sar, True)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    print(f"\nprofile, bf16 forward at {size}: {total:.2f} s of self CPU time")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    print("compute op [input dtypes]: calls (one unprofiled bf16 pass)")
    for key, n in sorted(_dtype_census(model, cloudy, sar).items(), key=lambda kv: -kv[1]):
        print(f"  {key}: {n}")
    parents: dict[str, float] = defaultdict(float)
    for e in prof.events():
        if e.name == "aten::copy_":
            parent = e.cpu_parent
            while parent is not None and parent.name in ("aten::to", "aten::_to_copy", "aten::copy_"):
                parent = parent.cpu_parent
            parents[parent.name if parent is not None else "(top level)"] += e.self_cpu_time_total / 1e6
    print("aten::copy_ self time by the op that called it: " + ", ".join(
        f"{k} {v:.3f} s" for k, v in sorted(parents.items(), key=lambda kv: -kv[1])[:6]))
    _profile_summary(model, cloudy, sar)
    for e in prof.key_averages():
        if e.key in CASTS:
            print(f"  cast {e.key}: {e.count} calls, self {e.self_cpu_time_total / 1e6:.3f} s, "
                  f"inclusive {e.cpu_time_total / 1e6:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[160, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile-size", type=int, default=160, help="0: no profile")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    print(f"CPU: {cpu_description()}; torch {torch.__version__}, {args.threads} threads")
    print(f"oneDNN bf16 supported: {torch.backends.mkldnn.is_available()}, "
          f"cpu capability: {torch.backends.cpu.get_cpu_capability()}")
    model = create_model("aligncr", residual_init=False).eval()
    rows = []
    for size in args.sizes:
        r = time_size(model, size, args.repeats, args.seed)
        rows.append((size, r))
        print(f"{size}: float32 {r['fp32']:.2f} s {[round(t, 2) for t in r['fp32_all']]}, bf16 {r['bf16']:.2f} s "
              f"{[round(t, 2) for t in r['bf16_all']]}, ratio {r['ratio']:.2f}, max abs diff {r['max']:.2e}, "
              f"mean abs diff {r['mean']:.2e}", flush=True)
    g = golden_diff()
    print("golden: not found" if g is None else f"golden inputs (reduced config, authors' weights): "
          f"max abs diff {g[0]:.2e}, mean abs diff {g[1]:.2e}")
    print("\n| size | float32 (s) | bf16 autocast (s) | ratio | max abs diff | mean abs diff |\n|---|---|---|---|---|---|")
    for size, r in rows:
        print(f"| {size} x {size} | {r['fp32']:.2f} | {r['bf16']:.2f} | {r['ratio']:.2f} | {r['max']:.1e} | "
              f"{r['mean']:.1e} |")
    if args.profile_size:
        profile_bf16(model, args.profile_size, args.seed)


if __name__ == "__main__":
    main()
