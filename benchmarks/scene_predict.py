"""Whole-scene prediction: throughput and peak memory against the scene size and the precision.

Each measurement runs in a fresh process so that its peak resident memory (ru_maxrss; on CUDA also
``torch.cuda.max_memory_allocated``) belongs to one scene in one precision. Scenes are plain random uint16
rasters with a SAR raster in EPSG:4326 (content does not change the cost). ``--precision`` is passed to
``predict_scene`` as ``m3rcr predict --precision`` does; several precisions run on the same scene files, one
fresh process each, and the parent reports the difference of their outputs to the first one's.

    .venv/bin/python benchmarks/scene_predict.py --sizes 1024 2048 4096 --model identity
    .venv/bin/python benchmarks/scene_predict.py --sizes 1024 2048 --model aligncr_small --device cuda
    .venv/bin/python benchmarks/scene_predict.py --sizes 1024 --model aligncr --precision float32 bf16 \
        --threads 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _machine import cpu_description  # benchmarks/_machine.py, beside this script

SMALL_ALIGNCR = dict(features=16, growth=8, convs_per_block=2, blocks=2, num_heads=2, war_blocks=2,
                     head_channels=32, deformable_groups=2)
MODELS = ("identity", "aligncr_small", "aligncr")
#: ``--precision`` names (those of ``m3rcr predict``; aliases as m3rcr.models.precision.canonical_precision)
PRECISIONS = ("float32", "fp32", "bf16", "bfloat16", "fp16", "float16")
#: the optical scale of the scenes made here (uint16 = reflectance x 10000)
SCALE = 10000.0


def make_scene(folder: Path, n: int) -> tuple[Path, Path]:
    """An n x n 4-band uint16 scene in UTM 31N and a 10 m-equivalent SAR raster in EPSG:4326 covering it."""
    import rasterio
    from affine import Affine
    from rasterio.warp import transform_bounds
    from rasterio.windows import Window

    rng = np.random.default_rng(n)
    t = Affine(3.0, 0, 500_000, 0, -3.0, 4_000_000)
    cloudy = folder / f"cloudy_{n}.tif"
    with rasterio.open(cloudy, "w", driver="GTiff", width=n, height=n, count=4, dtype="uint16", nodata=0,
                       crs="EPSG:32631", transform=t, tiled=True, compress="deflate") as dst:
        for r in range(0, n, 512):
            h = min(512, n - r)
            dst.write(rng.integers(1, 10000, (4, h, n), dtype=np.uint16), window=Window(0, r, n, h))
    left, bottom, right, top = transform_bounds("EPSG:32631", "EPSG:4326", 500_000 - 50,
                                                4_000_000 - 3 * n - 50, 500_000 + 3 * n + 50, 4_000_000 + 50)
    res = 1e-4
    w, h = int((right - left) / res) + 2, int((top - bottom) / res) + 2
    sar = folder / f"sar_{n}.tif"
    with rasterio.open(sar, "w", driver="GTiff", width=w, height=h, count=2, dtype="float32", crs="EPSG:4326",
                       transform=Affine(res, 0, left, 0, -res, top)) as dst:
        dst.write(rng.uniform(-25, 0, (2, h, w)).astype(np.float32))
    return cloudy, sar


def _build_model(name: str, seed: int) -> Any:
    """The benchmarked model with random weights drawn from ``seed`` (content does not change the cost)."""
    import torch

    from m3rcr.models import create_model

    class Identity(torch.nn.Module):
        def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            return x

    torch.manual_seed(seed)
    if name == "identity":
        return Identity()
    # residual_init=False: the default zero last layer would make every precision return its input exactly
    return create_model("aligncr", residual_init=False, **(SMALL_ALIGNCR if name == "aligncr_small" else {}))


def _child(args: argparse.Namespace) -> None:
    import torch

    from m3rcr.inference import PredictOptions, predict_scene
    from m3rcr.models.precision import canonical_precision

    if args.threads:
        torch.set_num_threads(args.threads)
    model = _build_model(args.model, args.seed).to(args.device).eval()
    cuda = torch.device(args.device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    options = PredictOptions(tile=args.tile, overlap=args.overlap, batch_size=args.batch_size,
                             device=args.device, precision=canonical_precision(args.precision[0]))
    stats = predict_scene(model, args.cloudy, args.out, args.sar, options, progress=False, overwrite=True)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(dict(seconds=seconds, rss_before_mb=before / 1024, rss_peak_mb=peak / 1024,
                          pending_mb=stats.peak_pending_bytes / 1e6, tiles=stats.tiles,
                          tiles_run=stats.tiles_run, threads=torch.get_num_threads(),
                          cuda_peak_mb=torch.cuda.max_memory_allocated() / 2**20 if cuda else None)))


def output_difference(a: Path, b: Path, scale: float = SCALE) -> tuple[float, float]:
    """Max and mean abs difference in reflectance of two predicted scenes (pixels valid in both)."""
    import rasterio

    with rasterio.open(a) as sa, rasterio.open(b) as sb:
        x, y = sa.read(masked=True).astype(np.float64), sb.read(masked=True).astype(np.float64)
    d = np.abs(x - y) / scale
    return (float(d.max()), float(d.mean())) if d.count() else (float("nan"), float("nan"))


def measure_scene(n: int, folder: Path, cloudy: Path, sar: Path, precision: str, settings: dict[str, Any]
                  ) -> dict[str, Any]:
    """One prediction of the n x n scene in ``precision`` in a fresh process: time, Mpx/s, memory.

    ``settings``: model, device, tile, overlap, batch_size, threads (0: torch's default), seed.
    The output stays in ``folder`` as ``out_{n}_{precision}.tif`` (key ``out``).
    """
    out = folder / f"out_{n}_{precision}.tif"
    cmd = [sys.executable, __file__, "--child", "--cloudy", str(cloudy), "--sar", str(sar), "--out", str(out),
           "--precision", precision, *[f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"scene {n} x {n}, {precision}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**r, "size": n, "precision": precision, "mpx_s": n * n / r["seconds"] / 1e6, "out": str(out)}


def scene_rows(sizes: list[int], precisions: list[str], settings: dict[str, Any], log: Any = None
               ) -> list[dict[str, Any]]:
    """Every size in every precision (each in a fresh process, the same scene files for all precisions);
    each row after the first precision's also has its output's max/mean abs difference to the first's."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            cloudy, sar = make_scene(Path(tmp), n)
            first: dict[str, Any] | None = None
            for precision in precisions:
                if log:
                    log(f"scene {n} x {n}, {precision} ...")
                r = measure_scene(n, Path(tmp), cloudy, sar, precision, settings)
                if first is None:
                    first = r
                else:
                    r["max_diff"], r["mean_diff"] = output_difference(Path(first["out"]), Path(r["out"]))
                    r["speedup"] = first["seconds"] / r["seconds"]
                if log:
                    log(f"  {r['seconds']:.1f} s, {r['mpx_s']:.3f} Mpx/s, peak RSS {r['rss_peak_mb']:.0f} MB")
                rows.append(r)
    for r in rows:
        r.pop("out")  # the temporary folder is gone
    return rows


def markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The rows as a Markdown table."""
    cuda = any(r.get("cuda_peak_mb") is not None for r in rows)
    lines = ["| scene (px) | precision | tiles | time (s) | Mpx/s | speed-up | RSS before (MB) "
             "| peak RSS (MB) " + ("| peak GPU memory (MB) " if cuda else "")
             + "| blend buffer (MB) | max / mean abs diff |",
             "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if cuda else "")]
    for r in rows:
        n = r["size"]
        diff = f"{r['max_diff']:.1e} / {r['mean_diff']:.1e}" if "max_diff" in r else "-"
        speed = f"{r['speedup']:.2f}x" if "speedup" in r else "-"
        gpu = f"| {r['cuda_peak_mb']:.0f} " if cuda else ""
        lines.append(f"| {n} x {n} | {r['precision']} | {r['tiles']} | {r['seconds']:.1f} | {r['mpx_s']:.3f} "
                     f"| {speed} | {r['rss_before_mb']:.0f} | {r['rss_peak_mb']:.0f} {gpu}"
                     f"| {r['pending_mb']:.1f} | {diff} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    p.add_argument("--model", choices=MODELS, default="identity",
                   help="aligncr: the registry's full width (random weights)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["float32"],
                   help="one or more; several run on the same scene, each in a fresh process")
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0: torch's default)")
    p.add_argument("--seed", type=int, default=0, help="of the random weights")
    p.add_argument("--json", type=Path, help="also write the rows here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cloudy", help=argparse.SUPPRESS)
    p.add_argument("--sar", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args)
        return
    settings = dict(model=args.model, device=args.device, tile=args.tile, overlap=args.overlap,
                    batch_size=args.batch_size, threads=args.threads, seed=args.seed)
    print(f"machine: {cpu_description()}; model {args.model}, device {args.device}, tile {args.tile}, "
          f"overlap {args.overlap}, batch {args.batch_size}, threads {args.threads or 'default'}", flush=True)
    rows = scene_rows(args.sizes, args.precision, settings,
                      log=lambda s: print(s, file=sys.stderr, flush=True))
    print("\n".join(markdown(rows)))
    if args.json:
        from m3rcr.utils.files import atomic_path

        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps({"settings": settings, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
