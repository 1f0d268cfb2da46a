"""Whole-scene commands: predict, score-scene."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from m3rcr.cli.args import (
    add_compile_arg,
    add_overwrite,
    add_precision_arg,
    add_stretch_arg,
    device_of,
    finite_float,
    non_negative,
    positive,
    positive_float,
)
from m3rcr.utils.files import check_output
from m3rcr.utils.text import percent

if TYPE_CHECKING:  # the command imports it when it runs: `m3rcr --help` stays instant
    from m3rcr.inference.predict import PredictOptions


def cmd_predict(args: argparse.Namespace) -> int:
    """Remove clouds from a whole georeferenced scene, or from a list of scenes on one or many devices."""
    jobs = _scene_list(args)
    if jobs is not None:
        return _predict_many(args, jobs)
    from m3rcr.inference.predict import model_uses_sar, predict_scene, write_stats
    from m3rcr.models import load_model
    from m3rcr.models.checkpoint import checkpoint_data, read_checkpoint
    from m3rcr.reports.scene_preview import write_scene_preview

    _check_predict_outputs(args)
    # the bands and value convention the model was trained on (None: an M3R-CR checkpoint of an earlier version)
    data = checkpoint_data(read_checkpoint(args.checkpoint))
    options = _predict_options(args, data)
    model = load_model(args.checkpoint, options.device)
    if args.sar and not model_uses_sar(model):
        name = getattr(model, "registry_name", type(model).__name__)
        print(f"warning: model {name} does not use SAR; --sar {args.sar} is ignored", file=sys.stderr)
    stats = predict_scene(model, args.cloudy, args.out, args.sar, options, overwrite=args.overwrite,
                          progress=not args.quiet, checkpoint=args.checkpoint)
    print(f"wrote {args.out}: {stats.tiles_run} of {stats.tiles} tiles run in {stats.batches} batches, "
          f"{percent(stats.valid_fraction)} of the pixels have data, {stats.seconds:.1f} s")
    if stats.compile:
        from m3rcr.inference.compiled import CompileReport

        print(CompileReport(**stats.compile).describe())
    for note in stats.notes():
        print(note, file=sys.stderr)
    if args.stats:
        write_stats(args.stats, stats)
    if args.preview:
        write_scene_preview(args.cloudy, args.out, _preview_bands(stats.settings), args.preview, mask=args.mask,
                            stretch=args.stretch, scale=args.scale, offset=args.offset)
        print(f"preview: {args.preview}")
    return 0


# --------------------------------------------------------------------------- many scenes
_SCENE_FLAGS = ("cloudy", "sar", "out", "mask")


def _scene_list(args: argparse.Namespace) -> list[Any] | None:
    """The scenes of --manifest or of repeated --cloudy/--out; None for the one-scene command (its flags are
    then made single values, as they always were)."""
    from m3rcr.inference.many import jobs_from_flags, read_manifest

    given = [f"--{flag}" for flag in _SCENE_FLAGS if getattr(args, flag)]
    if args.manifest:
        if given:
            raise ValueError(f"--manifest lists the scenes: give no {'/'.join(given)} with it")
        return read_manifest(args.manifest)
    if not args.cloudy or not args.out:
        raise ValueError("give --cloudy and --out (one scene; repeat them for several), or --manifest")
    several = any(len(getattr(args, flag) or ()) > 1 for flag in _SCENE_FLAGS)
    if several or _processes(args) != (1, 1):
        return jobs_from_flags(args.cloudy, args.out, args.sar, args.mask)
    for flag in _SCENE_FLAGS:
        setattr(args, flag, (getattr(args, flag) or [None])[0])
    return None


def _processes(args: argparse.Namespace) -> tuple[int, int]:
    """(processes per node, nodes): the flags, else what torchrun started, else one."""
    from m3rcr.inference.many import torchrun_world

    started = torchrun_world() or (1, 1)
    return args.devices or started[0], args.num_nodes or started[1]


def _predict_many(args: argparse.Namespace, jobs: list[Any]) -> int:
    """Check the scene list and the model once, then predict each process's share; exit status 1 when a
    scene failed (reported by process 0, whose status is the run's)."""
    from m3rcr.inference.many import ShardRun, check_jobs, predict_many, summary, torchrun_world
    from m3rcr.inference.predict import ModelValues, model_uses_sar
    from m3rcr.models import load_model
    from m3rcr.models.checkpoint import checkpoint_data, read_checkpoint

    if args.preview or args.stats:
        raise ValueError("--preview and --stats are for one scene; with several, each output's M3RCR_PREDICT "
                         "metadata holds its settings")
    devices, nodes = _processes(args)
    single = devices * nodes == 1
    if not single and args.device != "auto":
        raise ValueError(f"--device {args.device} picks one device; with several processes, --accelerator picks "
                         "their kind and each process takes its own device")
    if not single and torchrun_world() is None and (len(sys.argv) < 2 or sys.argv[1] != "predict"):
        raise ValueError("several processes are started by running this command line again: run it as "
                         "`m3rcr predict ...` (or under torchrun), not from Python")
    check_jobs(jobs)
    data = checkpoint_data(read_checkpoint(args.checkpoint))
    _check_sar(load_model(args.checkpoint, "cpu"), jobs, model_uses_sar)
    device = args.device if args.accelerator == "auto" or not single else args.accelerator
    options = replace(_predict_options(args, data, device=device), mask=None)  # the mask: per scene
    run = ShardRun(options, len(ModelValues.of(data).names), args.checkpoint, args.overwrite,
                   progress=not args.quiet and single, log=lambda line: print(line, flush=True))
    reports = predict_many(args.checkpoint, jobs, run, devices, nodes, args.accelerator)
    if reports is None:
        return 0  # not process 0: it prints the summary and carries the exit status
    print("\n".join(summary(reports, jobs)), flush=True)
    return 1 if any(r.status == "failed" for rep in reports for r in rep.results) else 0


def _check_sar(model: Any, jobs: list[Any], uses_sar: Any) -> None:
    """Before any process starts: a SAR model needs every scene's SAR; a model without SAR ignores it."""
    from m3rcr.errors import DataError

    if uses_sar(model):
        missing = [job.where for job in jobs if job.sar is None]
        if missing:
            raise DataError(missing[0], "this model fuses SAR: give the scene's Sentinel-1 raster (sar)"
                            + (f"; {len(missing) - 1} other scene(s) have none either" if len(missing) > 1 else ""))
    elif any(job.sar is not None for job in jobs):
        name = getattr(model, "registry_name", type(model).__name__)
        print(f"warning: model {name} does not use SAR; the scenes' SAR is ignored", file=sys.stderr)


def _check_predict_outputs(args: argparse.Namespace) -> None:
    """Refuse --out, --preview and --stats before any tile runs."""
    if args.preview and Path(args.preview).suffix.lower() != ".png":
        raise ValueError(f"--preview {args.preview}: the preview is a PNG picture; give a .png file name")
    outputs = [p for p in (args.out, args.preview, args.stats) if p]
    if len({Path(p).resolve() for p in outputs}) < len(outputs):
        raise ValueError("--out, --preview and --stats must name different files")
    for path in outputs:
        check_output(path, args.overwrite)


def _predict_options(args: argparse.Namespace, data: dict[str, Any] | None = None,
                     device: str | None = None) -> PredictOptions:
    from m3rcr.inference.predict import PredictOptions

    return PredictOptions(bands=args.bands, scale=args.scale, offset=args.offset, sar_bands=args.sar_bands,
                          sar_units=args.sar_units, sar_resampling=args.sar_resampling,
                          mask=args.mask, tile=args.tile, overlap=args.overlap, batch_size=args.batch_size,
                          device=device_of(device or args.device), precision=args.precision, data=data,
                          compile=args.compile)


def _preview_bands(settings: dict[str, Any]) -> list[int]:
    """The picked bands for the preview, which takes the first three as blue, green, red (as M3R-CR's order):
    Sentinel-2's B2, B3, B4 moved to the front; the output holds every picked band, so all are passed."""
    bands, names = list(settings["bands"]), list(settings.get("band_names") or [])
    front = [names.index(n) for n in ("B2", "B3", "B4") if n in names]
    if len(front) < 3:
        return bands  # M3R-CR's blue, green, red, NIR (or a pick without true colour: its first three bands)
    return [bands[i] for i in front] + [b for i, b in enumerate(bands) if i not in front]


def cmd_score_scene(args: argparse.Namespace) -> int:
    """Cloud-removal measures of a result scene against its cloud-free reference."""
    from m3rcr.evaluation.removal import TARGETS, format_measures
    from m3rcr.evaluation.scene import score_scene, write_measures

    if args.json:
        check_output(args.json, args.overwrite)
    measures = score_scene(args.result, args.cloudy, args.reference, args.mask, bands=args.bands, scale=args.scale,
                           offset=args.offset)
    print(f"{args.result} against {args.reference}:")
    print(format_measures(measures))
    if args.json:
        write_measures(args.json, measures, {"result": args.result, "cloudy": args.cloudy,
                                             "reference": args.reference, "mask": args.mask, "targets": TARGETS})
    failures = measures.failures() if args.strict else []
    for reason in failures:
        print(f"m3rcr score-scene: {reason}", file=sys.stderr)
    return 1 if failures else 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register this module's commands."""
    _add_predict(sub)
    _add_score_scene(sub)


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="remove clouds from a whole georeferenced scene",
                       description="Tiled cloud removal over a whole scene: the SAR is warped onto the optical grid "
                                   "(any CRS and resolution), overlapping tiles are blended, and the result is "
                                   "written as a cloud-optimized GeoTIFF on the optical grid, in its dtype and "
                                   "no-data value.",
                       epilog="example: m3rcr predict --cloudy scene.tif --sar s1.tif --checkpoint best.ckpt "
                              "--out scene_clear.tif --preview scene_clear.png")
    p.add_argument("--cloudy", action="append", metavar="SCENE",
                   help="the cloudy optical scene (GeoTIFF); repeat --cloudy/--sar/--out (and --mask) for several "
                        "scenes, matched by position")
    p.add_argument("--sar", action="append", metavar="S1",
                   help="Sentinel-1 VV/VH GeoTIFF, any CRS (needed by SAR models)")
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="an m3rcr checkpoint (any registry model)")
    p.add_argument("--out", action="append", metavar="OUT.tif", help="output cloud-optimized GeoTIFF")
    p.add_argument("--manifest", metavar="FILE", help="a list of scenes instead of --cloudy/--sar/--out: CSV with a "
                                                      "header, or a YAML/JSON list of mappings, with cloudy, out and "
                                                      "optionally sar, mask (paths relative to the file's folder); "
                                                      "a rerun skips complete outputs")
    p.add_argument("--devices", type=positive, metavar="N",
                   help="processes per node for several scenes, one per device (default: 1, or torchrun's)")
    p.add_argument("--num-nodes", type=positive, metavar="M", help="nodes (default: 1, or torchrun's); each is "
                                                                   "started with MASTER_ADDR, MASTER_PORT, NODE_RANK")
    p.add_argument("--accelerator", choices=("cpu", "cuda", "auto"), default="auto",
                   help="the device kind of the processes (default: auto: cuda if available)")
    p.add_argument("--bands", metavar="B,G,R,NIR", help="1-based bands of blue, green, red, NIR (default: 1,2,3,4 "
                                                        "for 4-band scenes; e.g. 2,3,4,8 for Sentinel-2); for a "
                                                        "model trained on SEN12MS-CR, its bands in its order "
                                                        "(default: all of a 13-band L1C scene)")
    p.add_argument("--scale", type=positive_float, default=10000.0,
                   help="reflectance = (value + offset) / scale (default: 10000)")
    p.add_argument("--offset", type=finite_float, default=0.0, help="see --scale (default: 0; -1000 for recent Sentinel-2)")
    p.add_argument("--sar-bands", default="1,2", metavar="VV,VH", help="SAR bands (default: 1,2)")
    p.add_argument("--sar-units", choices=("db", "linear"), default="db",
                   help="SAR values in dB or linear power (default: db)")
    p.add_argument("--sar-resampling", choices=("nearest", "bilinear"), default="nearest",
                   help="SAR onto the optical grid (default: nearest, as the training data)")
    p.add_argument("--mask", action="append", metavar="MASK.tif",
                   help="cloud mask raster: only its non-zero pixels are replaced")
    p.add_argument("--tile", type=positive, default=256, help="tile size in pixels (default: 256)")
    p.add_argument("--overlap", type=non_negative, default=32, help="overlap between tiles in pixels (default: 32)")
    p.add_argument("--batch-size", type=positive, default=4, help="tiles per model call (default: 4)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto, for one process (default: auto)")
    add_precision_arg(p)
    add_compile_arg(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (--out, --preview, --stats)")
    p.add_argument("--preview", metavar="PNG", help="also render a before/after quicklook")
    add_stretch_arg(p, "the input's pixels clear in --mask (without --mask: those not bright in all visible bands), "
                    "for both panels")
    p.add_argument("--stats", metavar="JSON", help="also write the run's statistics and settings")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)


def _add_score_scene(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score-scene", help="does a result remove clouds? measures against trivial baselines",
                       description="Score a cloud-removed scene against its cloud-free reference on the cloudy "
                                   "pixels: MAE relative to filling clouds with the scene's mean clear-sky "
                                   "reflectance, per-band bias under clouds, grid-artefact ratio (2x2 checkerboard "
                                   "and stripe energy relative to the reference's) and the change of clear pixels. "
                                   "All rasters on the cloudy scene's grid.",
                       epilog="example: m3rcr score-scene --result clear.tif --cloudy cloudy.tif "
                              "--reference cloudfree.tif --mask cloudmask.tif")
    p.add_argument("--result", required=True, metavar="OUT.tif", help="the cloud-removed scene (m3rcr predict)")
    p.add_argument("--cloudy", required=True, metavar="SCENE", help="the cloudy input scene")
    p.add_argument("--reference", required=True, metavar="REF.tif", help="the cloud-free reference scene")
    p.add_argument("--mask", required=True, metavar="MASK.tif", help="cloud mask (non-zero = cloudy)")
    p.add_argument("--bands", metavar="B,G,R,NIR", help="bands of the cloudy and reference scenes (as for predict)")
    p.add_argument("--scale", type=positive_float, default=10000.0, help="reflectance = (value + offset) / scale")
    p.add_argument("--offset", type=finite_float, default=0.0)
    p.add_argument("--json", metavar="JSON", help="also write the measures as JSON")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when a target is missed")
    add_overwrite(p)
    p.set_defaults(func=cmd_score_scene)
