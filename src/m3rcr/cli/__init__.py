"""The ``m3rcr`` command line: a thin layer over the package.

Each module registers one family of commands (``add_parsers``); heavy imports happen inside each command so
that ``m3rcr --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError

from m3rcr.cli import checkpoint, data, download, evaluate, scene, seg, train
from m3rcr.errors import DataError, DataWarning
from m3rcr.utils.files import OutputExistsError
from m3rcr.version import __version__

_PYTHON_FORMATWARNING = warnings.formatwarning

# the order of the commands in ``m3rcr --help``
_FAMILIES = (data, download, train, evaluate, seg, scene, checkpoint)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="m3rcr", description="Cloud removal for high-resolution optical images with low-resolution SAR (M3R-CR).")
    parser.add_argument("--version", action="version", version=f"m3rcr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for family in _FAMILIES:
        family.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``m3rcr`` command."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    # warnings about the user's data read as one line, like the errors, without Python's source line
    warnings.formatwarning = _format_warning
    try:
        return _run(args)
    finally:
        warnings.formatwarning = _PYTHON_FORMATWARNING


def _format_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                    line: str | None = None) -> str:
    if issubclass(category, DataWarning):
        return f"warning: {message}\n"
    return _PYTHON_FORMATWARNING(message, category, filename, lineno, line)


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except OutputExistsError as exc:
        print(f"m3rcr {args.command}: error: {exc.cli_message()}", file=sys.stderr)
        return 2
    except (DataError, OSError, ValueError, RasterioError, CPLE_BaseError) as exc:  # bad input, not a bug
        print(f"m3rcr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        from m3rcr.inference.compiled import CompileError  # here only: `m3rcr --help` does not import torch

        if not isinstance(exc, CompileError):
            raise
        print(f"m3rcr {args.command}: error: {exc}", file=sys.stderr)  # one line, no traceback
        return 2
