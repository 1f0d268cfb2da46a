"""Dataset commands: synth, synth-scene, show, info, build-dataset."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from m3rcr.cli.args import (
    add_data_args,
    add_loading_args,
    add_overwrite,
    add_stretch_arg,
    finite_float,
    non_negative,
    open_dataset,
    positive,
)
from m3rcr.data.build.manifest import SCENE_KEYS, SceneKey
from m3rcr.data.build.options import BuildOptions
from m3rcr.errors import DataError
from m3rcr.utils.files import check_output

# M3R-CR-only options of ``synth`` and their defaults (the parser's): refused with --format sen12mscr
_M3RCR_SYNTH_OPTIONS = {"train": 20, "test": 10, "patches_per_aoi": 4, "sar_holes": 0.0, "max_sar_shift": 3.0,
                        "sar_shift": None}
_SEN12MSCR_SYNTH_OPTIONS = ("rois", "patches_per_roi", "size")


def _option_names(names: Any) -> str:
    return ", ".join("--" + n.replace("_", "-") for n in names)


def cmd_synth(args: argparse.Namespace) -> int:
    """Write a synthetic dataset in the official layout (M3R-CR, or SEN12MS-CR with --format sen12mscr)."""
    from m3rcr.data.synthetic import SynthConfig, generate_dataset
    from m3rcr.utils.progress import progress

    if args.format == "sen12mscr":
        return _synth_sen12mscr(args)
    given = [n for n in _SEN12MSCR_SYNTH_OPTIONS if getattr(args, n) is not None]
    if given:
        raise ValueError(f"{_option_names(given)} apply to --format sen12mscr only")
    config = SynthConfig(patches_per_aoi=args.patches_per_aoi, sar_hole_probability=args.sar_holes,
                         max_sar_shift_px=args.max_sar_shift, sar_shift_px=args.sar_shift)
    with progress(total=args.train + args.test, desc="synth", unit="sample", enabled=not args.quiet) as bar:
        out = generate_dataset(args.out, args.train, args.test, seed=args.seed, config=config,
                               overwrite=args.overwrite, progress=lambda done, total: bar.update(1))
    print(f"wrote {args.train} train + {args.test} test samples to {out}")
    return 0


def _synth_sen12mscr(args: argparse.Namespace) -> int:
    """``synth --format sen12mscr``: the official SEN12MS-CR layout, ROIs x patches per season set."""
    from m3rcr.data.synthetic import Sen12mscrSynthConfig, generate_sen12mscr
    from m3rcr.utils.progress import progress

    given = [n for n, default in _M3RCR_SYNTH_OPTIONS.items() if getattr(args, n) != default]
    if given:
        raise ValueError(f"{_option_names(given)} apply to --format m3rcr only; use --rois and --patches-per-roi")
    config = Sen12mscrSynthConfig(size=args.size or 256, rois_per_season=args.rois or 2,
                                  patches_per_roi=args.patches_per_roi or 4)
    n = 4 * config.rois_per_season * config.patches_per_roi
    with progress(total=n, desc="synth", unit="patch", enabled=not args.quiet) as bar:
        out = generate_sen12mscr(args.out, config, seed=args.seed, overwrite=args.overwrite,
                                 progress=lambda done, total: bar.update(1))
    print(f"wrote {n} SEN12MS-CR triplets (4 seasons x {config.rois_per_season} ROIs x "
          f"{config.patches_per_roi} patches, {config.size} px) to {out}")
    return 0


def cmd_synth_scene(args: argparse.Namespace) -> int:
    """Write a synthetic whole scene (optical, SAR, land cover, cloud mask, UDM)."""
    from m3rcr.data.synthetic import SceneConfig, generate_scene

    out = check_output(args.out, args.overwrite, folder=True)
    cfg = SceneConfig(height=args.height, width=args.width, sar_crs=args.sar_crs, sar_units=args.sar_units,
                      sar_cover=args.sar_cover, cloud_cover=args.cloud_cover, season=args.season)
    paths = generate_scene(out, cfg, seed=args.seed)
    print(f"wrote a {args.height}x{args.width} scene to {out}: " + ", ".join(p.name for p in paths.values()))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Render samples to PNG: one sample to OUT.png, or several into the folder OUT."""
    from m3rcr.reports.sample_figures import write_sample_figures

    ds = open_dataset(args)
    try:
        indices = ds.select(args.index, args.name or (), every=args.all)
    except ValueError as exc:
        where = Path(args.data) / args.split if args.dataset == "m3rcr" else Path(args.data)  # M3R-CR: ROOT/<split>
        raise DataError(args.csv or where, str(exc)) from None
    for path in write_sample_figures(ds, indices, args.out, stretch=args.stretch, dpi=args.dpi,
                                     overwrite=args.overwrite):
        print(path)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Summarise a split (M3R-CR or SEN12MS-CR); with --check, read every sample and report problems."""
    from m3rcr.data.summary import summarize_split

    summary = summarize_split(open_dataset(args), check=args.check, progress=not args.json,
                              csv=args.csv if args.dataset == "sen12mscr" else None)
    if args.json:
        print(json.dumps(summary.as_dict(), indent=1))
    else:
        for key, value in summary.as_dict().items():
            if isinstance(value, list):
                print(f"{key}: {len(value)}")
                for v in value:
                    print(f"  {v}")
            else:
                print(f"{key}: {value}")
    return 1 if summary.check and summary.check.problems else 0


def cmd_build_dataset(args: argparse.Namespace) -> int:
    """Cut an M3R-CR-style dataset out of whole scenes."""
    from m3rcr.data.build import BuildOptions, build_dataset, scene_sets_from_flags
    from m3rcr.utils.progress import progress as progress_bar

    given = {k.name: getattr(args, k.name) for k in SCENE_KEYS if getattr(args, k.name) is not None}
    scenes = scene_sets_from_flags(args.scenes, given)
    options = BuildOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(BuildOptions)})
    bars: list = []  # opened at the first tile, once every scene set has been checked

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(progress_bar(total=total, desc="build", unit="tile", enabled=not args.quiet))
        bars[0].update(done - bars[0].n)

    try:
        result = build_dataset(scenes, args.out, options, overwrite=args.overwrite, progress=progress)
    finally:
        for bar in bars:
            bar.close()
    print(result.summary())
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register this module's commands."""
    _add_synth(sub)
    _add_synth_scene(sub)
    _add_show(sub)
    _add_info(sub)
    _add_build_dataset(sub)


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="generate a synthetic M3R-CR or SEN12MS-CR dataset",
                       description="Write a synthetic dataset in the official M3R-CR layout (train/, test/, "
                                   "train.csv, test.csv) with realistic dtypes, georeferencing and content; "
                                   "with --format sen12mscr, in the official SEN12MS-CR layout (ROIs<id>_<season>"
                                   "_{s1,s2,s2_cloudy}/ folders, 13-band Sentinel-2 L1C-like with cirrus in B10, "
                                   "Sentinel-1 VV/VH dB on the same 10 m grid) for 4 seasons x --rois ROIs x "
                                   "--patches-per-roi patches; its ROI numbers come from the published split, so "
                                   "train, val and test each get ROIs (--train, --test and the SAR options are "
                                   "M3R-CR only).")
    p.add_argument("out", metavar="OUT", help="output dataset root")
    p.add_argument("--format", choices=("m3rcr", "sen12mscr"), default="m3rcr",
                   help="dataset layout and content (default: m3rcr)")
    p.add_argument("--rois", type=positive, metavar="N",
                   help="sen12mscr: ROIs per season set (default: 2)")
    p.add_argument("--patches-per-roi", type=positive, metavar="N",
                   help="sen12mscr: patches per ROI, neighbouring windows of one landscape (default: 4)")
    p.add_argument("--size", type=positive, metavar="PX", help="sen12mscr: patch side in pixels (default: 256)")
    p.add_argument("--train", type=non_negative, default=_M3RCR_SYNTH_OPTIONS["train"],
                   help="training samples (default: %(default)s)")
    p.add_argument("--test", type=non_negative, default=_M3RCR_SYNTH_OPTIONS["test"],
                   help="test samples (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--patches-per-aoi", type=positive, default=_M3RCR_SYNTH_OPTIONS["patches_per_aoi"],
                   help="neighbouring tiles per AOI (default: %(default)s)")
    p.add_argument("--sar-holes", type=finite_float, default=_M3RCR_SYNTH_OPTIONS["sar_holes"], metavar="P",
                   help="probability that a SAR tile has a NaN hole (default: 0)")
    p.add_argument("--max-sar-shift", type=finite_float, default=_M3RCR_SYNTH_OPTIONS["max_sar_shift"], metavar="PX",
                   help="SAR content displaced by up to PX optical pixels along each axis (default: 3)")
    p.add_argument("--sar-shift", type=finite_float, metavar="PX",
                   help="instead, displace every sample's SAR content by exactly PX optical pixels in a random "
                        "direction (the optical images do not change with PX: misalignment sweeps)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_synth)


def _add_synth_scene(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth-scene", help="generate a synthetic whole scene",
                       description="Write a synthetic scene as a user would bring it: cloudy and cloud-free 3 m "
                                   "optical GeoTIFFs in UTM with no-data corners, Sentinel-1 in another CRS, "
                                   "WorldCover in EPSG:4326, a cloud mask and a Planet UDM.")
    p.add_argument("out", metavar="DIR", help="output folder")
    p.add_argument("--height", type=positive, default=2000, help="optical rows (default: 2000)")
    p.add_argument("--width", type=positive, default=2000, help="optical columns (default: 2000)")
    p.add_argument("--sar-crs", default="EPSG:4326", help="CRS of the SAR raster (default: EPSG:4326)")
    p.add_argument("--sar-units", choices=("db", "linear"), default="db", help="SAR units (default: db)")
    p.add_argument("--sar-cover", type=finite_float, default=1.0, help="fraction of the width the SAR covers (default: 1)")
    p.add_argument("--cloud-cover", type=finite_float, default=0.35, help="cloudy fraction (default: 0.35)")
    p.add_argument("--season", default="summer", choices=("spring", "summer", "fall", "winter"))
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--overwrite", action="store_true", help="replace files in DIR")
    p.set_defaults(func=cmd_synth_scene)


def _add_show(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="render samples to PNG",
                       description="Render samples (cloudy, cloud-free, SAR VV, land cover, cloud mask) to PNG. "
                                   "SEN12MS-CR: true colour from B4, B3, B2, no land cover, the s2cloudless mask.")
    add_data_args(p)
    add_loading_args(p)
    p.add_argument("--index", type=non_negative, nargs="+", default=[], metavar="I", help="sample index(es) (default: 0)")
    p.add_argument("--name", nargs="+", metavar="NAME", help="sample name(s), e.g. fall_1_p_457")
    p.add_argument("--all", action="store_true", help="every sample of the split")
    p.add_argument("--out", required=True, metavar="PATH",
                   help="PNG file for one sample, or a folder (one PNG per sample)")
    add_stretch_arg(p)
    p.add_argument("--dpi", type=positive, default=100, help="resolution of the PNG (default: 100)")
    add_overwrite(p)
    p.set_defaults(func=cmd_show)


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="summarise or check a split",
                       description="Summarise a split (samples, AOIs, seasons; SEN12MS-CR: ROIs, layout, split "
                                   "source and the overlap of a reference-compatible split, unpaired patches). With "
                                   "--check, read every sample, report each problem with its file, and count "
                                   "cloud-cover bins and land cover (SEN12MS-CR: also check every patch's headers; "
                                   "the mean s2cloudless cloud cover).")
    add_data_args(p)
    add_loading_args(p)
    p.add_argument("--check", action="store_true", help="read every sample (exit status 1 on problems)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)


def _add_build_dataset(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build-dataset", help="cut an M3R-CR-style dataset out of whole scenes",
                       description="Cut whole scenes (cloudy and cloud-free optical, Sentinel-1, WorldCover, a cloud "
                                   "mask or Planet UDM/UDM2; any CRS and resolution for all but the cloudy scene) "
                                   "into tiles in the official M3R-CR layout: train/, test/, train.csv, test.csv and "
                                   "build.json. See docs/scenes.md.",
                       epilog="example: m3rcr build-dataset data/mine --scenes scenes.yaml --min-cloud 0.05")
    p.add_argument("out", metavar="OUT", help="output dataset root")
    g = p.add_argument_group("scenes", "a YAML manifest of scene sets, or one scene set from flags")
    g.add_argument("--scenes", metavar="YAML", help="scene manifest (paths relative to it)")
    for key in SCENE_KEYS:
        _add_scene_key(g, key)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(BuildOptions):  # BuildOptions describes its own flags
        group = groups.get(f.metadata["group"]) or groups.setdefault(f.metadata["group"],
                                                                     p.add_argument_group(f.metadata["group"]))
        _add_option(group, f)
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_build_dataset)


_PARSERS = {"positive": positive, "float": finite_float, "int": int}


def _add_option(group: argparse._ArgumentGroup, f: dataclasses.Field) -> None:
    """The flag of one :class:`~m3rcr.data.build.BuildOptions` field, from the field's metadata."""
    meta = f.metadata
    kwargs: dict[str, Any] = {"help": meta["help"], "default": f.default}
    if meta["parse"] == "choice":
        kwargs["choices"] = meta["choices"]
    else:
        kwargs["type"] = _PARSERS[meta["parse"]]
    if "metavar" in meta:
        kwargs["metavar"] = meta["metavar"]
    group.add_argument("--" + f.name.replace("_", "-"), **kwargs)


def _add_scene_key(group: argparse._ArgumentGroup, key: SceneKey) -> None:
    """The flag of one scene-set key (the manifest schema describes both)."""
    kwargs: dict[str, Any] = {"metavar": key.metavar, "help": key.help}
    if key.kind == "int":
        kwargs["type"] = positive
    elif key.kind == "names":
        kwargs["nargs"] = "+"
    elif key.kind == "choice":
        kwargs["choices"] = key.choices
    group.add_argument(key.flag, dest=key.name, **kwargs)
