"""Whole-scene prediction: throughput and peak memory against the scene size.

Each measurement runs in a fresh process so that its peak resident memory (ru_maxrss) belongs to one
scene. Scenes are plain random uint16 rasters with a SAR raster in EPSG:4326 (content does not change
the cost).

    .venv/bin/python benchmarks/scene_predict.py --sizes 1024 2048 4096 --model identity
    .venv/bin/python benchmarks/scene_predict.py --sizes 1024 2048 --model aligncr_small --device cuda
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SMALL_ALIGNCR = dict(features=16, growth=8, convs_per_block=2, blocks=2, num_heads=2, war_blocks=2, head_channels=32,
                     deformable_groups=2)


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
    left, bottom, right, top = transform_bounds("EPSG:32631", "EPSG:4326", 500_000 - 50, 4_000_000 - 3 * n - 50,
                                                500_000 + 3 * n + 50, 4_000_000 + 50)
    res = 1e-4
    w, h = int((right - left) / res) + 2, int((top - bottom) / res) + 2
    sar = folder / f"sar_{n}.tif"
    with rasterio.open(sar, "w", driver="GTiff", width=w, height=h, count=2, dtype="float32", crs="EPSG:4326",
                       transform=Affine(res, 0, left, 0, -res, top)) as dst:
        dst.write(rng.uniform(-25, 0, (2, h, w)).astype(np.float32))
    return cloudy, sar


def _child(args: argparse.Namespace) -> None:
    import torch

    from m3rcr.inference import PredictOptions, predict_scene
    from m3rcr.models import create_model

    class Identity(torch.nn.Module):
        def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            return x

    model = Identity() if args.model == "identity" else create_model("aligncr", **SMALL_ALIGNCR)
    model = model.to(args.device).eval()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    options = PredictOptions(tile=args.tile, overlap=args.overlap, batch_size=args.batch_size, device=args.device)
    stats = predict_scene(model, args.cloudy, args.out, args.sar, options, progress=False, overwrite=True)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(dict(seconds=seconds, rss_before_mb=before / 1024, rss_peak_mb=peak / 1024,
                          pending_mb=stats.peak_pending_bytes / 1e6, tiles=stats.tiles)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    p.add_argument("--model", choices=("identity", "aligncr_small"), default="identity")
    p.add_argument("--device", default="cpu")
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cloudy", help=argparse.SUPPRESS)
    p.add_argument("--sar", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args)
        return
    print(f"machine: {platform.processor() or platform.machine()}, {platform.platform()}; model {args.model}, "
          f"device {args.device}, tile {args.tile}, overlap {args.overlap}, batch {args.batch_size}")
    print("| scene (px) | scene as uint16 | time (s) | Mpx/s | RSS before (MB) | peak RSS (MB) | blend buffer (MB) |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            cloudy, sar = make_scene(Path(tmp), n)
            cmd = [sys.executable, __file__, "--child", "--cloudy", str(cloudy), "--sar", str(sar), "--out",
                   str(Path(tmp) / "out.tif"), "--model", args.model, "--device", args.device, "--tile",
                   str(args.tile), "--overlap", str(args.overlap), "--batch-size", str(args.batch_size)]
            r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            print(f"| {n} x {n} | {4 * n * n * 2 / 1e6:.0f} MB | {r['seconds']:.1f} | {n * n / r['seconds'] / 1e6:.2f} "
                  f"| {r['rss_before_mb']:.0f} | {r['rss_peak_mb']:.0f} | {r['pending_mb']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
