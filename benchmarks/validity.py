"""The validity study: does Align-CR beat its ablations when the SAR is misaligned, and by how much as the
misalignment grows? Runs configs/validity.yaml at several misalignment levels (all methods at the main
level, the Align-CR variants at every level; each resumable), then measures whether the trained
alignment recovers the true shift, and writes docs/validity.md with its figures.

    python benchmarks/validity.py                     # 6, 0, 3, 12 px; about 40 min for 6 px (all methods), 25-30 min per further level, 2 CPU cores
    python benchmarks/validity.py --levels 0 6 --report-only

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


def level_config(base: dict[str, Any], level: float, out: Path) -> dict[str, Any]:
    """The base configuration at one misalignment level (its own data and output folders)."""
    config = copy.deepcopy(base)
    tag = f"shift{level:g}"
    config["out"] = str(out / tag)
    config["data"]["root"] = str(out / f"data_{tag}")
    config["data"]["synth"] = {**config["data"]["synth"], "sar_shift_px": float(level)}
    if level != MAIN:
        config["methods"] = [m for m in config["methods"] if m.get("kind") == "cloudy" or m["name"] in SWEPT]
    return config


def offsets_vs_truth(bench: Benchmark, seed: int) -> dict[str, float] | None:
    """Mean offset of the first alignment block's level-1 deformable convolution per test image, against
    the true SAR displacement (both in optical pixels): least-squares gain and R^2 over images."""
    import torch

    from m3rcr.data import M3RCRDataset
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
    ds = M3RCRDataset(bench.root, bench.split, crop_size=bench.crop, crop="center")
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


def training_lengths(bench: Benchmark) -> dict[str, list[tuple[int, int]]]:
    """Per method, per seed: (epochs trained, epoch of the best validation PSNR), 1-based, from the CSV logs."""
    import csv

    lengths: dict[str, list[tuple[int, int]]] = {}
    for method in bench.config["methods"]:
        if method.get("kind") == "cloudy":
            continue
        for seed in bench.seeds(method):
            log = bench.run_dir(method, seed) / "logs" / "csv" / "metrics.csv"
            if not log.is_file():
                continue
            with log.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("val/psnr")]
            if rows:
                best = max(rows, key=lambda r: float(r["val/psnr"]))
                lengths.setdefault(method["name"], []).append((int(rows[-1]["epoch"]) + 1, int(best["epoch"]) + 1))
    return lengths


def fmt(summary: dict[str, Any], path: tuple[str, ...], scale: float = 1.0, decimals: int = 2) -> str:
    v, s = value(summary, *path), spread(summary, *path)
    if v is None:
        return "-"
    return f"{v * scale:.{decimals}f}" + ("" if s is None else f" ± {s * scale:.{decimals}f}")


def write_doc(base: dict[str, Any], out: Path, levels: list[float], seconds: float | None,
              diagnostics: dict[float, Any], lengths: dict[float, dict[str, list[tuple[int, int]]]]) -> None:
    """docs/validity.md and its figures from the finished runs."""
    from matplotlib.figure import Figure

    results = {lv: json.loads((out / f"shift{lv:g}" / "report" / "results.json").read_text())
               for lv in levels if (out / f"shift{lv:g}" / "report" / "results.json").is_file()}
    if MAIN not in results:
        raise SystemExit(f"no finished run at the main level ({MAIN:g} px) in {out}")
    main = results[MAIN]["image"]
    images = ROOT / "docs" / "images"
    images.mkdir(parents=True, exist_ok=True)

    # figure: cloudy-pixel MAE of the three variants against the misalignment
    fig = Figure(figsize=(7.5, 3.6), layout="constrained")
    ax = fig.subplots()
    xs = sorted(results)
    for name, colour in (("Align-CR", "tab:red"), ("Align-CR w/o Align", "tab:blue")):
        y = [value(results[lv]["image"].get(name, {}), "removal", "mae_cloudy") for lv in xs]
        e = [spread(results[lv]["image"].get(name, {}), "removal", "mae_cloudy") for lv in xs]
        ax.errorbar(xs, [np.nan if v is None else 100 * v for v in y], yerr=[0 if v is None else 100 * v for v in e],
                    marker="o", capsize=3, color=colour, label=name)
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

    synth, seeds = base["data"]["synth"], base["seeds"]
    lines = ["# Validity: does the alignment pay off?", "",
             ("Generated by `python benchmarks/validity.py` from `configs/validity.yaml`; numbers are mean ± sample "
              f"standard deviation over {len(seeds)} training seeds ({', '.join(map(str, seeds))}) on the same data."),
             ""]
    machine = f"{platform.processor() or platform.machine()}, {platform.system()}"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
        machine = cpu
    except (OSError, StopIteration):
        pass
    import os

    import torch

    lines += [f"Ran on: {machine}, {os.cpu_count()} cores, torch {torch.__version__}, CPU only"
              + (f"; wall time {seconds / 3600:.2f} h." if seconds else "."), ""]
    lines += ["## Set-up", "",
              (f"- Data: `m3rcr synth` with {synth['train']} training and {synth['test']} test tiles (seed "
               f"{synth['seed']}); every sample's SAR content is "
               "displaced by exactly *d* optical pixels in a random direction (`--sar-shift d`), "
               "with d = " + ", ".join(f"{lv:g}" for lv in sorted(results)) + ". The optical images, clouds and "
              "masks are the same at every level; only the SAR moves."),
              ("- Methods: all eight at narrow widths with the paper's width ratios (Align-CR: G0 16, G 8, C 2, "
              "D 2), each with its own loss and optimiser, 64 px crops, batch 4, at most 40 epochs, early "
              "stopping when the validation loss has not improved for 5 epochs, learning rate halved every 5 "
              "epochs after 15. The checkpoint with the best validation PSNR is scored."),
              ("- Scores: whole 300 x 300 test tiles; the cloud-removal checks (`m3rcr evaluate`) look at cloudy "
              "pixels only: MAE, and MAE relative to filling each image's clouds with its mean clear-sky "
              "reflectance."), ""]
    lines += [f"## All methods at {MAIN:g} px misalignment", "",
              "| Method | MAE cloudy (x100) | vs mean fill | MAE all (x100) | PSNR (dB) | SSIM | SAM (deg) |",
              "|---|---|---|---|---|---|---|"]
    for name, r in main.items():
        lines.append(f"| {name} | {fmt(r, ('removal', 'mae_cloudy'), 100)} | {fmt(r, ('removal', 'mae_ratio'), 1, 3)} | "
                     f"{fmt(r, ('overall', 'mae'), 100)} | {fmt(r, ('overall', 'psnr'))} | "
                     f"{fmt(r, ('overall', 'ssim'), 1, 3)} | {fmt(r, ('overall', 'sam'))} |")
    lines += ["", "## The misalignment sweep", "", "![Cloudy-pixel MAE against misalignment](images/validity_misalignment.png)",
              "", "| Misalignment (px) | Align-CR | Align-CR w/o Align | Align-CR w/o SAR | Align-CR minus w/o Align |",
              "|---|---|---|---|---|"]
    for lv in sorted(results):
        img = results[lv]["image"]
        a, b = img.get("Align-CR", {}), img.get("Align-CR w/o Align", {})
        va, vb = value(a, "removal", "mae_cloudy"), value(b, "removal", "mae_cloudy")
        diff = "-" if va is None or vb is None else f"{100 * (va - vb):+.2f}"
        lines.append(f"| {lv:g} | {fmt(a, ('removal', 'mae_cloudy'), 100)} | {fmt(b, ('removal', 'mae_cloudy'), 100)} | "
                     f"{fmt(wo_sar, ('removal', 'mae_cloudy'), 100)} | {diff} |")
    lines += ["", "Cloudy-pixel MAE x100 (lower is better).", ""]
    if lengths:
        lines += ["## How long each run trained", "",
                  ("Epochs trained before early stopping (of at most 40) and, in brackets, the epoch of the best "
                  "validation PSNR (the checkpoint scored), per seed."), "",
                  "| Misalignment (px) | Method | " + " | ".join(f"seed {k}" for k in seeds) + " |",
                  "|---|---|" + "---|" * len(seeds)]
        for lv, per_method in sorted(lengths.items()):
            for name, runs in per_method.items():
                cells = [f"{n} ({b})" for n, b in runs] + ["-"] * (len(seeds) - len(runs))
                lines.append(f"| {lv:g} | {name} | " + " | ".join(cells) + " |")
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
    args = parser.parse_args()
    base = load_benchmark_config(args.config)
    out = Path(args.out)
    timing_file = out / "wall_seconds.json"
    spent = json.loads(timing_file.read_text()) if timing_file.is_file() else {}
    diagnostics: dict[float, Any] = {}
    lengths: dict[float, dict[str, list[tuple[int, int]]]] = {}
    for level in args.levels:
        config = level_config(base, level, out)
        bench = Benchmark(config, config["out"])
        if not args.report_only:
            t0 = time.perf_counter()
            bench.run()
            spent[f"{level:g}"] = spent.get(f"{level:g}", 0.0) + time.perf_counter() - t0
            out.mkdir(parents=True, exist_ok=True)
            timing_file.write_text(json.dumps(spent, indent=1))
        diagnostics[level] = {seed: offsets_vs_truth(bench, seed) for seed in base["seeds"]}
        lengths[level] = training_lengths(bench)
    write_doc(base, out, sorted(set(args.levels)), sum(spent.values()) or None, diagnostics, lengths)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT, check=False)
    print(f"commit {commit.stdout.strip()}; outputs in {out}; seconds per level: {spent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
