"""Today's block formulations against the fast paths (issue 15), timed in the same process.

Run by hand: ``.venv/bin/python benchmarks/fast_paths.py [--sizes 160 256] [--train-size 96] [--batch 2]
[--repeats 3] [--threads 2] [--model aligncr]``. Builds the registry's full-width model once and times, with
``m3rcr.models.blocks.fast_paths`` off (the original formulations) and on, alternating so that drift of a
shared machine hits both alike: the float32 forward (batch 1, eval, no autograd) at each size, and one
training step (forward, L1 loss, backward, Adam) at ``--batch`` x ``--train-size``. One warm-up per variant,
then the median of ``--repeats``. Also reports the largest output difference between the two paths, the CPU
(``lscpu``) and prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable

import torch
from _machine import cpu_description  # benchmarks/_machine.py, beside this script

from m3rcr.models import create_model
from m3rcr.models.blocks import fast_paths


def _time_pair(model: torch.nn.Module, run: Callable[[], torch.Tensor], repeats: int
               ) -> tuple[float, float, float]:
    """Median seconds of ``run`` with the fast paths off and on, and the max abs difference of the outputs."""
    times: dict[bool, list[float]] = {False: [], True: []}
    outs: dict[bool, torch.Tensor] = {}
    for enabled in (False, True):  # warm-ups
        with fast_paths(model, enabled):
            outs[enabled] = run()
    for _ in range(repeats):
        for enabled in (False, True):
            with fast_paths(model, enabled):
                start = time.perf_counter()
                run()
                times[enabled].append(time.perf_counter() - start)
    diff = (outs[True] - outs[False]).abs().max().item()
    return statistics.median(times[False]), statistics.median(times[True]), diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="aligncr")
    parser.add_argument("--sizes", type=int, nargs="+", default=[160, 256])
    parser.add_argument("--train-size", type=int, default=96, help="0 skips the training step")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bands", type=int, default=4, help="optical bands of the model (its default config)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"CPU: {cpu_description()}\ntorch {torch.__version__}, {args.threads} threads, float32\n")
    # residual_init=False: the default init zeroes the last layer, which would hide any output difference
    model = create_model(args.model, residual_init=False).eval()
    rows = []
    for size in args.sizes:
        cloudy, sar = torch.rand(1, args.bands, size, size), torch.rand(1, 2, size, size)

        def forward(cloudy: torch.Tensor = cloudy, sar: torch.Tensor = sar) -> torch.Tensor:
            with torch.no_grad():
                return model(cloudy, sar)

        before, after, diff = _time_pair(model, forward, args.repeats)
        rows.append((f"forward, batch 1, {size} x {size}", before, after, f"{diff:.1e}"))
    if args.train_size:
        model.train()
        size, b = args.train_size, args.batch
        cloudy, sar = torch.rand(b, args.bands, size, size), torch.rand(b, 2, size, size)
        target = torch.rand(b, args.bands, size, size)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-7)  # tiny steps: both paths see ~the same weights

        def step() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            out = model(cloudy, sar)
            torch.nn.functional.l1_loss(out, target).backward()
            optimizer.step()
            return out.detach()

        before, after, diff = _time_pair(model, step, args.repeats)
        rows.append((f"training step (Adam), batch {b}, {size} x {size}", before, after, "(weights move)"))
    print("| | original blocks | fast paths | ratio | max abs difference |\n|---|---|---|---|---|")
    for name, before, after, diff in rows:
        print(f"| {name} | {before:.2f} s | {after:.2f} s | {after / before:.2f} | {diff} |")
    print(f"\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB")


if __name__ == "__main__":
    main()
