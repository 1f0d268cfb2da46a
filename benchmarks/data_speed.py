"""Speed of the synthetic generator and of the dataset reader, on one CPU core.

Run by hand: ``.venv/bin/python benchmarks/data_speed.py [--samples 100]``. Prints a Markdown table
for docs/benchmarks.md, with the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, as the issue asks
    import torch

    torch.set_num_threads(1)
    from m3rcr.data import M3RCRDataset
    from m3rcr.data.synthetic import generate_dataset

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        times = []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            root = generate_dataset(Path(tmp) / f"d{r}", args.samples, 0, seed=r)
            times.append(time.perf_counter() - t0)
        rows.append((f"`m3rcr synth`: {args.samples} samples", f"{statistics.median(times):.2f} s",
                     f"{1000 * statistics.median(times) / args.samples:.0f} ms / sample"))
        for mode, extra in (("nearest", {}), ("geo", {}), ("geo", {"sar_resampling": "bilinear"}),
                            ("native", {})):
            ds = M3RCRDataset(root, "train", sar_mode=mode, **extra)
            t0 = time.perf_counter()
            for i in range(len(ds)):
                ds[i]
            dt = time.perf_counter() - t0
            label = f"read 300x300 samples, SAR `{mode}`" + (" bilinear" if extra else "")
            rows.append((label, f"{dt:.2f} s / {len(ds)}", f"{1000 * dt / len(ds):.1f} ms / sample"))
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, 1 used; "
          f"Python {platform.python_version()}, torch {torch.__version__}\n")
    print("| task | time | per sample |\n|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
