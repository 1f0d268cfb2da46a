"""The ``m3rcr`` command line: a thin layer over the package.

Heavy imports happen inside each command so that ``m3rcr --help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError

from m3rcr import __version__
from m3rcr.errors import DataError, DataWarning
from m3rcr.utils.files import OutputExistsError, check_output
from m3rcr.utils.text import percent


def _positive(text: str) -> int:
    """argparse type: a whole number >= 1 (argparse prefixes the flag's name to the message)."""
    return _whole_number(text, 1)


def _non_negative(text: str) -> int:
    """argparse type: a whole number >= 0."""
    return _whole_number(text, 0)


def _finite_float(text: str) -> float:
    """argparse type: a finite number (NaN and infinity would turn every pixel into no-data or garbage)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return value


def _positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = _finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def _whole_number(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {least}, got {value}")
    return value


_OTHER_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".tif", ".tiff", ".pdf", ".svg", ".gif", ".bmp", ".webp"}


_PYTHON_FORMATWARNING = warnings.formatwarning


def _add_overwrite(p: argparse.ArgumentParser, text: str = "replace outputs that exist (default: refuse; missing "
                   "parent folders are always created)") -> None:
    p.add_argument("--overwrite", action="store_true", help=text)


def _add_data_args(p: argparse.ArgumentParser, split_default: str | None = None) -> None:
    g = p.add_argument_group("dataset")
    g.add_argument("--data", required=True, metavar="ROOT", help="dataset root holding <split>/ and <split>.csv")
    g.add_argument("--split", default=split_default, required=split_default is None, metavar="NAME",
                   help="split name, e.g. train or test" + (f" (default: {split_default})" if split_default else ""))
    g.add_argument("--csv", metavar="FILE", help="split list to use instead of ROOT/<split>.csv")


def _add_loading_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("loading")
    g.add_argument("--sar-mode", choices=("nearest", "geo", "native"), default="nearest",
                   help="how SAR reaches the optical grid (default: nearest, the paper's protocol)")
    g.add_argument("--sar-resampling", choices=("nearest", "bilinear"), default="nearest",
                   help="interpolation in geo mode (default: nearest)")
    g.add_argument("--landcover-level", type=int, choices=(1, 2), default=1, help="land-cover classes (default: 1)")
    g.add_argument("--crop", type=_positive, metavar="N", help="centred crop of N x N optical pixels (default: whole tile)")


def _add_stretch_arg(p: argparse.ArgumentParser, source: str = "the pixels clear in the cloudy image and in the "
                                                                  "cloud-free image") -> None:
    # the same choices and meaning on every command that draws RGB images (m3rcr.data.plot.stretch_limits)
    p.add_argument("--stretch", choices=("percentile", "fixed"), default="percentile",
                   help=f"RGB display stretch, one for all RGB panels of a sample: 'percentile' maps each band's "
                        f"2nd-98th percentile over {source} to the display range, 'fixed' maps reflectance 0-0.3 "
                        f"(default: percentile)")


def _dataset(args: argparse.Namespace):
    from m3rcr.data import M3RCRDataset

    return M3RCRDataset(args.data, args.split, args.csv, sar_mode=args.sar_mode, sar_resampling=args.sar_resampling,
                        landcover_level=args.landcover_level, crop_size=args.crop, crop="center")


# --------------------------------------------------------------------------- commands
def cmd_synth(args: argparse.Namespace) -> int:
    """Write a synthetic dataset in the official layout."""
    from m3rcr.data.synthetic import SynthConfig, generate_dataset
    from m3rcr.utils.progress import progress

    config = SynthConfig(patches_per_aoi=args.patches_per_aoi, sar_hole_probability=args.sar_holes,
                         max_sar_shift_px=args.max_sar_shift, sar_shift_px=args.sar_shift)
    with progress(total=args.train + args.test, desc="synth", unit="sample", enabled=not args.quiet) as bar:
        out = generate_dataset(args.out, args.train, args.test, seed=args.seed, config=config,
                               overwrite=args.overwrite, progress=lambda done, total: bar.update(1))
    print(f"wrote {args.train} train + {args.test} test samples to {out}")
    return 0


def cmd_synth_scene(args: argparse.Namespace) -> int:
    """Write a synthetic whole scene (optical, SAR, land cover, cloud mask, UDM)."""
    from m3rcr.data.synthetic_scene import SceneConfig, generate_scene

    out = check_output(args.out, args.overwrite, folder=True)
    cfg = SceneConfig(height=args.height, width=args.width, sar_crs=args.sar_crs, sar_units=args.sar_units,
                      sar_cover=args.sar_cover, cloud_cover=args.cloud_cover, season=args.season)
    paths = generate_scene(out, cfg, seed=args.seed)
    print(f"wrote a {args.height}x{args.width} scene to {out}: " + ", ".join(p.name for p in paths.values()))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Render samples to PNG: one sample to OUT.png, or several into the folder OUT."""
    from m3rcr.reports.figures import save_figure

    ds = _dataset(args)
    where = args.csv or Path(args.data) / args.split
    indices = list(args.index)
    if args.name:
        names = ds.names
        missing = [n for n in args.name if n not in names]
        if missing:
            raise DataError(where, f"no sample named {', '.join(missing)}")
        indices += [names.index(n) for n in args.name]
    if args.all:
        indices = list(range(len(ds)))
    indices = list(dict.fromkeys(indices)) or [0]  # a sample asked for twice (by index and by name) is drawn once
    for i in indices:
        if not 0 <= i < len(ds):
            raise DataError(where, f"index {i} out of range ({len(ds)} samples)")
    out = Path(args.out)
    if out.suffix.lower() in _OTHER_IMAGE_SUFFIXES:
        raise ValueError(f"--out {out}: pictures are written as PNG; give a .png file (one sample) or a folder")
    if len(indices) > 1 and out.suffix.lower() == ".png":
        raise ValueError(f"--out {out}: {len(indices)} samples go into a folder; give a folder name, "
                         "or one sample for a .png file")
    to_folder = out.suffix.lower() != ".png"
    if to_folder:
        check_output(out, overwrite=True, folder=True)  # a folder of pictures may grow; its files are checked below
    targets = {i: out / f"{args.split}_{i:04d}_{ds.samples[i].name}.png" if to_folder else out for i in indices}
    for target in targets.values():  # before drawing anything
        check_output(target, args.overwrite)
    for i, target in targets.items():
        sample = ds[i]
        save_figure(ds.plot(sample, stretch=args.stretch), target, dpi=args.dpi)
        print(target)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Summarise a split; with --check, read every sample and report problems."""
    from m3rcr.data.preprocess import CLOUD_COVER_BINS, class_names, cover_bin_label

    ds = _dataset(args)
    summary: dict[str, object] = {
        "root": str(ds.root), "split": ds.split, "samples": len(ds),
        "aois": len({s.aoi for s in ds.samples}),
        "seasons": dict(Counter(s.aoi.split("_")[0] for s in ds.samples)),
    }
    problems: list[str] = []
    if args.check:
        import warnings

        import numpy as np

        from m3rcr.utils.progress import progress

        bins = Counter()
        classes = np.zeros(len(class_names(args.landcover_level)) + 1, dtype=np.int64)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for i in progress(range(len(ds)), desc="check", unit="sample", enabled=not args.json):
                try:
                    sample = ds[i]
                except DataError as exc:
                    problems.append(str(exc))
                    continue
                bins[cover_bin_label(sample["cloud_cover_tile"])] += 1
                lc = sample["landcover"].numpy().ravel()
                classes += np.bincount(np.minimum(lc, len(classes) - 1), minlength=len(classes))[: len(classes)]
        summary["cloud_cover_bins"] = {b: bins.get(b, 0) for b in CLOUD_COVER_BINS}
        total = max(int(classes.sum()), 1)
        names = list(class_names(args.landcover_level)) + ["no data"]
        summary["landcover_percent"] = {n: round(100 * int(c) / total, 2) for n, c in zip(names, classes) if c}
        summary["warnings"] = [str(w.message) for w in caught]
        summary["problems"] = problems
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        for key, value in summary.items():
            if isinstance(value, list):
                print(f"{key}: {len(value)}")
                for v in value:
                    print(f"  {v}")
            else:
                print(f"{key}: {value}")
    return 1 if problems else 0


_SCENE_FLAGS = ("cloudy", "cloudfree", "sar", "landcover", "cloudmask", "cloudmask_band", "udm", "udm_format",
                "cloud_classes", "season", "aoi", "bands", "cloudfree_bands", "sar_bands", "sar_units", "split")


def cmd_build_dataset(args: argparse.Namespace) -> int:
    """Cut an M3R-CR-style dataset out of whole scenes."""
    from m3rcr.data.build import BuildOptions, build_dataset, load_manifest, scene_set_from_mapping
    from m3rcr.utils.progress import progress as progress_bar

    given = {k: getattr(args, k) for k in _SCENE_FLAGS if getattr(args, k) is not None}
    if args.scenes:
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise ValueError(f"give either --scenes or the flags of one scene set, not both (also given: {flags})")
        scenes = load_manifest(args.scenes)
    else:
        missing = [f"--{k}" for k in ("cloudy", "cloudfree", "sar", "landcover", "season", "aoi") if k not in given]
        if "cloudmask" not in given and "udm" not in given:
            missing.append("--cloudmask or --udm")
        if missing:
            raise ValueError("give --scenes FILE, or one scene set with --cloudy, --cloudfree, --sar, --landcover, "
                             f"--cloudmask or --udm, --season and --aoi; missing: {', '.join(missing)}")
        scenes = [scene_set_from_mapping(given, ".", "command line")]
    options = BuildOptions(tile=args.tile, stride=args.stride, lowres=args.lowres, sar_resampling=args.sar_resampling,
                           min_valid=args.min_valid, min_cloud=args.min_cloud, max_cloud=args.max_cloud,
                           test_fraction=args.test_fraction, seed=args.seed)
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


def _model_overrides(pairs: Sequence[str] | None) -> dict[str, object]:
    import yaml

    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        out[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return out


def cmd_convert_checkpoint(args: argparse.Namespace) -> int:
    """Convert an authors' Align-CR checkpoint to ours."""
    from m3rcr.models.convert import convert_checkpoint

    check_output(args.dst, args.overwrite)
    name, config = convert_checkpoint(args.src, args.dst)
    print(f"wrote {args.dst}: model {name}, " + ", ".join(f"{k}={v}" for k, v in config.items()))
    return 0


def cmd_complexity(args: argparse.Namespace) -> int:
    """Parameters, MACs and latency of a model."""
    import torch

    from m3rcr.evaluation.complexity import measure
    from m3rcr.models import create_model, load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    device = str(_device(args.device))
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    if len(args.size) > 2:
        raise ValueError(f"--size takes N or H W, got {len(args.size)} values")
    if args.checkpoint:
        if args.set:
            raise ValueError("--set changes a model's configuration; it cannot apply to --checkpoint")
        model = load_model(args.checkpoint)
        name = getattr(model, "registry_name", "model")
    else:
        model, name = create_model(args.model, **_model_overrides(args.set)), args.model
    size = (args.size[0], args.size[-1])
    result = measure(model, name, size=size, repeats=args.repeats, warmup=args.warmup, device=device, dtype=dtype,
                     batch_size=args.batch_size)
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        lat = f"{result.latency_ms:.1f} ms (median of {args.repeats})" if result.latency_ms is not None else "not measured"
        padded = f" (computed at {result.padded_size[0]} x {result.padded_size[1]})" if result.padded_size else ""
        print(f"model       {name}\ninput       {args.batch_size} x {size[0]} x {size[1]}{padded}\n"
              f"parameters  {result.parameters:,}\nMACs        {result.macs / 1e9:.2f} G\n"
              f"FLOPs       {result.flops / 1e9:.2f} G\nlatency     {lat}\n"
              f"device      {result.device}, {result.dtype}, {result.threads} threads")
    return 0


def _split_overrides(args: argparse.Namespace, extra: Sequence[str]) -> list[str]:
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


def _print_run(run: Path) -> None:
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank == 0:  # every process of a multi-GPU run gets here; one line is enough
        print(f"run folder: {run}")


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model from a YAML configuration (or resume a run)."""
    from m3rcr.training.config import load_config
    from m3rcr.training.run import train

    overrides = _split_overrides(args, args.extra)
    if args.out:
        overrides.append(f"run.dir={args.out}")
    if args.resume:
        run = train(resume=args.resume, overrides=overrides)
    else:
        run = train(load_config(args.config, overrides))  # without --config: the defaults (configs/aligncr.yaml)
    _print_run(run)
    return 0


def _device(name: str):
    from m3rcr.utils.device import resolve_device

    return resolve_device(name)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score a checkpoint (or the cloudy input) on a split."""
    from m3rcr.data import M3RCRDataset
    from m3rcr.evaluation.evaluate import cloudy_predictor, evaluate, model_predictor
    from m3rcr.models import load_model

    check_output(args.out, args.overwrite, folder=True)  # before minutes of work
    device = _device(args.device)
    ds = M3RCRDataset(args.data, args.split, args.csv, sar_mode=args.sar_mode, sar_resampling=args.sar_resampling,
                      landcover_mode="geo" if args.sar_mode == "geo" else "nearest", crop_size=args.crop,
                      crop="center")
    if args.method == "cloudy":
        predict, method, settings = cloudy_predictor, "cloudy", {"checkpoint": None}
    else:
        if not args.checkpoint:
            raise ValueError("give --checkpoint CKPT or --method cloudy")
        model = load_model(args.checkpoint, device=device)
        predict = model_predictor(model, args.precision)
        method = args.name or getattr(model, "registry_name", "model")
        settings = {"checkpoint": str(args.checkpoint), "model": getattr(model, "registry_name", None),
                    "precision": args.precision}
    summary = evaluate(predict, ds, args.out, args.name or method, batch_size=args.batch_size, device=device,
                       num_workers=args.workers, clip=args.clip, save_predictions=args.save_predictions,
                       figure_names=args.samples, figure_count=args.figure_count, settings=settings,
                       progress=not args.quiet, overwrite=args.overwrite, stretch=args.stretch)
    o = summary["overall"]
    print(f"{args.name or method}: {o['images']} images  MAE {100 * o['mae']:.2f} (x100)  PSNR {o['psnr']:.2f} dB  "
          f"SAM {o['sam']:.2f} deg  SSIM {o['ssim']:.3f}  -> {args.out}")
    r = summary.get("removal")
    if r and r.get("mae_ratio") is not None:
        bias = ", ".join("n/a" if b is None else f"{100 * b:+.1f}" for b in r["band_bias"])
        grid = "n/a" if r["grid_ratio"] is None else f"{r['grid_ratio']:.2f}"
        clear = "n/a" if r["clear_change"] is None else f"{100 * r['clear_change']:.2f}"
        print(f"  cloudy pixels: MAE {100 * r['mae_cloudy']:.2f} (x100) = {r['mae_ratio']:.2f} x the mean fill's; "
              f"band bias (B, G, R, NIR) {bias} %; grid-artefact ratio {grid}; clear pixels changed by {clear} (x100)")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """One set of tables and figures for several evaluations."""
    from m3rcr.evaluation.evaluate import compare

    compare(args.folders, args.out, args.names, overwrite=args.overwrite, stretch=args.stretch)
    print(f"tables and figures in {args.out}; open {Path(args.out) / 'report.html'} in a browser")
    return 0


def _named(pairs: Sequence[str] | None, what: str) -> list[tuple[str, str]]:
    out = []
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name or not value:
            raise ValueError(f"{what} expects NAME=PATH, got {pair!r}")
        out.append((name, value))
    return out


def cmd_seg_train(args: argparse.Namespace) -> int:
    """Train the land-cover segmentation model (on the cloud-free training images)."""
    from m3rcr.training.config import load_config
    from m3rcr.training.run import train

    overrides = _split_overrides(args, args.extra)
    if args.out:
        overrides.append(f"run.dir={args.out}")
    if args.resume:
        run = train(resume=args.resume, overrides=overrides)
    else:
        base = [] if args.config else ["task=segmentation", "model.name=deeplabv3plus",
                                       "model.config={encoder: resnet50}", "run.dir=runs/segmentation"]
        config = load_config(args.config, base + overrides)
        if config["task"] != "segmentation":
            raise ValueError(f"{args.config}: not a segmentation configuration (task: {config['task']})")
        run = train(config)
    _print_run(run)
    return 0


def cmd_seg_evaluate(args: argparse.Namespace) -> int:
    """Segment cloud-free, cloudy and predicted images; mIoU and PA per cloud-cover bin."""
    from m3rcr.data import M3RCRDataset
    from m3rcr.evaluation.evaluate import model_predictor
    from m3rcr.evaluation.semantic import predictions_source, semantic_evaluate
    from m3rcr.models import load_model, load_segmentation_model

    check_output(args.out, args.overwrite, folder=True)
    device = _device(args.device)
    segmenter = load_segmentation_model(args.checkpoint, device=device)
    ds = M3RCRDataset(args.data, args.split, args.csv, crop_size=args.crop, crop="center")
    sources = {"Cloud-free": lambda b: b["cloudfree"], "Cloudy": lambda b: b["cloudy"]}
    for name, ckpt in _named(args.method, "--method"):
        sources[name] = model_predictor(load_model(ckpt, device=device))
    for name, folder in _named(args.predictions, "--predictions"):
        sources[name] = predictions_source(folder)
    results = semantic_evaluate(segmenter, ds, sources, args.out, batch_size=args.batch_size, device=device,
                                figure_names=args.samples, figure_count=args.figure_count, progress=not args.quiet,
                                overwrite=args.overwrite, stretch=args.stretch)
    for name, r in results.items():
        o = r["overall"]
        print(f"{name}: mIoU {o['miou']:.2f} %  PA {o['pa']:.2f} %" if o["miou"] is not None else f"{name}: no pixels")
    print(f"-> {args.out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Remove clouds from a whole georeferenced scene."""
    from m3rcr.inference.predict import model_uses_sar, predict_scene, write_stats
    from m3rcr.models import load_model

    if args.preview and Path(args.preview).suffix.lower() != ".png":
        raise ValueError(f"--preview {args.preview}: the preview is a PNG picture; give a .png file name")
    outputs = [p for p in (args.out, args.preview, args.stats) if p]
    if len({Path(p).resolve() for p in outputs}) < len(outputs):
        raise ValueError("--out, --preview and --stats must name different files")
    for path in outputs:  # all refused before any tile runs
        check_output(path, args.overwrite)
    device = _device(args.device)
    model = load_model(args.checkpoint, device)
    if args.sar and not model_uses_sar(model):
        name = getattr(model, "registry_name", type(model).__name__)
        print(f"warning: model {name} does not use SAR; --sar {args.sar} is ignored", file=sys.stderr)
    stats = predict_scene(
        model, args.cloudy, args.out, args.sar, bands=args.bands, scale=args.scale, offset=args.offset,
        sar_bands=args.sar_bands, sar_units=args.sar_units,
        sar_resampling=args.sar_resampling, mask=args.mask, tile=args.tile, overlap=args.overlap,
        batch_size=args.batch_size, device=device, precision=args.precision, overwrite=args.overwrite,
        progress=not args.quiet, checkpoint=args.checkpoint)
    print(f"wrote {args.out}: {stats.tiles_run} of {stats.tiles} tiles run in {stats.batches} batches, "
          f"{percent(stats.valid_fraction)} of the pixels have data, {stats.seconds:.1f} s")
    if stats.sar_covered_fraction is not None and stats.sar_covered_fraction < 0.999:
        print(f"note: the SAR has data for {percent(stats.sar_covered_fraction)} of the scene's valid pixels; "
              "pixels without it (outside its footprint, NaN or no-data) are no-data", file=sys.stderr)
    if stats.nonfinite_tiles:
        print(f"warning: the model returned NaN or infinity in {stats.nonfinite_tiles} tile(s); pixels no tile "
              "predicted are no-data", file=sys.stderr)
    if stats.mask_covered_fraction is not None and stats.mask_covered_fraction < 0.999:
        print(f"note: the cloud mask covers {percent(stats.mask_covered_fraction)} of the scene's extent; pixels "
              "outside it count as clear and keep their input values", file=sys.stderr)
    if stats.valid_fraction == 0:
        print("warning: no pixel has both optical data and SAR coverage; the output is all no-data", file=sys.stderr)
    elif stats.tiles_run == 0:
        print("warning: the model ran on no tile (no pixel has both optical data and SAR): nothing was predicted; "
              "only the clear pixels the mask keeps have data", file=sys.stderr)
    if args.stats:
        write_stats(args.stats, stats)
    if args.preview:
        _scene_preview(args.cloudy, args.out, stats.settings["bands"], args.preview, mask=args.mask,
                       stretch=args.stretch, scale=args.scale, offset=args.offset)
        print(f"preview: {args.preview}")
    return 0


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
    checks = measures.checks()
    failed = [k for k, ok in checks.items() if ok is False]
    if args.strict and failed:
        print(f"m3rcr score-scene: the result misses the target(s): {', '.join(failed)}", file=sys.stderr)
        return 1
    if args.strict and checks["mae_ratio"] is None:  # nothing to pass is not a pass
        print("m3rcr score-scene: no cloudy pixel has data in the result, the input and the reference: the removal "
              "cannot be measured", file=sys.stderr)
        return 1
    return 0


def _scene_preview(cloudy: str, out: str, bands: Sequence[int], png: str, *, mask: str | None = None,
                   stretch: str = "percentile", scale: float = 10000.0, offset: float = 0.0) -> None:
    """Before/after quicklook of a predicted scene, both panels on one stretch (from the input's pixels
    clear in ``mask`` when given; see :func:`m3rcr.reports.figures.scene_before_after`)."""
    from m3rcr.data.scene import read_quicklook
    from m3rcr.reports.figures import save_figure, scene_before_after

    rgb_in = [bands[2], bands[1], bands[0]]
    order = sorted(bands)  # the output holds the picked bands in the input's order
    rgb_out = [order.index(b) + 1 for b in rgb_in]
    # reflectance, so that --stretch fixed means the same as for the dataset figures
    before = (read_quicklook(cloudy, rgb_in) + offset) / scale
    after = (read_quicklook(out, rgb_out) + offset) / scale
    cloudmask = read_quicklook(mask, [1], mask_onto=cloudy)[0] if mask else None
    fig = scene_before_after(before, after, suptitle=f"{Path(cloudy).name} -> {Path(out).name}",
                             cloudmask=cloudmask, stretch=stretch)
    save_figure(fig, png)


def cmd_curves(args: argparse.Namespace) -> int:
    """Draw a run's training curves from its CSV log."""
    from m3rcr.reports.figures import history_from_csv, save_figure, training_curves

    log = Path(args.run) / "logs" / "csv" / "metrics.csv"
    if not log.is_file():
        raise FileNotFoundError(f"{log}: no CSV log (is {args.run} a run folder of m3rcr train?)")
    history = history_from_csv(log)
    if not history:
        raise ValueError(f"{log}: no epoch has finished yet")
    if not any(set(entry) - {"epoch", "step"} for entry in history):  # epochs, but nothing to draw
        raise ValueError(f"{log}: no loss or score column (train/loss_epoch, val/loss, val/psnr or val/miou)")
    # the run's own figure (the default) is the training's to refresh; another file is the user's
    if args.out and Path(args.out).suffix.lower() != ".png":
        raise ValueError(f"--out {args.out}: the curves are written as PNG; give a .png file name")
    out = check_output(args.out, args.overwrite) if args.out else Path(args.run) / "training_curves.png"
    save_figure(training_curves(history), out)
    print(f"{len(history)} epochs -> {out}")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    """Train (or load), evaluate and measure every method of a benchmark configuration; one report."""
    from m3rcr.benchmark import Benchmark, load_benchmark_config, prepare_out

    config = load_benchmark_config(args.config)
    out = args.out or config.get("out")
    if not out:
        raise ValueError("give --out DIR (or 'out' in the configuration)")
    inputs = [(config.get("data") or {}).get("root"), *(m.get("checkpoint") for m in config.get("methods") or [])]
    if prepare_out(out, args.overwrite, inputs):
        print(f"continuing the benchmark in {out}: finished steps with unchanged inputs are skipped "
              "(--overwrite starts again)")
    Benchmark(config, out).run()
    print(f"report: {Path(out) / 'report' / 'report.html'} (and report.md beside it)")
    return 0


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="m3rcr", description="Cloud removal for high-resolution optical images with low-resolution SAR (M3R-CR).")
    parser.add_argument("--version", action="version", version=f"m3rcr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("synth", help="generate a synthetic M3R-CR dataset",
                       description="Write a synthetic dataset in the official M3R-CR layout (train/, test/, "
                                   "train.csv, test.csv) with realistic dtypes, georeferencing and content.")
    p.add_argument("out", metavar="OUT", help="output dataset root")
    p.add_argument("--train", type=_non_negative, default=20, help="training samples (default: 20)")
    p.add_argument("--test", type=_non_negative, default=10, help="test samples (default: 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--patches-per-aoi", type=_positive, default=4, help="neighbouring tiles per AOI (default: 4)")
    p.add_argument("--sar-holes", type=_finite_float, default=0.0, metavar="P",
                   help="probability that a SAR tile has a NaN hole (default: 0)")
    p.add_argument("--max-sar-shift", type=_finite_float, default=3.0, metavar="PX",
                   help="SAR content displaced by up to PX optical pixels along each axis (default: 3)")
    p.add_argument("--sar-shift", type=_finite_float, metavar="PX",
                   help="instead, displace every sample's SAR content by exactly PX optical pixels in a random "
                        "direction (the optical images do not change with PX: misalignment sweeps)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("synth-scene", help="generate a synthetic whole scene",
                       description="Write a synthetic scene as a user would bring it: cloudy and cloud-free 3 m "
                                   "optical GeoTIFFs in UTM with no-data corners, Sentinel-1 in another CRS, "
                                   "WorldCover in EPSG:4326, a cloud mask and a Planet UDM.")
    p.add_argument("out", metavar="DIR", help="output folder")
    p.add_argument("--height", type=_positive, default=2000, help="optical rows (default: 2000)")
    p.add_argument("--width", type=_positive, default=2000, help="optical columns (default: 2000)")
    p.add_argument("--sar-crs", default="EPSG:4326", help="CRS of the SAR raster (default: EPSG:4326)")
    p.add_argument("--sar-units", choices=("db", "linear"), default="db", help="SAR units (default: db)")
    p.add_argument("--sar-cover", type=_finite_float, default=1.0, help="fraction of the width the SAR covers (default: 1)")
    p.add_argument("--cloud-cover", type=_finite_float, default=0.35, help="cloudy fraction (default: 0.35)")
    p.add_argument("--season", default="summer", choices=("spring", "summer", "fall", "winter"))
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--overwrite", action="store_true", help="replace files in DIR")
    p.set_defaults(func=cmd_synth_scene)

    p = sub.add_parser("show", help="render samples to PNG",
                       description="Render samples (cloudy, cloud-free, SAR VV, land cover, cloud mask) to PNG.")
    _add_data_args(p)
    _add_loading_args(p)
    p.add_argument("--index", type=_non_negative, nargs="+", default=[], metavar="I", help="sample index(es) (default: 0)")
    p.add_argument("--name", nargs="+", metavar="NAME", help="sample name(s), e.g. fall_1_p_457")
    p.add_argument("--all", action="store_true", help="every sample of the split")
    p.add_argument("--out", required=True, metavar="PATH",
                   help="PNG file for one sample, or a folder (one PNG per sample)")
    _add_stretch_arg(p)
    p.add_argument("--dpi", type=_positive, default=100, help="resolution of the PNG (default: 100)")
    _add_overwrite(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("info", help="summarise or check a split",
                       description="Summarise a split (samples, AOIs, seasons). With --check, read every "
                                   "sample, report each problem, and count cloud-cover bins and land cover.")
    _add_data_args(p)
    _add_loading_args(p)
    p.add_argument("--check", action="store_true", help="read every sample (exit status 1 on problems)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("train", help="train a model from a YAML configuration",
                       description="Train a model with Lightning from a YAML configuration (configs/*.yaml), "
                                   "with overrides as section.key=value (or --section.key value). On CPU, one "
                                   "GPU, several GPUs (trainer.devices=N) and several nodes (trainer.num_nodes=N). "
                                   "--resume RUN continues a run from its last saved state.",
                       epilog="example: m3rcr train --config configs/aligncr.yaml data.root=/data/M3R-CR "
                              "trainer.devices=2 trainer.precision=bf16-mixed")
    p.add_argument("--config", metavar="FILE", help="experiment configuration (YAML)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this folder")
    p.add_argument("--out", metavar="RUN", help="run folder (same as run.dir=RUN)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="configuration override (repeatable)")
    p.set_defaults(func=cmd_train, accepts_extra=True)

    p = sub.add_parser("curves", help="draw a run's training curves from its log",
                       description="Training and validation loss and validation PSNR (mIoU) per epoch, from "
                                   "RUN/logs/csv/metrics.csv (training draws RUN/training_curves.png itself after "
                                   "every epoch; this redraws it, e.g. for runs of earlier versions).")
    p.add_argument("run", metavar="RUN", help="a run folder of m3rcr train")
    p.add_argument("--out", metavar="PNG", help="output image (default: RUN/training_curves.png)")
    _add_overwrite(p, "replace an existing --out file (RUN/training_curves.png, the default, is always "
                      "redrawn)")
    p.set_defaults(func=cmd_curves)

    p = sub.add_parser("evaluate", help="score a checkpoint or the cloudy input on a split",
                       description="Image-reconstruction metrics of the M3R-CR benchmark (MAE, PSNR, SSIM, SAM) "
                                   "overall, per land-cover class and per cloud-cover bin; writes metrics.json, "
                                   "metrics.csv, tables (Table II layout) and figures (Fig. 4 and 5 layouts).")
    _add_data_args(p, split_default="test")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", metavar="CKPT", help="an m3rcr checkpoint")
    what.add_argument("--method", choices=("cloudy",), help="'cloudy': score the cloudy input itself (the floor)")
    p.add_argument("--out", required=True, metavar="DIR", help="evaluation folder")
    p.add_argument("--name", help="method name in tables (default: the model's registry name)")
    p.add_argument("--crop", type=_positive, metavar="N",
                   help="centred N x N crop (160: what the authors' code evaluates; default: whole tiles)")
    p.add_argument("--sar-mode", choices=("nearest", "geo"), default="nearest", help="SAR placement (default: nearest)")
    p.add_argument("--sar-resampling", choices=("nearest", "bilinear"), default="nearest")
    p.add_argument("--batch-size", type=_positive, default=4)
    p.add_argument("--workers", type=_non_negative, default=0, help="DataLoader workers (default: 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    p.add_argument("--precision", choices=("float32", "bfloat16", "float16"), default="float32")
    p.add_argument("--clip", action="store_true", help="clip predictions to [0, 1] before scoring")
    p.add_argument("--save-predictions", action="store_true", help="write predictions/NAME.tif (georeferenced)")
    p.add_argument("--samples", nargs="+", metavar="NAME", help="samples for the qualitative figure")
    p.add_argument("--figure-count", type=_non_negative, default=4, help="samples in the qualitative figure (default: 4)")
    _add_stretch_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_overwrite(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("compare", help="tables and figures for several evaluations",
                       description="Combine evaluation folders (m3rcr evaluate --out) into one Table II and Fig. 5.")
    p.add_argument("folders", nargs="+", metavar="DIR", help="evaluation folders")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--names", nargs="+", help="method names, one per folder (default: as evaluated)")
    _add_stretch_arg(p)
    _add_overwrite(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("seg", help="the land-cover segmentation model of the semantic evaluation",
                       description="DeepLabv3+ (ResNet-50) land-cover segmentation: train it on the cloud-free "
                                   "training images, then score cloud-free, cloudy and predicted images with it "
                                   "(Table III, Fig. 6, Fig. 7).")
    seg = p.add_subparsers(dest="seg_command", metavar="SUBCOMMAND", required=True)
    q = seg.add_parser("train", help="train the segmentation model",
                       description="Train the segmentation model (configs/segmentation.yaml; overrides as "
                                   "section.key=value). Without --config: DeepLabv3+ ResNet-50 with the defaults.")
    q.add_argument("--config", metavar="FILE", help="a segmentation configuration (task: segmentation)")
    q.add_argument("--resume", metavar="RUN", help="continue the run in this folder")
    q.add_argument("--out", metavar="RUN", help="run folder (same as run.dir=RUN)")
    q.add_argument("--set", action="append", metavar="KEY=VALUE", help="configuration override (repeatable)")
    q.set_defaults(func=cmd_seg_train, accepts_extra=True, command="seg train")
    q = seg.add_parser("evaluate", help="segment cloud-free, cloudy and predicted images; mIoU and PA",
                       description="Apply the segmentation model to the cloud-free and cloudy images and to each "
                                   "method's predictions; mIoU and pixel accuracy overall and per cloud-cover bin.")
    _add_data_args(q, split_default="test")
    q.add_argument("--checkpoint", required=True, metavar="SEG.ckpt", help="the segmentation model")
    q.add_argument("--method", action="append", metavar="NAME=CKPT", help="a cloud-removal checkpoint (repeatable)")
    q.add_argument("--predictions", action="append", metavar="NAME=DIR",
                   help="a folder of predicted GeoTIFFs, e.g. DIR/predictions of m3rcr evaluate (repeatable)")
    q.add_argument("--out", required=True, metavar="DIR")
    q.add_argument("--crop", type=_positive, metavar="N", help="centred N x N crop (default: whole tiles)")
    q.add_argument("--batch-size", type=_positive, default=4)
    q.add_argument("--device", default="auto")
    q.add_argument("--samples", nargs="+", metavar="NAME", help="samples for the land-cover figure")
    q.add_argument("--figure-count", type=_non_negative, default=3)
    _add_stretch_arg(q)
    q.add_argument("--quiet", action="store_true")
    _add_overwrite(q)
    q.set_defaults(func=cmd_seg_evaluate, command="seg evaluate")

    p = sub.add_parser("predict", help="remove clouds from a whole georeferenced scene",
                       description="Tiled cloud removal over a whole scene: the SAR is warped onto the optical grid "
                                   "(any CRS and resolution), overlapping tiles are blended, and the result is "
                                   "written as a cloud-optimized GeoTIFF on the optical grid, in its dtype and "
                                   "no-data value.",
                       epilog="example: m3rcr predict --cloudy scene.tif --sar s1.tif --checkpoint best.ckpt "
                              "--out scene_clear.tif --preview scene_clear.png")
    p.add_argument("--cloudy", required=True, metavar="SCENE", help="the cloudy optical scene (GeoTIFF)")
    p.add_argument("--sar", metavar="S1", help="Sentinel-1 VV/VH GeoTIFF, any CRS (needed by SAR models)")
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="an m3rcr checkpoint (any registry model)")
    p.add_argument("--out", required=True, metavar="OUT.tif", help="output cloud-optimized GeoTIFF")
    p.add_argument("--bands", metavar="B,G,R,NIR", help="1-based bands of blue, green, red, NIR (default: 1,2,3,4 "
                                                        "for 4-band scenes; e.g. 2,3,4,8 for Sentinel-2)")
    p.add_argument("--scale", type=_positive_float, default=10000.0,
                   help="reflectance = (value + offset) / scale (default: 10000)")
    p.add_argument("--offset", type=_finite_float, default=0.0, help="see --scale (default: 0; -1000 for recent Sentinel-2)")
    p.add_argument("--sar-bands", default="1,2", metavar="VV,VH", help="SAR bands (default: 1,2)")
    p.add_argument("--sar-units", choices=("db", "linear"), default="db",
                   help="SAR values in dB or linear power (default: db)")
    p.add_argument("--sar-resampling", choices=("nearest", "bilinear"), default="nearest",
                   help="SAR onto the optical grid (default: nearest, as the training data)")
    p.add_argument("--mask", metavar="MASK.tif", help="cloud mask raster: only its non-zero pixels are replaced")
    p.add_argument("--tile", type=_positive, default=256, help="tile size in pixels (default: 256)")
    p.add_argument("--overlap", type=_non_negative, default=32, help="overlap between tiles in pixels (default: 32)")
    p.add_argument("--batch-size", type=_positive, default=4, help="tiles per model call (default: 4)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    p.add_argument("--precision", choices=("float32", "bfloat16", "float16"), default="float32")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (--out, --preview, --stats)")
    p.add_argument("--preview", metavar="PNG", help="also render a before/after quicklook")
    _add_stretch_arg(p, "the input's pixels clear in --mask (without --mask: those not bright in all visible bands), "
                    "for both panels")
    p.add_argument("--stats", metavar="JSON", help="also write the run's statistics and settings")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)

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
    p.add_argument("--scale", type=_positive_float, default=10000.0, help="reflectance = (value + offset) / scale")
    p.add_argument("--offset", type=_finite_float, default=0.0)
    p.add_argument("--json", metavar="JSON", help="also write the measures as JSON")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when a target is missed")
    _add_overwrite(p)
    p.set_defaults(func=cmd_score_scene)

    p = sub.add_parser("benchmark", help="the whole benchmark: train, evaluate, measure, report",
                       description="Train (or load) every method of a benchmark configuration (configs/benchmark.yaml), "
                                   "evaluate each on the same split (image, NDVI and semantic metrics), measure its "
                                   "complexity, and write every table and figure to DIR/report. Interrupted, it "
                                   "resumes without redoing finished steps.")
    p.add_argument("--config", required=True, metavar="FILE", help="benchmark configuration (YAML)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: 'out' in the configuration)")
    _add_overwrite(p, "start again: delete OUT's earlier benchmark (default: continue it, skipping finished "
                      "steps)")
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("build-dataset", help="cut an M3R-CR-style dataset out of whole scenes",
                       description="Cut whole scenes (cloudy and cloud-free optical, Sentinel-1, WorldCover, a cloud "
                                   "mask or Planet UDM/UDM2; any CRS and resolution for all but the cloudy scene) "
                                   "into tiles in the official M3R-CR layout: train/, test/, train.csv, test.csv and "
                                   "build.json. See docs/scenes.md.",
                       epilog="example: m3rcr build-dataset data/mine --scenes scenes.yaml --min-cloud 0.05")
    p.add_argument("out", metavar="OUT", help="output dataset root")
    g = p.add_argument_group("scenes", "a YAML manifest of scene sets, or one scene set from flags")
    g.add_argument("--scenes", metavar="YAML", help="scene manifest (paths relative to it)")
    g.add_argument("--cloudy", metavar="TIF", help="cloudy optical scene; its grid is the optical grid")
    g.add_argument("--cloudfree", metavar="TIF", help="cloud-free optical scene")
    g.add_argument("--sar", metavar="TIF", help="Sentinel-1 VV/VH, any CRS and resolution")
    g.add_argument("--landcover", metavar="TIF", help="ESA WorldCover map (uint8 codes, 0 = no data)")
    g.add_argument("--cloudmask", metavar="TIF", help="cloud mask raster (non-zero = cloudy)")
    g.add_argument("--cloudmask-band", type=_positive, metavar="N", help="band of --cloudmask (default: 1)")
    g.add_argument("--udm", metavar="TIF", help="Planet UDM (1 band) or UDM2 (8 bands) instead of --cloudmask")
    g.add_argument("--udm-format", choices=("udm", "udm2"), help="default: from the band count")
    g.add_argument("--cloud-classes", nargs="+", metavar="NAME",
                   help="UDM2 classes counted as cloudy: cloud, heavy_haze, light_haze, shadow, snow (default: cloud)")
    g.add_argument("--season", help="season name in file names (letters and digits)")
    g.add_argument("--aoi", help="AOI name in file names (letters, digits and -)")
    g.add_argument("--bands", metavar="B,G,R,NIR", help="1-based bands of blue, green, red, NIR (default: 1,2,3,4 "
                                                        "for 4-band scenes)")
    g.add_argument("--cloudfree-bands", metavar="B,G,R,NIR", help="the same for --cloudfree (default: --bands)")
    g.add_argument("--sar-bands", metavar="VV,VH", help="SAR bands (default: 1,2)")
    g.add_argument("--sar-units", choices=("db", "linear"), help="SAR in dB or linear power (default: db)")
    g.add_argument("--split", choices=("train", "test"), help="put the scene set in this split")
    g = p.add_argument_group("tiles")
    g.add_argument("--tile", type=_positive, default=300, help="optical tile size in pixels (default: 300)")
    g.add_argument("--stride", type=_positive, help="optical pixels between tile origins (default: --tile); must keep "
                                              "origins on low-res pixel boundaries (a multiple of 10 at 3 m)")
    g.add_argument("--lowres", type=_finite_float, default=10.0, metavar="M",
                   help="SAR / land-cover pixel size in metres; the tile holds round(tile * res / M) such pixels "
                        "covering its ground exactly (default: 10)")
    g.add_argument("--sar-resampling", choices=("nearest", "bilinear"), default="bilinear",
                   help="SAR onto the low-res grid (default: bilinear)")
    g = p.add_argument_group("filters and split")
    g.add_argument("--min-valid", type=_finite_float, default=1.0, metavar="F",
                   help="keep tiles with at least this fraction of valid pixels (default: 1.0)")
    g.add_argument("--min-cloud", type=_finite_float, default=0.0, metavar="F", help="minimum cloud cover (default: 0)")
    g.add_argument("--max-cloud", type=_finite_float, default=1.0, metavar="F", help="maximum cloud cover (default: 1)")
    g.add_argument("--test-fraction", type=_finite_float, default=0.2, metavar="F",
                   help="fraction of the AOIs without a split that go to test (default: 0.2)")
    g.add_argument("--seed", type=int, default=0, help="seed of the AOI split (default: 0)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_build_dataset)

    p = sub.add_parser("convert-checkpoint", help="convert an authors' Align-CR checkpoint to ours",
                       description="Read a checkpoint of the authors' Align-CR code (state dict under 'network', "
                                   "'module.' prefixes and weight norm allowed), infer its configuration from the "
                                   "tensor shapes and write an m3rcr checkpoint.")
    p.add_argument("src", metavar="AUTHORS.pth")
    p.add_argument("dst", metavar="OUT.ckpt")
    _add_overwrite(p)
    p.set_defaults(func=cmd_convert_checkpoint)

    p = sub.add_parser("complexity", help="parameters, MACs and latency of a model",
                       description="Exact parameter count; MACs counted with PyTorch's flop counter (convolutions, "
                                   "deformable convolutions, linear layers and attention matmuls; FLOPs = 2 x MACs); "
                                   "forward latency as the median of --repeats runs after --warmup runs.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="NAME", help="a registered model: aligncr, aligncr_wo_sar, aligncr_wo_align, ...")
    src.add_argument("--checkpoint", metavar="CKPT", help="an m3rcr checkpoint")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="model configuration override (repeatable)")
    p.add_argument("--size", type=_positive, nargs="+", default=[160], metavar="N",
                   help="input size: N or H W (default: 160)")
    p.add_argument("--batch-size", type=_positive, default=1, help="batch size (default: 1)")
    p.add_argument("--repeats", type=_non_negative, default=5, help="timed runs; 0 skips timing (default: 5)")
    p.add_argument("--warmup", type=_non_negative, default=1, help="untimed runs first (default: 1)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="float32, or autocast to bfloat16 / float16 (default: float32)")
    p.add_argument("--threads", type=_positive, help="CPU threads (default: torch's)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_complexity)
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
