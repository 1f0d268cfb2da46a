"""Training commands: train, curves."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from m3rcr.cli.args import add_overwrite, add_precision_arg
from m3rcr.utils.files import check_output


def split_overrides(args: argparse.Namespace, extra: Sequence[str]) -> list[str]:
    """``--set a.b=v`` and bare ``a.b=v`` / ``--a.b v`` / ``--a.b=v`` arguments as ``a.b=v`` strings."""
    out = list(getattr(args, "set", None) or [])
    rest = list(extra)
    while rest:
        item = rest.pop(0)
        if item.startswith("--") and "." in item.split("=", 1)[0]:
            key = item[2:]
            if "=" in key:
                out.append(key)
            elif rest:
                out.append(f"{key}={rest.pop(0)}")
            else:
                raise ValueError(f"{item} needs a value")
        elif "=" in item and not item.startswith("-"):
            out.append(item)
        else:
            raise ValueError(f"unrecognised argument {item!r} (overrides look like section.key=value)")
    return out


#: ``--precision`` (canonical name) -> Lightning's ``trainer.precision``: mixed precision, float32 weights
LIGHTNING_PRECISION = {"float32": "32-true", "bfloat16": "bf16-mixed", "float16": "16-mixed"}
#: Lightning's other spellings of the same settings (true bf16/fp16, with 16-bit weights, are not the same)
_SAME = {"32-true": {"32", "32-true"}, "bf16-mixed": {"bf16", "bf16-mixed"}, "16-mixed": {"16", "16-mixed"}}


def precision_override(args: argparse.Namespace, overrides: list[str]) -> list[str]:
    """``overrides`` with ``trainer.precision`` set from ``--precision`` (if given); an override of
    ``trainer.precision`` that means another precision is an error, one that means the same is kept."""
    precision = getattr(args, "precision", None)
    if precision is None:
        return overrides
    for text in overrides:
        key, _, value = text.partition("=")
        if key.strip() != "trainer.precision":
            continue
        lightning = LIGHTNING_PRECISION[precision]
        if value.strip().strip("'\"") not in _SAME[lightning]:
            raise ValueError(f"--precision {precision} and the override {text} disagree: give one of them "
                             f"(--precision {precision} sets trainer.precision={lightning})")
        return overrides
    return [*overrides, f"trainer.precision={LIGHTNING_PRECISION[precision]}"]


def print_run(run: Path) -> None:
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank == 0:  # every process of a multi-GPU run gets here; one line is enough
        print(f"run folder: {run}")


def run_training(args: argparse.Namespace, defaults: Sequence[str] = (), task: str | None = None) -> int:
    """Start (or with ``--resume`` continue) a training run from the command's arguments; ``defaults`` are
    overrides applied before the user's when no ``--config`` is given; ``task`` (if given) is the only task the
    configuration may have."""
    from m3rcr.training.config import load_config
    from m3rcr.training.run import train

    overrides = precision_override(args, split_overrides(args, args.extra))
    if args.out:
        overrides.append(f"run.dir={args.out}")
    if args.resume:
        run = train(resume=args.resume, overrides=overrides, task=task)
    else:
        # without --config: the defaults (configs/aligncr.yaml for cloud removal)
        run = train(load_config(args.config, ([] if args.config else list(defaults)) + overrides), task=task)
    print_run(run)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model from a YAML configuration (or resume a run)."""
    return run_training(args)


def cmd_curves(args: argparse.Namespace) -> int:
    """Draw a run's training curves from its CSV log."""
    from m3rcr.reports.figures import save_figure
    from m3rcr.training.curves import run_history, training_curves

    history = run_history(args.run)
    # the run's own figure (the default) is the training's to refresh; another file is the user's
    if args.out and Path(args.out).suffix.lower() != ".png":
        raise ValueError(f"--out {args.out}: the curves are written as PNG; give a .png file name")
    out = check_output(args.out, args.overwrite) if args.out else Path(args.run) / "training_curves.png"
    save_figure(training_curves(history), out)
    print(f"{len(history)} epochs -> {out}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register this module's commands."""
    _add_train(sub)
    _add_curves(sub)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model from a YAML configuration",
                       description="Train a model with Lightning from a YAML configuration (configs/*.yaml), "
                                   "with overrides as section.key=value (or --section.key value). On CPU, one "
                                   "GPU, several GPUs (trainer.devices=N) and several nodes (trainer.num_nodes=N). "
                                   "--resume RUN continues a run from its last saved state.",
                       epilog="example: m3rcr train --config configs/aligncr.yaml data.root=/data/M3R-CR "
                              "trainer.devices=2 --precision bf16")
    p.add_argument("--config", metavar="FILE", help="experiment configuration (YAML)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this folder")
    p.add_argument("--out", metavar="RUN", help="run folder (same as run.dir=RUN)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="configuration override (repeatable)")
    add_precision_arg(p, default=None, text=PRECISION_HELP)
    p.set_defaults(func=cmd_train, accepts_extra=True)


#: the help of train's --precision
PRECISION_HELP = ("training precision: bf16 (Lightning's bf16-mixed: float32 weights, bf16 autocast), fp16 "
                  "(16-mixed) or float32 (32-true); sets trainer.precision (default: the configuration's)")


def _add_curves(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("curves", help="draw a run's training curves from its log",
                       description="Training and validation loss and validation PSNR (mIoU) per epoch, from "
                                   "RUN/logs/csv/metrics.csv (training draws RUN/training_curves.png itself after "
                                   "every epoch; this redraws it, e.g. for runs of earlier versions).")
    p.add_argument("run", metavar="RUN", help="a run folder of m3rcr train")
    p.add_argument("--out", metavar="PNG", help="output image (default: RUN/training_curves.png)")
    add_overwrite(p, "replace an existing --out file (RUN/training_curves.png, the default, is always "
                      "redrawn)")
    p.set_defaults(func=cmd_curves)
