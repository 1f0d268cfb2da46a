"""Peak memory and time of one Align-CR training step with and without activation checkpointing (issue 15).

Run by hand: ``.venv/bin/python benchmarks/checkpointing_memory.py [--size 96] [--batch 2] [--steps 3]
[--threads 2] [--model aligncr]``. The model is configs/aligncr.yaml's (the paper's full width) unless
``--model`` names another. Each variant runs in a fresh process: random inputs, the config's loss, Adam, then
``--steps`` training steps (forward, backward, Adam step; the first one also allocates Adam's state). A
process reports its peak resident memory (``ru_maxrss``) after the imports, after building the model and
optimizer, and after the steps, the median step time, and the bytes autograd keeps for the backward pass
(tensors saved outside checkpointed regions, measured once with saved-tensor hooks). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def _rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _held_mib(model: Any, cloudy: Any, sar: Any) -> float:
    """MiB of the tensors autograd keeps between one forward and its backward (distinct storages)."""
    import torch

    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(cloudy, sar)
    del out
    return sum(kept.values()) / 2**20


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One variant in this process: the figures of one row."""
    import torch

    from m3rcr.models import create_model
    from m3rcr.training.config import load_config
    from m3rcr.training.losses import LOSSES

    torch.set_num_threads(args.threads)
    rss_imports = _rss_mib()
    cfg = load_config(str(REPO / "configs" / "aligncr.yaml"))
    torch.manual_seed(0)
    name = args.model or cfg["model"]["name"]
    config = {**(cfg["model"]["config"] if name == cfg["model"]["name"] else {}), "checkpointing": args.variant == "on"}
    model = create_model(name, **config).train()
    loss_fn = LOSSES.build(cfg["loss"]["name"], **cfg["loss"]["config"])
    optim = torch.optim.Adam(model.parameters(), lr=cfg["optim"]["lr"], betas=tuple(cfg["optim"]["betas"]))
    g = torch.Generator().manual_seed(1)
    shape = (args.batch, 4, args.size, args.size)
    cloudy, target = torch.rand(shape, generator=g), torch.rand(shape, generator=g)
    sar = torch.rand(args.batch, 2, args.size, args.size, generator=g) if model.spec.uses_sar else None
    mask = (torch.rand(args.batch, args.size, args.size, generator=g) > 0.5).float()
    rss_model = _rss_mib()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        optim.zero_grad(set_to_none=True)
        loss = loss_fn(model(cloudy, sar), target, mask).mean()
        loss.backward()
        optim.step()
        times.append(time.perf_counter() - start)
    rss_peak = _rss_mib()
    held = _held_mib(model, cloudy, sar)  # after the peak was read: it does not change it
    return {"variant": args.variant, "model": name, "size": args.size, "batch": args.batch, "threads": args.threads,
            "step_s": statistics.median(times), "steps_s": times, "rss_imports_mib": rss_imports,
            "rss_model_mib": rss_model, "rss_peak_mib": rss_peak, "held_mib": held}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default=None, help="a registry name (default: configs/aligncr.yaml's)")
    parser.add_argument("--variant", choices=("off", "on"), help=argparse.SUPPRESS)  # the worker process
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(worker(args)))
        return
    rows = []
    for variant in ("off", "on"):
        cmd = [sys.executable, __file__, "--variant", variant, *sys.argv[1:]]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode:
            sys.exit(f"{variant}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print("| checkpointing | input | batch | step (median) | peak RSS | RSS before the steps | peak - before "
          "| held for backward |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['size']}x{r['size']} | {r['batch']} | {r['step_s']:.2f} s "
              f"| {r['rss_peak_mib'] / 1024:.2f} GiB | {r['rss_model_mib'] / 1024:.2f} GiB "
              f"| {(r['rss_peak_mib'] - r['rss_model_mib']) / 1024:.2f} GiB | {r['held_mib'] / 1024:.2f} GiB |")
    off, on = rows
    print(f"\nratios on/off: peak RSS {on['rss_peak_mib'] / off['rss_peak_mib']:.2f}, peak above the model "
          f"{(on['rss_peak_mib'] - on['rss_model_mib']) / (off['rss_peak_mib'] - off['rss_model_mib']):.2f}, "
          f"held {on['held_mib'] / off['held_mib']:.3f}, step time {on['step_s'] / off['step_s']:.2f}")
    print(json.dumps(rows), file=sys.stderr)


if __name__ == "__main__":
    main()
