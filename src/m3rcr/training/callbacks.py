"""Callbacks: our-format model checkpoints, random-number-generator state for exact resumption, training
curves, and plain progress lines for logs."""

from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path
from typing import IO, Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint

from m3rcr.models.checkpoint import save_checkpoint
from m3rcr.utils.progress import format_duration


class ExportCheckpoints(Callback):
    """Write ``last.ckpt`` after every epoch and ``best.ckpt`` on the best ``monitor`` value (the last
    epoch's model when there is no validation), in the m3rcr checkpoint format (model name,
    configuration and weights; ``m3rcr.load_model`` reads them).

    ``data``: what the model was trained on (:func:`m3rcr.models.checkpoint.data_record`), saved as
    ``meta["data"]`` so that evaluation and scene prediction read bands and scaling from the checkpoint.
    """

    def __init__(self, dirpath: str | Path, monitor: str = "val/psnr", mode: str = "max",
                 data: dict[str, Any] | None = None) -> None:
        self.dirpath = Path(dirpath)
        self.monitor, self.mode = monitor, mode
        self.data = dict(data) if data is not None else None
        self.best: float | None = None

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # reading the metrics synchronises values logged with sync_dist: every rank must take part
        value = trainer.callback_metrics.get(self.monitor)
        if not trainer.is_global_zero:
            return
        extra: dict[str, Any] = {"epoch": trainer.current_epoch, "global_step": trainer.global_step}
        if self.data is not None:
            extra["data"] = self.data
        save_checkpoint(pl_module.net, self.dirpath / "last.ckpt", extra=extra)
        if value is None:  # no validation data: the latest model is the best we know
            save_checkpoint(pl_module.net, self.dirpath / "best.ckpt", extra={**extra, "best_by": "last epoch"})
            return
        value = float(value)
        if math.isfinite(value) and self._better(value):
            self.best = value
            save_checkpoint(pl_module.net, self.dirpath / "best.ckpt", extra={**extra, self.monitor: value})

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best")


class RNGState(Callback):
    """Saves and restores the torch (CPU and CUDA), NumPy and Python generators with the training state,
    so that a resumed run draws the same crops, flips and shuffles as an uninterrupted one.

    Everything is stored as tensors and plain values, so the checkpoint loads with ``weights_only=True``.
    """

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        version, internal, py_gauss = random.getstate()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": {"version": version, "internal": list(internal), "gauss": py_gauss},
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        n = state_dict["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        p = state_dict["python"]
        random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


class SaveTrainingState(Checkpoint):
    """Write the full training state (``trainer.save_checkpoint``) to ``path`` after every epoch, and every
    ``every_n_steps`` optimiser steps if given, atomically: a killed run leaves the previous state intact.

    Saved in ``on_train_epoch_end``, after the epoch's validation, so a resumed run starts the next epoch;
    as a :class:`~lightning.pytorch.callbacks.Checkpoint`, Lightning runs it after the module's own
    epoch-end hook (where the GAN trainer steps its schedulers), so the saved state includes that.
    """

    #: key of the saved state that holds how many processes trained it (the process group's size)
    PROCESSES_KEY = "m3rcr_processes"

    def __init__(self, path: str | Path, every_n_steps: int | None = None) -> None:
        self.path = Path(path)
        self.every_n_steps = every_n_steps

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
                           ) -> None:
        # how many processes trained this state, from the process group itself (not the launcher's log lines)
        dist = torch.distributed
        checkpoint[self.PROCESSES_KEY] = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    def _save(self, trainer: L.Trainer) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(tmp, weights_only=False)  # the full state; every rank takes part, rank 0 writes
        if trainer.is_global_zero:
            tmp.replace(self.path)
        trainer.strategy.barrier("m3rcr-save-state")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._save(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.every_n_steps and trainer.global_step > 0 and trainer.global_step % self.every_n_steps == 0:
            self._save(trainer)


class TrainingCurves(Callback):
    """After every epoch, append the epoch's training loss, validation loss and validation PSNR (or
    mIoU) to a history and draw ``path`` (a PNG): losses on the left, the validation score on the right.

    The history is part of the saved training state, so a resumed run continues the same curves.
    """

    KEYS = ("train/loss_epoch", "val/loss", "val/psnr", "val/miou")

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.history: list[dict[str, float]] = []
        self._validated = False

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated = True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = {k: trainer.callback_metrics.get(k) for k in self.KEYS}  # every rank reads (synchronised values)
        validated, self._validated = self._validated, False
        row = {"epoch": float(trainer.current_epoch), "step": float(trainer.global_step)}
        # validation values stay in callback_metrics on epochs without validation: only take fresh ones
        row.update({k: float(v) for k, v in metrics.items()
                    if v is not None and (validated or not k.startswith("val/"))})
        self.history = [h for h in self.history if h["epoch"] < row["epoch"]] + [row]
        if trainer.is_global_zero:
            from m3rcr.training.curves import training_curves
            from m3rcr.utils.files import atomic_path

            fig = training_curves(self.history)
            with atomic_path(self.path) as tmp:
                fig.savefig(tmp, dpi=100)

    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(h) for h in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(h) for h in state_dict.get("history", [])]


class ProgressLog(Callback):
    """Progress as plain lines, for output that is not a terminal (a log file, a batch job), where a
    progress bar's carriage-return redraws would pile up: a line every ``interval`` seconds during an
    epoch (``epoch 3/30 step 120/570 train/loss 0.0123 (2 min 10 s)``) and one at the end of each epoch
    with its training and validation values. Only the first process writes.
    """

    def __init__(self, interval: float = 60.0, file: IO[str] | None = None) -> None:
        self.interval = interval
        self.file = file
        self._start = self._epoch_start = self._last = time.monotonic()
        self._validated = False

    def _write(self, text: str) -> None:
        print(text, file=self.file if self.file is not None else sys.stdout, flush=True)
        self._last = time.monotonic()

    @staticmethod
    def _epoch(trainer: L.Trainer) -> str:
        total = trainer.max_epochs
        return f"epoch {trainer.current_epoch + 1}" + (f"/{total}" if total is not None and total > 0 else "")

    @staticmethod
    def _values(metrics: dict[str, Any]) -> str:
        return "  ".join(f"{k} {float(v):.4g}" for k, v in metrics.items())

    def _due(self, trainer: L.Trainer) -> bool:
        return trainer.is_global_zero and time.monotonic() - self._last >= self.interval

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._last = time.monotonic()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.monotonic()
        self._validated = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self._due(trainer):
            return
        n = trainer.num_training_batches
        steps = f"step {batch_idx + 1}" + (f"/{n}" if math.isfinite(n) else "")
        # the per-step values shown in a progress bar ("train/loss_step" and so on)
        step_values = {k.removesuffix("_step"): v for k, v in trainer.progress_bar_metrics.items()
                       if k.endswith("_step")}
        self._write(f"{self._epoch(trainer)} {steps} {self._values(step_values)} "
                    f"({format_duration(time.monotonic() - self._epoch_start)})")

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if trainer.sanity_checking or not self._due(trainer):
            return
        n = trainer.num_val_batches[dataloader_idx] if dataloader_idx < len(trainer.num_val_batches) else math.inf
        self._write(f"{self._epoch(trainer)} validation {batch_idx + 1}" + (f"/{n}" if math.isfinite(n) else ""))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated = True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = {k: v for k, v in trainer.callback_metrics.items()}  # every rank reads (synchronised values)
        if not trainer.is_global_zero:
            return
        values: dict[str, Any] = {}
        for key in sorted(metrics, key=lambda k: (k.startswith("val/"), k)):
            if not key.startswith(("train/", "val/")) or key.endswith("_step"):
                continue  # learning rates, per-step values
            if key.startswith("val/") and not self._validated:
                continue  # validation values stay in callback_metrics on epochs without validation
            values[key.removesuffix("_epoch")] = metrics[key]  # "train/loss_epoch" and "train/loss" are one
        now = time.monotonic()
        self._write(f"{self._epoch(trainer)}: {self._values(values)} "
                    f"({format_duration(now - self._epoch_start)}, {format_duration(now - self._start)} in all)")
