"""The validity study: does Align-CR beat its ablations when the SAR is misaligned, and by how much as the
misalignment grows? Runs configs/validity.yaml at several misalignment levels (all methods at the main
level, the Align-CR variants at every level; each resumable), then measures whether the trained
alignment recovers the true shift, how flat each validation loss is at the end, and writes
docs/validity.md with its figures.

    python benchmarks/validity.py                     # 6, 0, 3, 12 px in one process
    python benchmarks/validity.py --levels 0 6 --report-only

On 2 CPU cores four single-threaded processes finish sooner (how docs/validity.md was made):

    python benchmarks/validity.py --levels 6 --variants-only --threads 1 &   # the three Align-CR variants
    python benchmarks/validity.py --others --threads 1 &                     # the five other methods at 6 px
    python benchmarks/validity.py --levels 0 --threads 1 &
    python benchmarks/validity.py --levels 12 --threads 1 &
    wait; python benchmarks/validity.py --levels 0 6 12 --variants-only --report-only

Align-CR w/o SAR never reads the SAR, and the optical images and clouds are identical at every level
(``SynthConfig.sar_shift_px``), so it is trained at the main level only and stands for every level.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from m3rcr.benchmark import Benchmark, load_benchmark_config
from m3rcr.evaluation.aggregate import spread, value

ROOT = Path(__file__).resolve().parents[1]

SWEPT = ("Align-CR", "Align-CR w/o Align")  # trained at every level (plus the cloudy floor)
MAIN = 6.0


def level_config(base: dict[str, Any], level: float, out: Path, variants_only: bool = False) -> dict[str, Any]:
    """The base configuration at one misalignment level (its own data and output folders); with
    ``variants_only`` the main level trains only the Align-CR variants too."""
    config = copy.deepcopy(base)
    tag = f"shift{level:g}"
    config["out"] = str(out / tag)
    config["data"]["root"] = str(out / f"data_{tag}")
    config["data"]["synth"] = {**config["data"]["synth"], "sar_shift_px": float(level)}
    keep = SWEPT + (("Align-CR w/o SAR",) if level == MAIN else ())
    if level != MAIN or variants_only:
        config["methods"] = [m for m in config["methods"] if m.get("kind") == "cloudy" or m["name"] in keep]
    return config


def others_config(base: dict[str, Any], out: Path, only: list[str] | None = None, part: str = "") -> dict[str, Any]:
    """The methods other than the Align-CR variants at the main level (or those named in ``only``), in
    folders of their own (``shift6_others<part>``), so that further processes can train them while the
    first trains the variants."""
    config = level_config(base, MAIN, out)
    tag = f"shift{MAIN:g}_others{part}"
    config["out"], config["data"]["root"] = str(out / tag), str(out / f"data_{tag}")
    names = [m["name"] for m in config["methods"]]
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise SystemExit(f"--only: no method {unknown} in the configuration (there are {names})")
    config["methods"] = [m for m in config["methods"] if m.get("kind") == "cloudy" or (
        m["name"] in only if only else m["name"] not in SWEPT + ("Align-CR w/o SAR",))]
    return config


def offsets_vs_truth(bench: Benchmark, seed: int) -> dict[str, float] | None:
    """Mean offset of the first alignment block's level-1 deformable convolution per test image, against
    the true SAR displacement (both in optical pixels): least-squares gain and R^2 over images."""
    import torch

    from m3rcr.data import M3RCRDataset, Sampling
    from m3rcr.models import load_model

    method = next(m for m in bench.config["methods"] if m["name"] == "Align-CR")
    ckpt = bench.checkpoint_of(method, seed)
    if not ckpt.is_file():
        return None
    model = load_model(ckpt).eval()
    dcn = model.blocks[0].align.pcd.dcn_pack["l1"]
    captured: list[torch.Tensor] = []
    hook = dcn.conv_offset.register_forward_hook(lambda m, i, o: captured.append(o.detach()))
    largest = [0.0]  # the largest offset of any alignment DCN, in its own feature pixels

    def track(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
        n = 2 * module.deformable_groups * module.kernel_size ** 2
        largest[0] = max(largest[0], float(output[:, :n].abs().max()))

    hooks = [mod.conv_offset.register_forward_hook(
        lambda m, i, o, mod=mod: track(mod, i, o)) for mod in model.modules() if hasattr(mod, "conv_offset")]
    truth = {s["name"]: s for s in json.loads((bench.root / "synthetic.json").read_text())["samples"]
             if s["split"] == bench.split}
    ds = M3RCRDataset(bench.root, bench.split, sampling=Sampling(crop_size=bench.crop, crop="center"))
    pred, true = [], []
    with torch.no_grad():
        for i in range(len(ds)):
            s = ds[i]
            captured.clear()
            model(s["cloudy"][None], s["sar"][None])
            t = captured[0]
            n = 2 * dcn.deformable_groups * dcn.kernel_size ** 2
            off = t[0, :n].reshape(-1, 2, *t.shape[-2:])  # (groups x taps, (dy, dx), h, w), feature pixels
            dy, dx = (float(off[:, k].mean()) * 2 for k in (0, 1))  # features are at half resolution
            east, north = truth[s["name"]]["sar_shift_m"]
            pred.append((dx, dy))
            true.append((east / 3.0, -north / 3.0))  # (x, y) optical pixels; y grows southwards
    hook.remove()
    for h in hooks:
        h.remove()
    p, t = np.array(pred), np.array(true)
    if np.abs(t).max() == 0:
        return {"images": len(p), "mean_abs_offset_px": float(np.abs(p).mean()), "gain": float("nan"),
                "r2": float("nan"), "largest_offset": largest[0]}
    gain = float((p * t).sum() / (t * t).sum())  # offset = gain x true shift, through the origin
    r2 = 1.0 - float(((p - gain * t) ** 2).sum() / ((p - p.mean(0)) ** 2).sum())
    return {"images": len(p), "gain": gain, "r2": r2, "mean_abs_offset_px": float(np.abs(p).mean()),
            "largest_offset": largest[0]}


def val_rows(bench: Benchmark, name: str) -> list[tuple[int | None, list[dict[str, str]]]]:
    """Per seed of one method: the rows of its CSV log that hold a validation result."""
    import csv

    method = next((m for m in bench.config["methods"] if m["name"] == name), None)
    runs = []
    for seed in bench.seeds(method) if method else []:
        log = bench.run_dir(method, seed) / "logs" / "csv" / "metrics.csv"
        if log.is_file():
            with log.open(newline="") as f:
                runs.append((seed, [r for r in csv.DictReader(f) if r.get("val/loss") and r.get("val/psnr")]))
    return runs


def training_lengths(bench: Benchmark) -> dict[str, list[dict[str, Any]]]:
    """Per method, per seed, from the CSV logs: epochs trained, the epoch of the best validation PSNR
    (1-based; the checkpoint scored) and how flat the validation loss is at the end: the relative change
    of its mean over the last 5 epochs against the 5 before (``None`` with fewer than 10 epochs)."""
    lengths: dict[str, list[dict[str, Any]]] = {}
    for method in bench.config["methods"]:
        if method.get("kind") == "cloudy":
            continue
        for seed, rows in val_rows(bench, method["name"]):
            if not rows:
                continue
            best = max(rows, key=lambda r: float(r["val/psnr"]))
            loss = [float(r["val/loss"]) for r in rows]
            change = None
            if len(loss) >= 10:
                last, before = float(np.mean(loss[-5:])), float(np.mean(loss[-10:-5]))
                change = (last - before) / before
            lengths.setdefault(method["name"], []).append(
                {"seed": seed, "epochs": int(rows[-1]["epoch"]) + 1, "best": int(best["epoch"]) + 1,
                 "flat_change": change})
    return lengths


def per_seed_mae(bench: Benchmark, name: str) -> dict[int, float]:
    """Cloudy-pixel MAE of one method per seed, from its evaluations."""
    method = next((m for m in bench.config["methods"] if m["name"] == name), None)
    if method is None:
        return {}
    out = {}
    for seed in bench.seeds(method):
        f = bench.eval_dir(method, seed) / "metrics.json"
        if f.is_file():
            v = value(json.loads(f.read_text()), "removal", "mae_cloudy")
            if v is not None:
                out[seed] = v
    return out


def paired(a: dict[int, float], b: dict[int, float]) -> tuple[float, float, int] | None:
    """Per-seed differences a - b (a seed holds out the same validation tiles for every method, so pairing
    removes what the methods of one seed share) as (mean, sample std, seeds)."""
    diffs = [a[k] - b[k] for k in a if k in b]
    if not diffs:
        return None
    return float(np.mean(diffs)), (float(np.std(diffs, ddof=1)) if len(diffs) > 1 else float("nan")), len(diffs)


def fmt(summary: dict[str, Any], path: tuple[str, ...], scale: float = 1.0, decimals: int = 2) -> str:
    v, s = value(summary, *path), spread(summary, *path)
    if v is None:
        return "-"
    return f"{v * scale:.{decimals}f}" + ("" if s is None else f" ± {s * scale:.{decimals}f}")


def override(base: dict[str, Any], key: str) -> str | None:
    """The value a ``key=value`` entry of the configuration's global overrides sets (None if none does;
    the last entry wins, as in the configuration system)."""
    for item in reversed(base.get("overrides", [])):
        if isinstance(item, str) and item.split("=", 1)[0].strip() == key:
            return item.split("=", 1)[1].strip()
    return None


def write_doc(base: dict[str, Any], out: Path, levels: list[float], seconds: dict[str, float],
              diagnostics: dict[float, Any], lengths: dict[float, dict[str, list[dict[str, Any]]]],
              benches: dict[float, Benchmark], others: list[Path] | None = None,
              earlier: tuple[Path, str] | None = None) -> None:
    """docs/validity.md and its figures from the finished runs; ``earlier``: the main-level folder of an
    earlier run and how it differed, for a second all-methods table."""
    from matplotlib.figure import Figure

    results = {lv: json.loads((out / f"shift{lv:g}" / "report" / "results.json").read_text())
               for lv in levels if (out / f"shift{lv:g}" / "report" / "results.json").is_file()}
    if MAIN not in results:
        raise SystemExit(f"no finished run at the main level ({MAIN:g} px) in {out}")
    main = results[MAIN]["image"]
    images = ROOT / "docs" / "images"
    images.mkdir(parents=True, exist_ok=True)
    xs = sorted(results)
    variants = (("Align-CR", "tab:red"), ("Align-CR w/o Align", "tab:blue"), ("Align-CR w/o SAR", "tab:gray"))

    # figure 1: cloudy-pixel MAE of the three variants against the misalignment
    fig = Figure(figsize=(7.5, 3.6), layout="constrained")
    ax = fig.subplots()
    for name, colour in variants[:2]:
        y = [value(results[lv]["image"].get(name, {}), "removal", "mae_cloudy") for lv in xs]
        e = [spread(results[lv]["image"].get(name, {}), "removal", "mae_cloudy") for lv in xs]
        ax.errorbar(xs, [np.nan if v is None else 100 * v for v in y], yerr=[0 if v is None else 100 * v for v in e],
                    marker="o", capsize=3, color=colour, label=f"{name} (mean ± std, {len(base['seeds'])} seeds)")
    wo_sar = main.get("Align-CR w/o SAR", {})
    v, s = value(wo_sar, "removal", "mae_cloudy"), spread(wo_sar, "removal", "mae_cloudy") or 0.0
    if v is not None:
        ax.axhline(100 * v, color="tab:gray", ls="--", label="Align-CR w/o SAR (no SAR: any level)")
        ax.axhspan(100 * (v - s), 100 * (v + s), color="tab:gray", alpha=0.15)
    ax.set_xlabel("SAR misalignment (optical pixels of 3 m)")
    ax.set_ylabel("MAE on cloudy pixels (x100)")
    ax.set_xticks(xs)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(images / "validity_misalignment.png", dpi=110)

    # figure 2: validation loss per epoch, every seed, one panel per level: is it flat at the end?
    fig = Figure(figsize=(3.2 * len(xs), 3.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(xs), sharey=True))
    for ax, lv in zip(axes, xs, strict=True):
        for name, colour in variants:
            bench = benches[lv] if name != "Align-CR w/o SAR" else benches[MAIN]
            for k, (_, rows) in enumerate(val_rows(bench, name)):
                curve = [float(r["val/loss"]) for r in rows]
                ax.plot(range(1, len(curve) + 1), curve, color=colour, lw=1, alpha=0.8,
                        label=name if k == 0 else None)
        ax.set_title(f"{lv:g} px misalignment", fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation loss")
    axes[0].legend(fontsize=7)
    fig.savefig(images / "validity_val_loss.png", dpi=100)

    synth, seeds = base["data"]["synth"], base["seeds"]
    lines = ["# Validity: does the alignment pay off?", "",
             ("Generated by `python benchmarks/validity.py` from `configs/validity.yaml`; numbers are mean ± sample "
              f"standard deviation over {len(seeds)} training seeds ({', '.join(map(str, seeds))}) on the same data."),
             ""]
    machine = f"{platform.processor() or platform.machine()}, {platform.system()}"
    try:
        machine = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import os

    import torch

    per_level = ", ".join(f"{k} px {v / 60:.0f} min" for k, v in sorted(seconds.items(), key=lambda kv: float(kv[0])))
    device = "CPU only"
    if override(base, "trainer.accelerator") != "cpu" and torch.cuda.is_available():
        device = f"training on {torch.cuda.get_device_name(0)}"
    lines += [f"Ran on: {machine}, {os.cpu_count()} cores, torch {torch.__version__}, {device}"
              + (f"; wall time of each level's process: {per_level}" if seconds else "") + ".", ""]
    epochs = override(base, "trainer.max_epochs")
    kind = override(base, "schedule.kind")
    if kind == "linear":
        schedule = (f"the learning rate constant for {override(base, 'schedule.constant_epochs')} epochs, then "
                    f"linearly down over {override(base, 'schedule.decay_epochs')}")
    else:
        schedule = f"learning-rate schedule `{kind}`"
    stopping = override(base, "run.early_stopping")
    aligncr = next(m for m in base["methods"] if m["name"] == "Align-CR")
    align_lr = next((o.split("=", 1)[1] for o in aligncr.get("overrides", []) if o.startswith("optim.align_lr=")), None)
    lines += ["## Set-up", "",
              (f"- Data: `m3rcr synth` with {synth['train']} training and {synth['test']} test tiles (seed "
               f"{synth['seed']}); every sample's SAR content is "
               "displaced by exactly *d* optical pixels in a random direction (`--sar-shift d`), "
               "with d = " + ", ".join(f"{lv:g}" for lv in xs) + ". The optical images, clouds and "
               "masks are the same at every level; only the SAR moves. 20 % of the training tiles are held out "
               "for validation, drawn by the run's seed (the same tiles for every method of a seed)."),
              ("- Training: narrow widths with the paper's width ratios (Align-CR: G0 16, G 8, C 2, D 2), each "
               f"method with its own loss and optimiser, 64 px crops, batch 4, {epochs} epochs for every run ("
               f"{schedule}), " + ("no early stopping" if stopping is None else f"early stopping {stopping}")
               + (f", Align-CR's alignment at learning rate {align_lr}" if align_lr else "")
               + ". The checkpoint with the best validation PSNR is scored."),
              ("- Scores: whole 300 x 300 test tiles; the cloud-removal checks (`m3rcr evaluate`) look at cloudy "
               "pixels only: MAE, and MAE relative to filling each image's clouds with its mean clear-sky "
               "reflectance. Differences are paired by seed: the mean ± std of the per-seed differences."), ""]

    lines += ["## The misalignment sweep", "", "![Cloudy-pixel MAE against misalignment](images/validity_misalignment.png)",
              "", ("| Misalignment (px) | Align-CR | Align-CR w/o Align | Align-CR w/o SAR | Align-CR minus w/o Align "
                   "(paired) | w/o Align minus w/o SAR (paired) |"), "|---|---|---|---|---|---|"]
    wo_sar_seeds = per_seed_mae(benches[MAIN], "Align-CR w/o SAR")

    def pair(d: tuple[float, float, int] | None) -> str:
        return "-" if d is None else f"{100 * d[0]:+.2f} ± {100 * d[1]:.2f}"

    for lv in xs:
        img = results[lv]["image"]
        a_seeds, b_seeds = per_seed_mae(benches[lv], "Align-CR"), per_seed_mae(benches[lv], "Align-CR w/o Align")
        lines.append(f"| {lv:g} | {fmt(img.get('Align-CR', {}), ('removal', 'mae_cloudy'), 100)} | "
                     f"{fmt(img.get('Align-CR w/o Align', {}), ('removal', 'mae_cloudy'), 100)} | "
                     f"{fmt(wo_sar, ('removal', 'mae_cloudy'), 100)} | {pair(paired(a_seeds, b_seeds))} | "
                     f"{pair(paired(b_seeds, wo_sar_seeds))} |")
    lines += ["", "Cloudy-pixel MAE x100 (lower is better); a negative difference means the first is better.", ""]

    if lengths:
        lines += ["## Is the validation loss flat?", "", "![Validation loss per epoch](images/validity_val_loss.png)", "",
                  ("Per seed: the change of the mean validation loss over the last 5 epochs against the 5 before "
                   "(negative: still falling), and in brackets the epoch of the best validation PSNR (the "
                   "checkpoint scored) of the epochs trained."), "",
                  "| Misalignment (px) | Method | " + " | ".join(f"seed {k}" for k in seeds) + " |",
                  "|---|---|" + "---|" * len(seeds)]
        for lv, per_method in sorted(lengths.items()):
            for name, runs in per_method.items():
                cells = [("-" if r["flat_change"] is None else f"{100 * r['flat_change']:+.1f} %")
                         + f" ({r['best']} of {r['epochs']})" for r in runs]
                lines.append(f"| {lv:g} | {name} | " + " | ".join(cells + ["-"] * (len(seeds) - len(cells))) + " |")
        lines.append("")
    if diagnostics:
        lines += ["## Does the alignment find the shift?", "",
                  ("The mean offset of Align-CR's first level-1 deformable convolution on each test image, against "
                   "the true SAR displacement (optical pixels): the least-squares gain (1 = the alignment undoes "
                   "the shift exactly, 0 = it ignores it), the share of the offsets' variance the shift explains, and the "
                   "largest offset any of the alignment's deformable convolutions produces on the test tiles."),
                  "", "| Misalignment (px) | seed | gain | R^2 | mean abs offset (px) | largest offset, any alignment DCN (feature px) |",
                  "|---|---|---|---|---|---|"]
        for lv, per_seed in sorted(diagnostics.items()):
            for seed, d in per_seed.items():
                if d:
                    # R^2 compares with the offsets' own variance: meaningless when they are all ~0
                    r2 = "-" if d["mean_abs_offset_px"] < 0.05 or d["r2"] != d["r2"] else f"{d['r2']:.3f}"
                    gain = "-" if d["gain"] != d["gain"] else f"{d['gain']:.3f}"
                    lines.append(f"| {lv:g} | {seed} | {gain} | {r2} | {d['mean_abs_offset_px']:.2f} | "
                                 f"{d.get('largest_offset', float('nan')):.2f} |")
        lines.append("")

    table = dict(main)
    if others:
        variants_here = {k: v for k, v in main.items() if k in SWEPT + ("Align-CR w/o SAR",)}
        table = {}
        for folder in others:
            found = json.loads((folder / "report" / "results.json").read_text())["image"]
            table.update({k: v for k, v in found.items() if k not in variants_here and k not in table})
        table.update(variants_here)
        order = [m["name"] for m in base["methods"]]  # the configuration's order, whichever folder had them
        table = {k: table[k] for k in sorted(table, key=lambda k: order.index(k) if k in order else len(order))}
    lines += [f"## All methods at {MAIN:g} px misalignment", ""]
    if others:
        lines += [("The methods other than the Align-CR variants were trained with the same configuration by further "
                   "processes (`--others`; folders " + ", ".join(f"`{f.name}`" for f in others)
                   + ", each with its own copy of the same data)."), ""]
    header = ["| Method | MAE cloudy (x100) | vs mean fill | MAE all (x100) | PSNR (dB) | SSIM | SAM (deg) |",
              "|---|---|---|---|---|---|---|"]

    def rows(results: dict[str, Any]) -> list[str]:
        return [f"| {name} | {fmt(r, ('removal', 'mae_cloudy'), 100)} | {fmt(r, ('removal', 'mae_ratio'), 1, 3)} | "
                f"{fmt(r, ('overall', 'mae'), 100)} | {fmt(r, ('overall', 'psnr'))} | "
                f"{fmt(r, ('overall', 'ssim'), 1, 3)} | {fmt(r, ('overall', 'sam'))} |" for name, r in results.items()]

    lines += [*header, *rows(table), ""]
    if earlier is not None:
        lines += [f"### The first run of this study ({earlier[1]})", "", *header,
                  *rows(json.loads((earlier[0] / "report" / "results.json").read_text())["image"]), ""]
    doc = ROOT / "docs" / "validity.md"
    existing = doc.read_text() if doc.is_file() else ""
    marker = "## What it means"
    tail = existing[existing.index(marker):] if marker in existing else f"{marker}\n\n(to be written)\n"
    doc.write_text("\n".join(lines) + "\n" + tail)
    print(f"wrote {doc}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "validity.yaml"))
    parser.add_argument("--out", default=str(ROOT / "outputs" / "validity"))
    parser.add_argument("--levels", type=float, nargs="+", default=[MAIN, 0.0, 3.0, 12.0])
    parser.add_argument("--report-only", action="store_true", help="only write docs/validity.md from finished runs")
    parser.add_argument("--threads", type=int, help="CPU threads for this process (two processes on different "
                        "levels with one thread each finish sooner on 2 cores than one with two)")
    parser.add_argument("--others", action="store_true",
                        help="only train the five methods other than the Align-CR variants at the main level, in a "
                        "folder of their own (run beside a --variants-only process; no report)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="extra overrides for every run, after the configuration's (use with another --out), "
                        "e.g. a longer training on a GPU: trainer.accelerator=auto trainer.max_epochs=150 "
                        "schedule.constant_epochs=60 schedule.decay_epochs=90")
    parser.add_argument("--earlier", type=Path, help="the main-level folder (shift6) of an earlier run of the "
                        "study, whose all-methods table the report shows too")
    parser.add_argument("--earlier-note", default="an earlier configuration",
                        help="with --earlier: how that run differed, for the table's title")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="with --others: just these methods")
    parser.add_argument("--part", default="", help="with --others: suffix of its folder (shift6_others<PART>), so "
                        "that several --others processes can run side by side")
    parser.add_argument("--variants-only", action="store_true",
                        help="train only the Align-CR variants at the main level too (not the five other methods)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    base = load_benchmark_config(args.config)
    base["overrides"] = [*(base.get("overrides") or []), *args.set]
    out = Path(args.out)
    if args.others:
        t0 = time.perf_counter()
        config = others_config(base, out, args.only, args.part)
        Benchmark(config, config["out"]).run()
        print(f"{', '.join(m['name'] for m in config['methods'])} at {MAIN:g} px: {time.perf_counter() - t0:.0f} s")
        return 0
    timing_file = out / "wall_seconds.json"
    spent = json.loads(timing_file.read_text()) if timing_file.is_file() else {}
    diagnostics: dict[float, Any] = {}
    lengths: dict[float, dict[str, list[dict[str, Any]]]] = {}
    benches: dict[float, Benchmark] = {}
    for level in args.levels:
        config = level_config(base, level, out, args.variants_only)
        bench = benches[level] = Benchmark(config, config["out"])
        if not args.report_only:
            t0 = time.perf_counter()
            bench.run()
            # another process may be running other levels: merge with what it wrote meanwhile
            spent = json.loads(timing_file.read_text()) if timing_file.is_file() else {}
            spent[f"{level:g}"] = spent.get(f"{level:g}", 0.0) + time.perf_counter() - t0
            out.mkdir(parents=True, exist_ok=True)
            timing_file.write_text(json.dumps(spent, indent=1))
        diagnostics[level] = {seed: offsets_vs_truth(bench, seed) for seed in base["seeds"]}
        lengths[level] = training_lengths(bench)
    others = sorted(p for p in out.glob(f"shift{MAIN:g}_others*") if (p / "report" / "results.json").is_file())
    if args.variants_only and MAIN in lengths:
        for folder in others:
            config = others_config(base, out, None, folder.name.removeprefix(f"shift{MAIN:g}_others"))
            lengths[MAIN] = {**training_lengths(Benchmark(config, config["out"])), **lengths[MAIN]}
    if MAIN not in benches:  # w/o SAR stands for every level and is trained at the main level only
        config = level_config(base, MAIN, out, args.variants_only)
        benches[MAIN] = Benchmark(config, config["out"])
    write_doc(base, out, sorted(set(args.levels)), spent, diagnostics, lengths, benches,
              others if args.variants_only else [],
              (args.earlier, args.earlier_note) if args.earlier else None)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT, check=False)
    print(f"commit {commit.stdout.strip()}; outputs in {out}; seconds per level: {spent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
