"""A run's training curves: per-epoch values from its CSV log, drawn as ``RUN/training_curves.png``."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def history_from_csv(path: str | Path) -> list[dict[str, float]]:
    """Per-epoch training / validation values from a run's CSV log (``RUN/logs/csv/metrics.csv``), in the
    form :func:`training_curves` draws: one dict per epoch with the keys logged in it."""
    keys = ("train/loss_epoch", "val/loss", "val/psnr", "val/miou")
    epochs: dict[int, dict[str, float]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            if not row.get("epoch"):
                continue
            e = int(float(row["epoch"]))
            entry = epochs.setdefault(e, {"epoch": float(e)})
            for k in keys:
                if row.get(k):
                    entry[k] = float(row[k])
            if row.get("step"):
                entry["step"] = max(entry.get("step", 0.0), float(row["step"]))
    return [epochs[e] for e in sorted(epochs)]


def run_history(run: str | Path) -> list[dict[str, float]]:
    """The per-epoch history of the run folder ``run`` (from its CSV log), with a clear error when there is
    nothing to draw yet."""
    log = Path(run) / "logs" / "csv" / "metrics.csv"
    if not log.is_file():
        raise FileNotFoundError(f"{log}: no CSV log (is {run} a run folder of m3rcr train?)")
    history = history_from_csv(log)
    if not history:
        raise ValueError(f"{log}: no epoch has finished yet")
    if not any(set(entry) - {"epoch", "step"} for entry in history):  # epochs, but nothing to draw
        raise ValueError(f"{log}: no loss or score column (train/loss_epoch, val/loss, val/psnr or val/miou)")
    return history


def training_curves(history: Sequence[Mapping[str, float]]) -> Figure:
    """Per-epoch training and validation loss (left) and validation PSNR or mIoU (right) of one run."""
    fig = Figure(figsize=(10, 3.4), layout="constrained")
    ax_loss, ax_score = fig.subplots(1, 2)
    epochs = np.array([h["epoch"] + 1 for h in history])

    def series(key: str) -> np.ndarray:
        return np.array([h.get(key, np.nan) for h in history], dtype=float)

    for key, label in (("train/loss_epoch", "training loss"), ("val/loss", "validation loss")):
        y = series(key)
        ok = np.isfinite(y)  # validation may run every few epochs only
        if ok.any():
            ax_loss.plot(epochs[ok], y[ok], marker="o", ms=3, label=label)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.xaxis.get_major_locator().set_params(integer=True)
    ax_loss.set_title("loss per epoch", fontsize=10)
    ax_loss.grid(alpha=0.3)
    if ax_loss.lines:
        ax_loss.legend(fontsize=8)
    score, title = ("val/psnr", "validation PSNR (dB)")
    if not np.isfinite(series(score)).any() and np.isfinite(series("val/miou")).any():
        score, title = "val/miou", "validation mIoU (%)"
    y = series(score)
    if np.isfinite(y).any():
        ok = np.isfinite(y)
        ax_score.plot(epochs[ok], y[ok], marker="o", ms=3, color="tab:green")
        best = int(np.nanargmax(y))
        ax_score.plot(epochs[best], y[best], marker="*", ms=10, color="tab:red", ls="none",
                      label=f"best {y[best]:.2f} (epoch {epochs[best]:.0f})")
        ax_score.legend(fontsize=8, loc="lower right")
    else:
        ax_score.text(0.5, 0.5, "no validation", ha="center", va="center", transform=ax_score.transAxes)
    ax_score.set_xlabel("epoch")
    ax_score.set_ylabel(title.replace("validation ", ""))
    ax_score.xaxis.get_major_locator().set_params(integer=True)
    ax_score.set_title(title, fontsize=10)
    ax_score.grid(alpha=0.3)
    return fig
