"""Training-step time of every configs/sen12mscr/ model at full width: 13 + 2 bands, 256 x 256, batch 1.

Run by hand: ``.venv/bin/python benchmarks/sen12mscr_steps.py [--steps 2] [--limit 60] [--budget 540]
[--device cpu] [--models dsen2cr ...]``. Each model trains on random 256 x 256 tensors through the real
training modules (a GAN updates its discriminator and generator in each step), one warm-up step, then
``--steps`` timed steps. A model whose step takes longer than ``--limit`` seconds is stopped there; models not
started when ``--budget`` seconds have passed are skipped. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, Dataset

from m3rcr.training import run as _run  # noqa: F401  (drops Lightning's logger advertisement, as m3rcr train does)
from m3rcr.training.config import load_config, parse_config
from m3rcr.training.module import CloudRemovalModule, GANModule

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "sen12mscr"
#: cheapest first, so that a short budget still measures most models
ORDER = ("spagan", "mcgan", "saroptcgan", "glfcr", "aligncr_wo_sar", "aligncr_wo_align", "aligncr", "dsen2cr")


class RandomPatches(Dataset):
    """``n`` random SEN12MS-CR-shaped items (seeded): 13-band cloudy and cloud-free, 2-band SAR, a cloud mask."""

    def __init__(self, n: int, size: int, seed: int = 0) -> None:
        self.n, self.size, self.seed = n, size, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed + i)
        s = self.size
        return {"cloudy": torch.rand(13, s, s, generator=g), "cloudfree": torch.rand(13, s, s, generator=g),
                "sar": torch.rand(2, s, s, generator=g), "cloudmask": (torch.rand(s, s, generator=g) > 0.5).float()}


class StepTimer(Callback):
    """Seconds per training step; stops the run after a step longer than ``limit``."""

    def __init__(self, limit: float) -> None:
        self.limit, self.times, self._start = limit, [], 0.0

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.times.append(time.perf_counter() - self._start)
        if self.times[-1] > self.limit:
            trainer.should_stop = True


def time_model(name: str, steps: int, limit: float, device: str, size: int = 256) -> dict[str, Any]:
    """Warm-up plus ``steps`` timed steps of the paper-size model of configs/sen12mscr/NAME.yaml."""
    cfg = parse_config(load_config(CONFIGS / f"{name}.yaml"))
    if cfg.gan is not None:
        module: L.LightningModule = GANModule(cfg.model, cfg.loss, cfg.gan, cfg.optim, cfg.schedule)
    else:
        module = CloudRemovalModule(cfg.model, cfg.loss, cfg.optim, cfg.schedule)
    params = sum(p.numel() for p in module.net.parameters())
    timer = StepTimer(limit)
    trainer = L.Trainer(accelerator=device, devices=1, max_epochs=1, limit_train_batches=1 + steps,
                        limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer])
    trainer.fit(module, DataLoader(RandomPatches(1 + steps, size), batch_size=1))
    warm, timed = timer.times[0], timer.times[1:]
    return {"name": name, "params": params, "warm": warm, "timed": timed,
            "stopped": any(t > limit for t in timer.times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(ORDER), choices=ORDER)
    parser.add_argument("--steps", type=int, default=2, help="timed steps after the warm-up (default: 2)")
    parser.add_argument("--limit", type=float, default=60.0, help="stop a model after a step this long (s)")
    parser.add_argument("--budget", type=float, default=540.0, help="start no model after this many seconds")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    start = time.perf_counter()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, 256 x 256, batch 1\n")
    print("| model | parameters (G) | warm-up step | timed steps | median step |\n|---|---|---|---|---|")
    for name in args.models:
        if time.perf_counter() - start > args.budget:
            print(f"| {name} | | skipped: budget of {args.budget:.0f} s spent | | |", flush=True)
            continue
        r = time_model(name, args.steps, args.limit, args.device)
        timed = ", ".join(f"{t:.1f} s" for t in r["timed"]) or "-"
        median = f"{statistics.median(r['timed']):.1f} s" if r["timed"] else "-"
        note = f" (stopped: a step over {args.limit:.0f} s)" if r["stopped"] else ""
        print(f"| {name} | {r['params'] / 1e6:.2f} M | {r['warm']:.1f} s | {timed} | {median}{note} |", flush=True)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
