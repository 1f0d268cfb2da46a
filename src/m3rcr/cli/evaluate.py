"""Evaluation commands: evaluate, compare, complexity, benchmark."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from m3rcr.cli.args import (
    PRECISION_NAMES,
    add_compile_arg,
    add_data_args,
    add_overwrite,
    add_precision_arg,
    add_stretch_arg,
    dataset_options,
    device_of,
    non_negative,
    open_dataset,
    positive,
    precision_name,
)
from m3rcr.utils.files import check_output


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score a checkpoint, the cloudy input or the mean fill on a split, under the dataset's metric protocol."""
    from m3rcr.evaluation.evaluate import EvalOptions
    from m3rcr.reports.evaluation import summary_text
    from m3rcr.workflows import evaluate

    check_output(args.out, args.overwrite, folder=True)  # before minutes of work
    device = device_of(args.device)
    ds = _evaluation_data(args)
    predict, method, settings = _method(args, device)
    options = EvalOptions(batch_size=args.batch_size, device=device, num_workers=args.workers, clip=args.clip,
                          save_predictions=args.save_predictions, figure_names=args.samples,
                          figure_count=args.figure_count, settings=settings, progress=not args.quiet,
                          stretch=args.stretch)
    summary = evaluate(predict, ds, args.out, method, options, overwrite=args.overwrite)
    print(summary_text(method, summary, args.out))
    compiled = getattr(predict, "compiled", None)
    if compiled is not None:
        print(compiled.report.describe())
    return 0


def _evaluation_data(args: argparse.Namespace) -> Any:
    """The split to score. M3R-CR: :func:`~m3rcr.evaluation.evaluate.evaluation_dataset` (land cover on the
    optical grid). SEN12MS-CR: :func:`~m3rcr.cli.args.open_dataset`, with a SEN12MS-CR checkpoint's
    preprocessing and bands as defaults. A checkpoint trained on another band layout or preprocessing is refused
    (a one-line DataError) before the model is loaded."""
    from m3rcr.evaluation.evaluate import evaluation_dataset
    from m3rcr.models.checkpoint import check_data_fits, checkpoint_data, dataset_defaults, read_checkpoint

    record = checkpoint_data(read_checkpoint(args.checkpoint)) if args.checkpoint else None
    if getattr(args, "dataset", "m3rcr") == "m3rcr":
        dataset_options(args)  # refuses SEN12MS-CR's flags
        ds = evaluation_dataset(args.data, args.split, args.csv, sar_mode=args.sar_mode,
                                sar_resampling=args.sar_resampling, crop=args.crop)
        preprocessing = None
    else:
        ds = open_dataset(args, dataset_defaults(record, args.dataset) if args.checkpoint else None)
        preprocessing = getattr(ds, "preprocessing", None)
    if args.checkpoint:
        check_data_fits(record, ds.spec, args.checkpoint, preprocessing=preprocessing)
    return ds


def _method(args: argparse.Namespace, device: Any) -> tuple[Any, str, dict[str, Any]]:
    """The predictor of --checkpoint or --method cloudy / mean, its name and the settings to record."""
    from m3rcr.inference.compiled import compile_backend
    from m3rcr.inference.predictors import cloudy_predictor, mean_fill_predictor, model_predictor
    from m3rcr.models import load_model

    if args.method == "cloudy":
        return cloudy_predictor, args.name or "cloudy", {"checkpoint": None}
    if args.method == "mean":
        return mean_fill_predictor, args.name or "mean", {"checkpoint": None}
    if not args.checkpoint:
        raise ValueError("give --checkpoint CKPT or --method cloudy|mean")
    model = load_model(args.checkpoint, device=device)
    settings = {"checkpoint": str(args.checkpoint), "model": getattr(model, "registry_name", None),
                "precision": args.precision, "compile": compile_backend(args.compile)}
    predict = model_predictor(model, args.precision, compile=args.compile)
    return predict, args.name or getattr(model, "registry_name", "model"), settings


def cmd_compare(args: argparse.Namespace) -> int:
    """One set of tables and figures for several evaluations."""
    from m3rcr.workflows import compare

    compare(args.folders, args.out, args.names, overwrite=args.overwrite, stretch=args.stretch)
    print(f"tables and figures in {args.out}; open {Path(args.out) / 'report.html'} in a browser")
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


def cmd_complexity(args: argparse.Namespace) -> int:
    """Parameters, MACs and latency of a model."""
    import torch

    from m3rcr.evaluation.complexity import measure
    from m3rcr.models import create_model, load_model
    from m3rcr.models.precision import precision_dtype

    if args.threads:
        torch.set_num_threads(args.threads)
    device = str(device_of(args.device))
    dtype = precision_dtype(_complexity_precision(args))
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
    if args.compile and args.repeats == 0:
        raise ValueError("--compile is timed with the latency: give --repeats of at least 1")
    result = measure(model, name, size=size, repeats=args.repeats, warmup=args.warmup, device=device, dtype=dtype,
                     batch_size=args.batch_size, compile=args.compile)
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(result.describe())
    return 0


def _complexity_precision(args: argparse.Namespace) -> str:
    """--precision, or the deprecated --dtype it replaced (both given: they must agree)."""
    import sys

    if args.dtype is None:
        return args.precision or "float32"
    print("m3rcr complexity: warning: --dtype is deprecated; use --precision", file=sys.stderr)
    if args.precision is not None and args.precision != args.dtype:
        raise ValueError(f"--dtype {args.dtype} and --precision {args.precision} disagree: give --precision "
                         "only")
    return args.dtype


def cmd_benchmark(args: argparse.Namespace) -> int:
    """Train (or load), evaluate and measure every method of a benchmark configuration; one report."""
    from m3rcr.benchmark import Benchmark, benchmark_inputs, load_benchmark_config, prepare_out

    config = load_benchmark_config(args.config)
    out = args.out or config.get("out")
    if not out:
        raise ValueError("give --out DIR (or 'out' in the configuration)")
    if prepare_out(out, args.overwrite, benchmark_inputs(config)):
        print(f"continuing the benchmark in {out}: finished steps with unchanged inputs are skipped "
              "(--overwrite starts again)")
    Benchmark(config, out).run()
    print(f"report: {Path(out) / 'report' / 'report.html'} (and report.md beside it)")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register this module's commands."""
    _add_evaluate(sub)
    _add_compare(sub)
    _add_complexity(sub)
    _add_benchmark(sub)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score a checkpoint or the cloudy input on a split",
                       description="Image-reconstruction metrics of the M3R-CR benchmark (MAE, PSNR, SSIM, SAM) "
                                   "overall, per land-cover class and per cloud-cover bin; writes metrics.json, "
                                   "metrics.csv, tables (Table II layout) and figures (Fig. 4 and 5 layouts). With "
                                   "--dataset sen12mscr, the community's SEN12MS-CR protocol instead: RMSE, PSNR, "
                                   "MAE, SAM and SSIM per image over all the dataset's bands on reflectance in "
                                   "[0, 1], means skipping NaN, per s2cloudless cloud-cover bin.")
    add_data_args(p, split_default="test")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", metavar="CKPT", help="an m3rcr checkpoint")
    what.add_argument("--method", choices=("cloudy", "mean"),
                      help="'cloudy': score the cloudy input itself (the floor); 'mean': every pixel of a band "
                           "the mean of the cloudy input's clear pixels (all pixels without cloud masks)")
    p.add_argument("--out", required=True, metavar="DIR", help="evaluation folder")
    p.add_argument("--name", help="method name in tables (default: the model's registry name)")
    p.add_argument("--crop", type=positive, metavar="N",
                   help="centred N x N crop (160: what the authors' code evaluates; default: whole tiles)")
    p.add_argument("--sar-mode", choices=("nearest", "geo"), default="nearest", help="SAR placement (default: nearest)")
    p.add_argument("--sar-resampling", choices=("nearest", "bilinear"), default="nearest")
    p.add_argument("--batch-size", type=positive, default=4)
    p.add_argument("--workers", type=non_negative, default=0, help="DataLoader workers (default: 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    add_precision_arg(p)
    add_compile_arg(p)
    p.add_argument("--clip", action="store_true", help="clip predictions to [0, 1] before scoring")
    p.add_argument("--save-predictions", action="store_true",
                   help="write predictions/NAME.tif (georeferenced, uint16 reflectance x 10000, every optical band)")
    p.add_argument("--samples", nargs="+", metavar="NAME", help="samples for the qualitative figure")
    p.add_argument("--figure-count", type=non_negative, default=4, help="samples in the qualitative figure (default: 4)")
    add_stretch_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_overwrite(p)
    p.set_defaults(func=cmd_evaluate)


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="tables and figures for several evaluations",
                       description="Combine evaluation folders (m3rcr evaluate --out) into one Table II and Fig. 5.")
    p.add_argument("folders", nargs="+", metavar="DIR", help="evaluation folders")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--names", nargs="+", help="method names, one per folder (default: as evaluated)")
    add_stretch_arg(p)
    add_overwrite(p)
    p.set_defaults(func=cmd_compare)


def _add_complexity(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("complexity", help="parameters, MACs and latency of a model",
                       description="Exact parameter count; MACs counted with PyTorch's flop counter (convolutions, "
                                   "deformable convolutions, linear layers and attention matmuls; FLOPs = 2 x MACs); "
                                   "forward latency as the median of --repeats runs after --warmup runs.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="NAME", help="a registered model: aligncr, aligncr_wo_sar, aligncr_wo_align, ...")
    src.add_argument("--checkpoint", metavar="CKPT", help="an m3rcr checkpoint")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="model configuration override (repeatable)")
    p.add_argument("--size", type=positive, nargs="+", default=[160], metavar="N",
                   help="input size: N or H W (default: 160)")
    p.add_argument("--batch-size", type=positive, default=1, help="batch size (default: 1)")
    p.add_argument("--repeats", type=non_negative, default=5, help="timed runs; 0 skips timing (default: 5)")
    p.add_argument("--warmup", type=non_negative, default=1, help="untimed runs first (default: 1)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    add_precision_arg(p, default=None, text="precision of the latency measurement, as predict runs it: "
                                            "float32, bf16 (the model converted to bfloat16, channels-last) "
                                            "or fp16 (autocast); MACs are counted in float32 (default: "
                                            "float32)")
    # the flag's name before --precision: still accepted, not shown
    p.add_argument("--dtype", type=precision_name, metavar="{" + ",".join(PRECISION_NAMES) + "}",
                   help=argparse.SUPPRESS)
    add_compile_arg(p)
    p.add_argument("--threads", type=positive, help="CPU threads (default: torch's)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_complexity)


def _add_benchmark(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="the whole benchmark: train, evaluate, measure, report",
                       description="Train (or load) every method of a benchmark configuration (configs/benchmark.yaml), "
                                   "evaluate each on the same split (image, NDVI and semantic metrics), measure its "
                                   "complexity, and write every table and figure to DIR/report. Interrupted, it "
                                   "resumes without redoing finished steps.")
    p.add_argument("--config", required=True, metavar="FILE", help="benchmark configuration (YAML)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: 'out' in the configuration)")
    add_overwrite(p, "start again: delete OUT's earlier benchmark (default: continue it, skipping finished "
                      "steps)")
    p.set_defaults(func=cmd_benchmark)
