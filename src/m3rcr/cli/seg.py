"""The land-cover segmentation commands: seg train, seg evaluate."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from m3rcr.cli.args import (
    add_data_args,
    add_overwrite,
    add_precision_arg,
    add_stretch_arg,
    device_of,
    non_negative,
    positive,
)
from m3rcr.cli.train import PRECISION_HELP, run_training
from m3rcr.utils.files import check_output


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
    return run_training(args, ["task=segmentation", "model.name=deeplabv3plus", "model.config={encoder: resnet50}",
                               "run.dir=runs/segmentation"], task="segmentation")


def cmd_seg_evaluate(args: argparse.Namespace) -> int:
    """Segment cloud-free, cloudy and predicted images; mIoU and PA per cloud-cover bin."""
    from m3rcr.evaluation.evaluate import evaluation_dataset
    from m3rcr.evaluation.semantic import SemanticOptions, predictions_source, reference_sources
    from m3rcr.inference.predictors import model_predictor
    from m3rcr.models import load_model, load_segmentation_model
    from m3rcr.workflows import semantic_evaluate

    check_output(args.out, args.overwrite, folder=True)
    device = device_of(args.device)
    segmenter = load_segmentation_model(args.checkpoint, device=device)
    ds = evaluation_dataset(args.data, args.split, args.csv, crop=args.crop)
    sources = reference_sources()
    for name, ckpt in _named(args.method, "--method"):
        sources[name] = model_predictor(load_model(ckpt, device=device))
    for name, folder in _named(args.predictions, "--predictions"):
        sources[name] = predictions_source(folder)
    options = SemanticOptions(batch_size=args.batch_size, device=device, figure_names=args.samples,
                              figure_count=args.figure_count, progress=not args.quiet, stretch=args.stretch)
    results = semantic_evaluate(segmenter, ds, sources, args.out, options, overwrite=args.overwrite)
    for name, r in results.items():
        o = r["overall"]
        print(f"{name}: mIoU {o['miou']:.2f} %  PA {o['pa']:.2f} %" if o["miou"] is not None else f"{name}: no pixels")
    print(f"-> {args.out}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register this module's commands."""
    _add_seg(sub)


def _add_seg(sub: argparse._SubParsersAction) -> None:
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
    add_precision_arg(q, default=None, text=PRECISION_HELP)
    q.set_defaults(func=cmd_seg_train, accepts_extra=True, command="seg train")
    q = seg.add_parser("evaluate", help="segment cloud-free, cloudy and predicted images; mIoU and PA",
                       description="Apply the segmentation model to the cloud-free and cloudy images and to each "
                                   "method's predictions; mIoU and pixel accuracy overall and per cloud-cover bin.")
    add_data_args(q, split_default="test")
    q.add_argument("--checkpoint", required=True, metavar="SEG.ckpt", help="the segmentation model")
    q.add_argument("--method", action="append", metavar="NAME=CKPT", help="a cloud-removal checkpoint (repeatable)")
    q.add_argument("--predictions", action="append", metavar="NAME=DIR",
                   help="a folder of predicted GeoTIFFs, e.g. DIR/predictions of m3rcr evaluate (repeatable)")
    q.add_argument("--out", required=True, metavar="DIR")
    q.add_argument("--crop", type=positive, metavar="N", help="centred N x N crop (default: whole tiles)")
    q.add_argument("--batch-size", type=positive, default=4)
    q.add_argument("--device", default="auto")
    q.add_argument("--samples", nargs="+", metavar="NAME", help="samples for the land-cover figure")
    q.add_argument("--figure-count", type=non_negative, default=3)
    add_stretch_arg(q)
    q.add_argument("--quiet", action="store_true")
    add_overwrite(q)
    q.set_defaults(func=cmd_seg_evaluate, command="seg evaluate")
