"""Checkpoint commands: convert-checkpoint."""

from __future__ import annotations

import argparse

from m3rcr.cli.args import add_overwrite
from m3rcr.utils.files import check_output


def cmd_convert_checkpoint(args: argparse.Namespace) -> int:
    """Convert an authors' Align-CR checkpoint to ours."""
    from m3rcr.models.convert import convert_checkpoint

    check_output(args.dst, args.overwrite)
    name, config = convert_checkpoint(args.src, args.dst)
    print(f"wrote {args.dst}: model {name}, " + ", ".join(f"{k}={v}" for k, v in config.items()))
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register this module's commands."""
    _add_convert_checkpoint(sub)


def _add_convert_checkpoint(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert-checkpoint", help="convert an authors' Align-CR checkpoint to ours",
                       description="Read a checkpoint of the authors' Align-CR code (state dict under 'network', "
                                   "'module.' prefixes and weight norm allowed), infer its configuration from the "
                                   "tensor shapes and write an m3rcr checkpoint.")
    p.add_argument("src", metavar="AUTHORS.pth")
    p.add_argument("dst", metavar="OUT.ckpt")
    add_overwrite(p)
    p.set_defaults(func=cmd_convert_checkpoint)
