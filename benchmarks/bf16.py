"""float32 against bf16 on the CPU for the full-width Align-CR (issue 15, item 2), in one process.

Run by hand: ``.venv/bin/python benchmarks/bf16.py [--sizes 160 256] [--repeats 3] [--threads 2]
[--profile-size 160] [--seed 0]``. Builds the registry's ``aligncr`` at its default widths (eval mode, no
autograd; ``residual_init=False`` so that the random head is not the identity and the outputs differ
measurably) and times the batch-1 forward three ways, alternating, one warm-up each then the median of
``--repeats``: float32; ``torch.autocast("cpu", torch.bfloat16)`` on the float32 model; and the
``--precision bf16`` path (a copy converted by ``InferencePrecision``: bf16 weights, channels-last maps).
Reports the max and mean abs difference of each to float32 at each size, the same on the golden inputs of
``../shared/golden`` (the authors' weights for a reduced configuration) when present, and one
``torch.profiler`` run of each bf16 path: top ops, compute ops by input dtype, dtype casts.
"""

from __future__ import annotations

import argparse
import copy
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
from m3rcr.models.precision import InferencePrecision

MODES = ("float32", "autocast", "bf16")

GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "golden" / "aligncr_small.pt"
CASTS = ("aten::to", "aten::_to_copy", "aten::copy_")


class Variants:
    """The float32 model and its bf16 copy (``--precision bf16``); :meth:`forward` runs a :data:`MODES`."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.bf16 = InferencePrecision(copy.deepcopy(model), "bf16")

    def forward(self, cloudy: torch.Tensor, sar: torch.Tensor, mode: str) -> torch.Tensor:
        """One forward pass without autograd; the output as float32."""
        with torch.no_grad():
            if mode == "bf16":
                return self.bf16.model(*self.bf16.inputs(cloudy, sar)).float()
            with torch.autocast("cpu", torch.bfloat16, enabled=mode == "autocast"):
                return self.model(cloudy, sar).float()


def _diff(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    d = (a - b).abs()
    return d.max().item(), d.mean().item()


def time_size(variants: Variants, size: int, repeats: int, seed: int) -> dict[str, dict]:
    """Per mode: median seconds at ``size``, all runs, ratio to float32, output differences to float32."""
    gen = torch.Generator().manual_seed(seed)
    cloudy, sar = torch.rand(1, 4, size, size, generator=gen), torch.rand(1, 2, size, size, generator=gen)
    outs = {mode: variants.forward(cloudy, sar, mode) for mode in MODES}  # warm-ups
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(repeats):
        for mode in MODES:
            start = time.perf_counter()
            variants.forward(cloudy, sar, mode)
            times[mode].append(time.perf_counter() - start)
    base = statistics.median(times["float32"])
    result = {}
    for mode in MODES:
        mx, mean = _diff(outs[mode], outs["float32"])
        t = statistics.median(times[mode])
        result[mode] = {"s": t, "all": times[mode], "ratio": t / base, "max": mx, "mean": mean}
    return result


def golden_diff() -> dict[str, tuple[float, float]] | None:
    """Max and mean abs difference of each bf16 mode to float32 on the golden model and inputs (or None)."""
    if not GOLDEN.exists():
        return None
    golden = torch.load(GOLDEN, weights_only=True)
    with tempfile.TemporaryDirectory() as tmp:
        authors = Path(tmp) / "authors.pth"
        torch.save({"network": {f"module.{k}": v for k, v in golden["state_dict"].items()}}, authors)
        convert_checkpoint(authors, Path(tmp) / "ours.ckpt")
        variants = Variants(load_model(Path(tmp) / "ours.ckpt").eval())
    ref = variants.forward(golden["cloudy"], golden["sar"], "float32")
    return {mode: _diff(variants.forward(golden["cloudy"], golden["sar"], mode), ref) for mode in MODES[1:]}


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


def _dtype_census(variants: Variants, cloudy: torch.Tensor, sar: torch.Tensor, mode: str) -> dict[str, int]:
    census = _Census()
    with census:
        variants.forward(cloudy, sar, mode)
    return dict(census.counts)


def _profile_summary(variants: Variants, cloudy: torch.Tensor, sar: torch.Tensor) -> None:
    """Convolution (inclusive, self) and copy_ seconds of one profiled forward in each mode."""
    for mode in MODES:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            variants.forward(cloudy, sar, mode)
        ev = {e.key: e for e in prof.key_averages()}
        conv, copy_ = ev["aten::mkldnn_convolution"], ev.get("aten::copy_")
        total = sum(e.self_cpu_time_total for e in ev.values()) / 1e6
        copy_s, copies = (copy_.self_cpu_time_total / 1e6, copy_.count) if copy_ else (0.0, 0)
        print(f"  {mode}: total {total:.2f} s, mkldnn_convolution inclusive "
              f"{conv.cpu_time_total / 1e6:.2f} s (self {conv.self_cpu_time_total / 1e6:.2f} s), "
              f"copy_ self {copy_s:.2f} s in {copies} calls")


def profile_bf16(variants: Variants, size: int, seed: int, mode: str) -> None:
    """One profiled forward of bf16 ``mode``: top ops, compute ops by input dtype, dtype casts."""
    gen = torch.Generator().manual_seed(seed)
    cloudy, sar = torch.rand(1, 4, size, size, generator=gen), torch.rand(1, 2, size, size, generator=gen)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        variants.forward(cloudy, sar, mode)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    print(f"\nprofile, {mode} forward at {size}: {total:.2f} s of self CPU time")
    print(events.table(sort_by="self_cpu_time_total", row_limit=15))
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=12))
    print("compute op [input dtypes]: calls (one unprofiled pass)")
    for key, n in sorted(_dtype_census(variants, cloudy, sar, mode).items(), key=lambda kv: -kv[1]):
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
    for e in events:
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
    variants = Variants(create_model("aligncr", residual_init=False).eval())
    rows = []
    for size in args.sizes:
        r = time_size(variants, size, args.repeats, args.seed)
        rows.append((size, r))
        print(f"{size}: " + "; ".join(
            f"{m} {r[m]['s']:.2f} s {[round(t, 2) for t in r[m]['all']]} ratio {r[m]['ratio']:.2f} "
            f"max {r[m]['max']:.1e} mean {r[m]['mean']:.1e}" for m in MODES), flush=True)
    g = golden_diff()
    print("golden: not found" if g is None else "golden inputs (reduced config, authors' weights): "
          + "; ".join(f"{m}: max abs diff {mx:.2e}, mean abs diff {mean:.2e}" for m, (mx, mean) in g.items()))
    print("\n| size | float32 (s) | bf16 autocast (s) | ratio | bf16 converted (s) | ratio | "
          "max / mean abs diff (autocast) | max / mean abs diff (converted) |")
    print("|---|---|---|---|---|---|---|---|")
    for size, r in rows:
        a, c = r["autocast"], r["bf16"]
        print(f"| {size} x {size} | {r['float32']['s']:.2f} | {a['s']:.2f} | {a['ratio']:.2f} | "
              f"{c['s']:.2f} | {c['ratio']:.2f} | {a['max']:.1e} / {a['mean']:.1e} | "
              f"{c['max']:.1e} / {c['mean']:.1e} |")
    if args.profile_size:
        for mode in ("bf16", "autocast"):
            profile_bf16(variants, args.profile_size, args.seed, mode)
        gen = torch.Generator().manual_seed(args.seed)
        size = args.profile_size
        _profile_summary(variants, torch.rand(1, 4, size, size, generator=gen), torch.rand(1, 2, size, size,
                                                                                          generator=gen))


if __name__ == "__main__":
    main()
