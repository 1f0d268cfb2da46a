"""Parameters, MACs and CPU/GPU latency of the registered models at full width.

Run by hand: ``.venv/bin/python benchmarks/model_complexity.py [--sizes 160 300] [--repeats 3]
[--device cpu] [--models aligncr ...]``. Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse

import torch

from m3rcr.evaluation.complexity import measure
from m3rcr.models import create_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["aligncr", "aligncr_wo_align", "aligncr_wo_sar"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[160, 300])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (at least 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    dtype = getattr(torch, args.dtype)
    print("| model | input | parameters | GMACs | latency (median) | device |\n|---|---|---|---|---|---|")
    for name in args.models:
        model = create_model(name)
        for size in args.sizes:
            r = measure(model, name, size=(size, size), repeats=args.repeats, device=args.device, dtype=dtype)
            print(f"| {name} | {size}x{size} | {r.parameters:,} | {r.macs / 1e9:.2f} | {r.latency_ms:.0f} ms | "
                  f"{r.device}, {r.dtype}, {r.threads} threads |", flush=True)


if __name__ == "__main__":
    main()
