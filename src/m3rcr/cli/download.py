"""Download commands: download sen12mscr."""

from __future__ import annotations

import argparse

from m3rcr.cli.args import non_negative, positive_float
from m3rcr.data.download import DEFAULT_BASE_URL, MODALITIES, SEASONS


def cmd_download(args: argparse.Namespace) -> int:
    """Download, verify and extract the selected SEN12MS-CR archives into ROOT."""
    from m3rcr.data.download import DownloadOptions, download_sen12mscr

    options = DownloadOptions(seasons=tuple(args.seasons), modalities=tuple(args.modalities), base_url=args.base_url,
                              keep_archives=args.keep_archives, verify=args.verify, progress=not args.quiet,
                              retries=args.retries, timeout=args.timeout, log=None if args.quiet else print)
    result = download_sen12mscr(args.root, options)
    print(result.summary())
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register this module's commands."""
    p = sub.add_parser(
        "download", help="download a public dataset (SEN12MS-CR)",
        description="Download the SEN12MS-CR archives (one per season and modality, about 241 GB in all) from the "
                    "TUM data server into ROOT, resuming interrupted transfers; check the free disk space first, "
                    "verify each archive (size, full read), extract it into the official layout and record its "
                    "size and SHA-256 in ROOT/download_manifest.json. A rerun skips what is done.",
        epilog="example: m3rcr download sen12mscr data/sen12mscr --seasons spring --modalities s1 s2 s2_cloudy")
    p.add_argument("dataset", choices=("sen12mscr",), help="the dataset")
    p.add_argument("root", metavar="ROOT", help="dataset root (created if missing)")
    p.add_argument("--seasons", nargs="+", choices=tuple(SEASONS), default=list(SEASONS), metavar="SEASON",
                   help=f"seasons to fetch: {' '.join(SEASONS)} (default: all)")
    p.add_argument("--modalities", nargs="+", choices=MODALITIES, default=list(MODALITIES), metavar="MODALITY",
                   help=f"modalities to fetch: {' '.join(MODALITIES)} (default: all)")
    p.add_argument("--base-url", default=DEFAULT_BASE_URL, metavar="URL",
                   help=f"server or mirror (default: {DEFAULT_BASE_URL})")
    p.add_argument("--keep-archives", action="store_true",
                   help="keep each archive in ROOT/archives after extraction (default: delete it)")
    p.add_argument("--verify", action="store_true",
                   help="re-check archives downloaded before (extracted files; size and SHA-256 of kept archives)")
    p.add_argument("--retries", type=non_negative, default=5, help="attempts after a dropped connection (default: 5)")
    p.add_argument("--timeout", type=positive_float, default=60.0, metavar="S",
                   help="seconds without data before a connection counts as dropped (default: 60)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or messages")
    p.set_defaults(func=cmd_download)
