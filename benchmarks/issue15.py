"""Issue 15, side by side in one run: the code as the issue found it against today's paths (issue 15, item 5).

Run by hand on a quiet machine: ``.venv/bin/python benchmarks/issue15.py [--json FILE] > block.md``.
Progress goes to stderr, the Markdown block for docs/benchmarks.md to stdout. Builds the registry's
full-width ``aligncr`` (``residual_init=False`` so that the random head is not the identity and precisions
differ measurably) and measures:

1. ``forward``: batch 1 at each ``--sizes``, no autograd, four variants interleaved in this process (order
   rotated every round), ``--warmup`` calls each then the median of ``--repeats``: *issue baseline* (original
   blocks, ``fast_paths(model, False)``, and torchvision's deformable kernel: the code when the issue was
   filed), *fast float32* (today's defaults), *bf16 autocast* (``torch.autocast`` on the float32 model),
   *bf16* (``InferencePrecision(copy, "bf16")``: bf16 weights, channels-last, as ``--precision bf16``).
2. ``train``: one training step (forward, L1 loss, backward, Adam) at ``--train-batch`` x ``--train-size``:
   issue baseline, fast float32, fast float32 with activation checkpointing, bf16 autocast around forward and
   loss (as Lightning's ``bf16-mixed``). Each variant in a fresh process, whose peak memory (``ru_maxrss``;
   on CUDA ``torch.cuda.max_memory_allocated``) is its own; ``--train-warmup`` steps then the median of
   ``--train-steps``.
3. ``scene``: whole-scene prediction (``benchmarks/scene_predict.py``, full Align-CR, random weights) of one
   ``--scene-size`` scene in float32 and in bf16, each in a fresh process: Mpx/s, peak memory, output
   difference.

Then the issue's targets, met or not, computed from these numbers. ``--device cuda`` runs the same on a GPU
(synchronised timings, peak GPU memory, the paper's batch of 12 for training, the GPU targets).
``--quick --small`` checks the script in about a minute and a half (reduced model, 64 px). Full run on a
quiet 2-core CPU: about 15-20 minutes (forward 2-3, training 6-10, scene 4-5); ``--parts`` picks some.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import scene_predict  # benchmarks/scene_predict.py, beside this script
import torch
from _machine import cpu_description, gpu_description, load_average

from m3rcr.models import create_model
from m3rcr.models.blocks import deform_conv_impl, fast_paths
from m3rcr.models.precision import InferencePrecision

FORWARD_VARIANTS = ("baseline", "fast", "fp32", "autocast", "bf16")
TRAIN_VARIANTS = ("baseline", "fast", "checkpointing", "autocast")
PARTS = ("forward", "train", "scene")
LABELS = {"baseline": "issue baseline (float32)", "fast": "fast float32", "autocast": "bf16 autocast",
          "bf16": "bf16 (InferencePrecision)", "checkpointing": "fast float32 + checkpointing",
          "fp32": "float32 (InferencePrecision)"}
#: the paper's batch (12 on 2 GPUs: configs/aligncr.yaml data.batch_size, shared/specs/evaluation.md)
PAPER_BATCH = 12
#: the issue's targets: ratios to the issue baseline measured in the same run, and absolute GPU figures
FORWARD_FP32_RATIO, FORWARD_BF16_RATIO, BF16_MEAN_DIFF = 0.6, 0.2, 2e-3
TRAIN_RATIO, CHECKPOINT_MEMORY_RATIO = 0.5, 0.5
GPU_BF16_FORWARD_S, GPU_SCENE_MPX_S = 0.020, 2.0


def build_model(small: bool, seed: int, device: str) -> torch.nn.Module:
    """The full-width registry ``aligncr`` (``--small``: scene_predict's reduced one), random weights."""
    torch.manual_seed(seed)
    config = scene_predict.SMALL_ALIGNCR if small else {}
    return create_model("aligncr", residual_init=False, **config).to(device)


def variant_context(model: torch.nn.Module, variant: str, device_type: str) -> contextlib.ExitStack:
    """What makes ``model`` run as ``variant``: the original blocks and torchvision's deformable kernel for
    the baseline, bf16 autocast for ``autocast``; nothing else (the bf16 variant is a converted copy)."""
    stack = contextlib.ExitStack()
    if variant == "baseline":
        stack.enter_context(fast_paths(model, False))
        stack.enter_context(deform_conv_impl(model, "torchvision"))
    elif variant == "autocast":
        stack.enter_context(torch.autocast(device_type, dtype=torch.bfloat16))
    return stack


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _log(message: str) -> None:
    print(f"[{datetime.datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def _forward(models: dict[str, Any], variant: str, cloudy: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
    """One batch-1 forward of ``variant`` without autograd, synchronised; the output as float32."""
    with torch.no_grad():
        if variant in ("bf16", "fp32"):  # what `predict --precision bf16 / float32` runs
            run = models[variant]
            out = run.model(*run.inputs(cloudy, sar))
        else:
            with variant_context(models["model"], variant, cloudy.device.type):
                out = models["model"](cloudy, sar)
        out = out.float()
    _sync(cloudy.device)
    return out


def time_forward(models: dict[str, Any], size: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """All forward variants at ``size``, interleaved: one row each (median seconds, ratios, differences)."""
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(args.seed)
    cloudy = torch.rand(1, 4, size, size, generator=gen).to(device)
    sar = torch.rand(1, 2, size, size, generator=gen).to(device)
    outs, peaks, times = {}, {}, {v: [] for v in FORWARD_VARIANTS}
    for v in FORWARD_VARIANTS:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(max(1, args.warmup)):  # the warm-up output is the one compared
            outs[v] = _forward(models, v, cloudy, sar)
        peaks[v] = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    for i in range(args.repeats):
        k = i % len(FORWARD_VARIANTS)
        order = FORWARD_VARIANTS[k:] + FORWARD_VARIANTS[:k]  # no variant always runs first
        for v in order:
            start = time.perf_counter()
            _forward(models, v, cloudy, sar)
            times[v].append(time.perf_counter() - start)
        _log(f"forward {size}, round {i + 1}/{args.repeats}: "
             + ", ".join(f"{v} {times[v][-1]:.3f} s" for v in FORWARD_VARIANTS))
    med = {v: statistics.median(times[v]) for v in FORWARD_VARIANTS}
    rows = []
    for v in FORWARD_VARIANTS:
        d = (outs[v] - outs["fast"]).abs()
        rows.append({"size": size, "variant": v, "seconds": med[v], "all_s": times[v],
                     "vs_baseline": med[v] / med["baseline"], "vs_fast": med[v] / med["fast"],
                     "max_diff": d.max().item(), "mean_diff": d.mean().item(), "peak_gpu_mib": peaks[v]})
    return rows


def train_worker(args: argparse.Namespace) -> dict[str, Any]:
    """One training variant in this (fresh) process: step times and peak memory."""
    device = torch.device(args.device)
    variant = args.train_worker
    rss_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model = build_model(args.small, args.seed, args.device).train()
    model.checkpointing = variant == "checkpointing"
    optim = torch.optim.Adam(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(args.seed + 1)
    b, s = args.train_batch, args.train_size
    cloudy, target = (torch.rand(b, 4, s, s, generator=gen).to(device) for _ in range(2))
    sar = torch.rand(b, 2, s, s, generator=gen).to(device)
    rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    with contextlib.ExitStack() as blocks:
        if variant == "baseline":  # the original blocks, forward and backward
            blocks.enter_context(variant_context(model, "baseline", device.type))
        for i in range(args.train_warmup + args.train_steps):
            start = time.perf_counter()
            optim.zero_grad(set_to_none=True)
            # autocast around forward and loss, backward outside it (as Lightning's bf16-mixed)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=variant == "autocast"):
                loss = torch.nn.functional.l1_loss(model(cloudy, sar).float(), target)
            loss.backward()
            optim.step()
            _sync(device)
            seconds = time.perf_counter() - start
            if i >= args.train_warmup:
                times.append(seconds)
            _log(f"train {variant}: step {i + 1}/{args.train_warmup + args.train_steps} {seconds:.2f} s"
                 + (" (warm-up)" if i < args.train_warmup else ""))
    cuda = device.type == "cuda"
    return {"variant": variant, "step_s": statistics.median(times), "steps_s": times,
            "samples_s": b / statistics.median(times), "rss_imports_mib": rss_imports,
            "rss_model_mib": rss_model,
            "rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_gpu_mib": torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None}


def train_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every training variant in a fresh process (progress on stderr); a failed one is a row with 'error'."""
    rows = []
    for variant in TRAIN_VARIANTS:
        cmd = [sys.executable, __file__, "--train-worker", variant, *sys.argv[1:]]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
        if proc.returncode:
            _log(f"train {variant}: exit {proc.returncode} (its stderr is above)")
            rows.append({"variant": variant, "error": f"exit {proc.returncode}"})
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    base = next((r for r in rows if r["variant"] == "baseline" and "error" not in r), None)
    fast = next((r for r in rows if r["variant"] == "fast" and "error" not in r), None)
    key = "peak_gpu_mib" if args.device.startswith("cuda") else "rss_peak_mib"
    for r in rows:
        if "error" in r:
            continue
        r["memory_key"] = key
        r["time_vs_baseline"] = r["step_s"] / base["step_s"] if base else None
        r["memory_vs_baseline"] = r[key] / base[key] if base else None
        r["memory_vs_fast"] = r[key] / fast[key] if fast else None
    return rows


def scene_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The whole scene in float32 and bf16 (scene_predict.py, a fresh process each)."""
    settings = dict(model="aligncr_small" if args.small else "aligncr", device=args.device, tile=args.tile,
                    overlap=args.overlap, batch_size=args.scene_batch, threads=args.threads, seed=args.seed)
    return scene_predict.scene_rows([args.scene_size], ["float32", "bf16"], settings, log=_log)


def _fmt_mib(mib: float | None) -> str:
    return "-" if mib is None else f"{mib / 1024:.2f} GiB"


def _target(name: str, value: float | None, bound: float, text: str, at_most: bool = True) -> dict[str, Any]:
    met = None if value is None else (value <= bound if at_most else value >= bound)
    return {"target": name, "value": value, "bound": bound, "measured": text, "met": met}


def cpu_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's 2-core CPU targets, from this run's numbers (ratios to the issue baseline)."""
    out = []
    fwd = {(r["size"], r["variant"]): r for r in results.get("forward", [])}
    for size in sorted({r["size"] for r in results.get("forward", [])}):
        fast, bf, auto = fwd[size, "fp32"], fwd[size, "bf16"], fwd[size, "autocast"]
        out.append(_target(f"float32 forward {size} x {size} <= {FORWARD_FP32_RATIO}x baseline",
                           fast["vs_baseline"], FORWARD_FP32_RATIO, f"{fast['vs_baseline']:.2f}x"))
        out.append(_target(f"bf16 forward {size} x {size} <= {FORWARD_BF16_RATIO}x baseline float32",
                           bf["vs_baseline"], FORWARD_BF16_RATIO,
                           f"{bf['vs_baseline']:.2f}x (autocast {auto['vs_baseline']:.2f}x)"))
        out.append(_target(f"bf16 mean abs difference to float32 {size} x {size} <= {BF16_MEAN_DIFF:g}",
                           bf["mean_diff"], BF16_MEAN_DIFF,
                           f"{bf['mean_diff']:.1e} (max {bf['max_diff']:.1e})"))
    if not results.get("train"):
        return out
    train = {r["variant"]: r for r in results["train"] if "error" not in r}
    cfg = results["meta"]["train"]
    shape = f"batch {cfg['batch']}, {cfg['size']} x {cfg['size']}"
    for v, label in (("fast", "float32"), ("autocast", "bf16-mixed")):
        r = train.get(v)
        ratio = r and r["time_vs_baseline"]
        out.append(_target(f"training step {label}, {shape} <= {TRAIN_RATIO}x baseline", ratio, TRAIN_RATIO,
                           "-" if ratio is None else f"{ratio:.2f}x"))
    r = train.get("checkpointing")
    ratio = r and r["memory_vs_baseline"]
    text = "-" if ratio is None else f"{ratio:.2f}x ({r['memory_vs_fast']:.2f}x of fast float32)"
    out.append(_target(f"checkpointing peak memory, {shape} <= {CHECKPOINT_MEMORY_RATIO}x baseline", ratio,
                       CHECKPOINT_MEMORY_RATIO, text))
    return out


def gpu_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's GPU targets: bf16 forward at 160 x 160, whole-scene Mpx/s with the full Align-CR."""
    out = []
    for r in results.get("forward", []):
        if r["size"] == 160 and r["variant"] in ("bf16", "autocast"):
            name = f"{LABELS[r['variant']]} forward 160 x 160 <= {GPU_BF16_FORWARD_S * 1e3:.0f} ms"
            out.append(_target(name, r["seconds"], GPU_BF16_FORWARD_S, f"{r['seconds'] * 1e3:.1f} ms"))
    model = "reduced Align-CR" if results["meta"]["small"] else "full Align-CR"
    for r in results.get("scene", []):
        out.append(_target(f"whole scene, {model}, {r['precision']} >= {GPU_SCENE_MPX_S} Mpx/s",
                           r["mpx_s"], GPU_SCENE_MPX_S, f"{r['mpx_s']:.2f} Mpx/s", at_most=False))
    return out


def _forward_table(rows: list[dict[str, Any]], cuda: bool) -> list[str]:
    lines = ["| forward, batch 1 | variant | time | vs baseline | vs fast float32 | max abs diff "
             "| mean abs diff |" + (" peak GPU memory |" if cuda else ""),
             "|---|---|---|---|---|---|---|" + ("---|" if cuda else "")]
    for r in rows:
        t = f"{r['seconds'] * 1e3:.1f} ms" if cuda else f"{r['seconds']:.2f} s"
        diff = "- | -" if r["variant"] == "fast" else f"{r['max_diff']:.1e} | {r['mean_diff']:.1e}"
        gpu = f" {_fmt_mib(r['peak_gpu_mib'])} |" if cuda else ""
        lines.append(f"| {r['size']} x {r['size']} | {LABELS[r['variant']]} | {t} | {r['vs_baseline']:.2f} "
                     f"| {r['vs_fast']:.2f} | {diff} |{gpu}")
    return lines


def _train_table(rows: list[dict[str, Any]], cuda: bool) -> list[str]:
    mem = "peak GPU memory (allocated)" if cuda else "peak RSS"
    lines = [f"| variant | step (median) | vs baseline | samples/s | {mem} | vs baseline | vs fast float32 "
             "| RSS before the steps |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {LABELS[r['variant']]} | failed ({r['error']}) | | | | | | |")
            continue
        ratios = ["-" if r[k] is None else f"{r[k]:.2f}"
                  for k in ("time_vs_baseline", "memory_vs_baseline", "memory_vs_fast")]
        lines.append(f"| {LABELS[r['variant']]} | {r['step_s']:.3f} s | {ratios[0]} | {r['samples_s']:.2f} "
                     f"| {_fmt_mib(r[r['memory_key']])} | {ratios[1]} | {ratios[2]} "
                     f"| {_fmt_mib(r['rss_model_mib'])} |")
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The Markdown block for docs/benchmarks.md: machine, settings, one table per part, the targets."""
    m, cuda = results["meta"], results["meta"]["device"].startswith("cuda")
    machine = f"GPU: {m['gpu']}; host CPU: {m['cpu']}" if cuda else f"CPU: {m['cpu']}"
    width = " (reduced: --small)" if m["small"] else " (full width)"
    lines = ["## Issue 15 side by side (`benchmarks/issue15.py`)", "",
             f"{m['date']}, {machine}. torch {m['torch']}, {m['threads']} threads, device {m['device']}; "
             f"load average (1 / 5 / 15 min) {m['load_start']} at the start, {m['load_end']} at the end. "
             f"Model: registry `aligncr`{width}, {m['parameters'] / 1e6:.1f} M parameters, random weights "
             "(`residual_init=False`). Issue baseline: the original blocks (`fast_paths(model, False)`) and "
             "torchvision's deformable kernel, float32, the code when the issue was filed; fast float32: "
             "today's blocks called directly (plain NCHW maps); float32 (InferencePrecision): what "
             "`--precision float32` runs (the same model, channels-last maps on a CPU); bf16 autocast: "
             "`torch.autocast` on the float32 model; bf16: `InferencePrecision(model, \"bf16\")` (bf16 "
             "weights, channels-last; `--precision bf16`). The float32 target uses the InferencePrecision "
             "row."]
    if results.get("forward"):
        lines += ["", "Forward, batch 1, no autograd: variants interleaved in one process (order "
                      f"rotated each round), {m['warmup']} warm-up call(s) each, median of {m['repeats']}; "
                      "differences to fast float32 on random inputs in [0, 1].", "",
                  *_forward_table(results["forward"], cuda)]
    if results.get("train"):
        t = m["train"]
        lines += ["", f"Training step (forward, L1 loss, backward, Adam), batch {t['batch']}, "
                      f"{t['size']} x {t['size']}: each variant in a fresh process, {t['warmup']} warm-up "
                      f"step(s) then the median of {t['steps']}; peak memory over the whole process; bf16 "
                      "autocast covers forward and loss (Lightning's `bf16-mixed`).", "",
                  *_train_table(results["train"], cuda)]
    if results.get("scene"):
        s = m["scene"]
        lines += ["", "Whole-scene prediction (`benchmarks/scene_predict.py`, `predict_scene` with "
                      f"`--precision`), {s['size']} x {s['size']} random uint16 scene, tile {s['tile']}, "
                      f"overlap {s['overlap']}, batch {s['batch']}, each precision in a fresh process; "
                      "differences in reflectance to the float32 output.", "",
                  *scene_predict.markdown(results["scene"])]
    if results.get("targets"):
        where = ", GPU" if cuda else ", 2-core CPU, ratios to the issue baseline of this run"
        lines += ["", f"Targets (issue 15{where}):", "", "| target | measured | met |", "|---|---|---|"]
        for r in results["targets"]:
            met = "-" if r["met"] is None else ("**met**" if r["met"] else "**not met**")
            lines.append(f"| {r['target']} | {r['measured']} | {met} |")
    return "\n".join(lines)


def _resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the settings left unset: explicit values, else ``--quick``'s, else the device's defaults."""
    cuda = args.device.startswith("cuda")
    quick = dict(sizes=[64], repeats=1, warmup=1, train_size=64, train_warmup=1, train_steps=1,
                 scene_size=128, tile=64, overlap=16)
    full = dict(sizes=[160, 256], repeats=20 if cuda else 3, warmup=3 if cuda else 1, train_size=160,
                train_warmup=3 if cuda else 1, train_steps=10 if cuda else 2,
                scene_size=4096 if cuda else 1024, tile=256, overlap=32)
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.train_batch is None:
        args.train_batch = PAPER_BATCH if cuda and not args.quick else 2
    if args.scene_batch is None:
        args.scene_batch = 16 if cuda else 4
    return args


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (unset values resolved by :func:`_resolve`)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="default: all")
    p.add_argument("--sizes", type=int, nargs="+", help="forward sizes (default 160 256)")
    p.add_argument("--repeats", type=int, help="timed forward rounds (default 3; cuda 20)")
    p.add_argument("--warmup", type=int, help="forward warm-up calls per variant (default 1; cuda 3)")
    p.add_argument("--threads", type=int, default=2, help="torch threads, in every process")
    p.add_argument("--train-batch", type=int, help=f"default 2 (the issue's); cuda {PAPER_BATCH} (paper's)")
    p.add_argument("--train-size", type=int, help="default 160")
    p.add_argument("--train-warmup", type=int, help="default 1; cuda 3")
    p.add_argument("--train-steps", type=int, help="timed steps, default 2; cuda 10")
    p.add_argument("--scene-size", type=int, help="scene side in pixels (default 1024; cuda 4096)")
    p.add_argument("--tile", type=int, help="scene tile (default 256)")
    p.add_argument("--overlap", type=int, help="scene tile overlap (default 32)")
    p.add_argument("--scene-batch", type=int, help="tiles per model call (default 4; cuda 16)")
    p.add_argument("--small", action="store_true", help="a reduced Align-CR (to check the script)")
    p.add_argument("--quick", action="store_true", help="64 px, one timed call / step, 128 px scene")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the raw numbers here (rewritten after each part)")
    p.add_argument("--train-worker", choices=TRAIN_VARIANTS, help=argparse.SUPPRESS)
    return _resolve(p.parse_args(argv))


def _save(results: dict[str, Any], path: Path | None) -> None:
    if path is None:
        return
    from m3rcr.utils.files import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(results, indent=1))


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.train_worker:
        print(json.dumps(train_worker(args)))
        return
    cuda = args.device.startswith("cuda")
    model = build_model(args.small, args.seed, args.device).eval()
    results: dict[str, Any] = {"meta": {
        "date": datetime.date.today().isoformat(), "cpu": cpu_description(), "torch": torch.__version__,
        "gpu": gpu_description(args.device) if cuda else None, "device": args.device, "threads": args.threads,
        "small": args.small, "parameters": sum(p.numel() for p in model.parameters()), "sizes": args.sizes,
        "repeats": args.repeats, "warmup": args.warmup, "load_start": load_average(), "seed": args.seed,
        "train": dict(batch=args.train_batch, size=args.train_size, warmup=args.train_warmup,
                      steps=args.train_steps),
        "scene": dict(size=args.scene_size, tile=args.tile, overlap=args.overlap, batch=args.scene_batch)}}
    _log(f"{results['meta']['cpu']}; torch {torch.__version__}, {args.threads} threads, "
         f"load {load_average()}")
    if "forward" in args.parts:
        models = {"model": model, "bf16": InferencePrecision(copy.deepcopy(model), "bf16"),
                  "fp32": InferencePrecision(copy.deepcopy(model), "float32")}
        results["forward"] = [r for size in args.sizes for r in time_forward(models, size, args)]
        del models
        _save(results, args.json)
    del model
    if "train" in args.parts:
        results["train"] = train_rows(args)
        _save(results, args.json)
    if "scene" in args.parts:
        results["scene"] = scene_rows(args)
    results["meta"]["load_end"] = load_average()
    results["targets"] = gpu_targets(results) if cuda else cpu_targets(results)
    _save(results, args.json)
    print(markdown(results))


if __name__ == "__main__":
    main()
