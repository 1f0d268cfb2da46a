"""Evaluate a method on a split: metrics, tables, figures and (optionally) georeferenced predictions.

An evaluation folder holds::

    metrics.json            settings, and ``overall`` / ``per_class`` / ``per_bin`` results
    metrics.csv             one row per image
    tables.md               Table II (a) and (b) layouts; table_per_class.csv, table_per_bin.csv
    fig_metrics_by_cloud_cover.png   Fig. 5 layout
    fig_qualitative.png     Fig. 4 layout for the chosen samples
    predictions/NAME.tif    (with save_predictions) uint16 reflectance x 10000 on the input's grid
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from torch.utils.data import DataLoader

from m3rcr.data.dataset import M3RCRDataset, tensor_to_affine
from m3rcr.data.io import read_bands
from m3rcr.data.preprocess import cover_bin, cover_bin_label
from m3rcr.errors import DataError
from m3rcr.evaluation.metrics import MetricAccumulator, finite_or_none
from m3rcr.reports.figures import (
    metrics_by_cloud_cover,
    ndvi_by_cloud_cover,
    ndvi_density,
    qualitative_grid,
    save_figure,
)
from m3rcr.reports.tables import (
    markdown_report,
    table_ndvi,
    table_per_bin,
    table_per_class,
    table_removal,
    write_table,
)
from m3rcr.utils.files import atomic_dir, atomic_path, check_output, refuse_replacing
from m3rcr.utils.progress import progress as progress_bar

Predictor = Callable[[dict[str, Any]], torch.Tensor]


def cloudy_predictor(batch: dict[str, Any]) -> torch.Tensor:
    """The 'method' that returns the cloudy input: the floor every table shows."""
    return batch["cloudy"]


def model_predictor(model: torch.nn.Module, precision: str = "float32") -> Predictor:
    """Run ``model(cloudy, sar)`` without gradients, optionally under autocast (bfloat16 / float16)."""
    dtype = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[precision]

    def predict(batch: dict[str, Any]) -> torch.Tensor:
        x = batch["cloudy"]
        ctx = torch.autocast(x.device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            return model(x, batch["sar"]).float()

    return predict


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float):
        return finite_or_none(obj)
    return obj


def write_prediction(path: Path, prediction: torch.Tensor, crs: str, transform: torch.Tensor) -> None:
    """A (4, H, W) prediction on the [0, 1] scale as a uint16 GeoTIFF (x 10000; 0 is no-data, so >= 1)."""
    data = np.clip(np.round(prediction.detach().cpu().double().numpy() * 10000), 1, 65535).astype(np.uint16)
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                           dtype="uint16", nodata=0, crs=crs or None, transform=tensor_to_affine(transform),
                           compress="deflate", tiled=data.shape[1] >= 256 and data.shape[2] >= 256) as dst:
            dst.write(data)
            dst.descriptions = ("blue", "green", "red", "nir")


def spread_over_bins(images: Sequence[tuple[str, float]], count: int) -> list[str]:
    """Names of ``count`` images, taken from the cloud-cover bins in turn, from (name, cloud cover) pairs."""
    by_bin: dict[int, list[str]] = {}
    for name, cover in images:
        by_bin.setdefault(cover_bin(cover), []).append(name)
    picked: list[str] = []
    while len(picked) < count and any(by_bin.values()):
        for b in sorted(by_bin):
            if by_bin[b] and len(picked) < count:
                picked.append(by_bin[b].pop(0))
    return picked


def write_outputs(out: Path, method: str, summary: Mapping[str, Any], records: Sequence[Any],
                  settings: Mapping[str, Any], ndvi_hist: np.ndarray | None = None) -> None:
    """metrics.json, metrics.csv, tables and the per-bin figure of one evaluation."""
    out.mkdir(parents=True, exist_ok=True)
    payload = {"method": method, **settings, **summary}
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(_json_safe(payload), indent=1))
    with atomic_path(out / "metrics.csv") as tmp, open(tmp, "w", newline="") as fh:
        fields = ["name", "cloud_cover", "cloud_cover_bin", "mae", "psnr", "ssim", "sam", "mae_cloudy", "mae_clear",
                  "ndvi_rmse"]
        writer = csv.DictWriter(fh, fields, lineterminator="\n")
        writer.writeheader()
        for r in records:
            row = asdict(r)
            row["cloud_cover_bin"] = cover_bin_label(r.cloud_cover)
            writer.writerow(row)
    if ndvi_hist is not None:
        with atomic_path(out / "ndvi_histogram.npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.asarray(ndvi_hist, dtype=np.int64), allow_pickle=False)
    write_tables(out, {method: summary}, {method: ndvi_hist} if ndvi_hist is not None else None)


def write_tables(out: Path, results: Mapping[str, Mapping[str, Any]],
                 histograms: Mapping[str, np.ndarray] | None = None) -> None:
    """tables.md, the tables as CSV, and the per-bin figures for some methods; Fig. 8 from NDVI histograms."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "tables.md") as tmp:
        tmp.write_text(markdown_report(results))
    for stem, title, table in (
            ("table_per_class", "Table II (a): overall and per land-cover class", table_per_class(results)),
            ("table_per_bin", "Table II (b): per cloud-cover level", table_per_bin(results)),
            ("table_ndvi", "Table IV: NDVI agreement", table_ndvi(results)),
            ("table_removal", "Cloud-removal checks", table_removal(results))):
        write_table(out, stem, title, *table)
    figures = {"fig_metrics_by_cloud_cover.png": metrics_by_cloud_cover(results),
               "fig_ndvi_by_cloud_cover.png": ndvi_by_cloud_cover(results)}
    if histograms:
        figures["fig_ndvi_density.png"] = ndvi_density(histograms)
    for name, fig in figures.items():
        save_figure(fig, out / name)


def evaluate(predict: Predictor, dataset: M3RCRDataset, out: str | Path, method: str, *, overwrite: bool = False,
             **options: Any) -> dict[str, Any]:
    """Score ``predict`` on every sample of ``dataset`` and write the evaluation folder ``out``; return the summary.

    An existing, non-empty ``out`` is refused unless ``overwrite``, and even then unless it holds an earlier
    evaluation and none of the inputs (the dataset, ``options["settings"]["checkpoint"]``); the folder is written under a
    temporary name and replaces ``out`` only when complete, so an interrupted evaluation leaves no mix of old
    and new files. ``options`` are those of :func:`evaluate_into` (batch size, device, predictions, figures...).
    """
    final = check_output(out, overwrite, folder=True)
    refuse_replacing(final, [dataset.root, (options.get("settings") or {}).get("checkpoint")],
                     owned=lambda d: (d / "metrics.json").is_file(), kind="evaluation (metrics.json)")
    with atomic_dir(final) as tmp:
        return evaluate_into(predict, dataset, tmp, method, **options)


def evaluate_into(
    predict: Predictor,
    dataset: M3RCRDataset,
    out: str | Path,
    method: str,
    *,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    clip: bool = False,
    save_predictions: bool = False,
    figure_names: Sequence[str] | None = None,
    figure_count: int = 4,
    settings: Mapping[str, Any] | None = None,
    progress: bool = True,
    stretch: str = "percentile",
) -> dict[str, Any]:
    """Score ``predict`` on every sample of ``dataset``, writing the evaluation's files into the folder ``out``.

    ``clip`` clips predictions to [0, 1] before scoring (the authors do not). Images are binned by the
    cloud cover of what is scored (the crop, with a crop). ``stretch``: the RGB display stretch of the
    qualitative figure (:func:`m3rcr.data.plot.stretch_limits`). Returns the summary.
    """
    out = Path(out)
    device = torch.device(device)
    if dataset.landcover_level != 1 or dataset.landcover_mode == "native":
        raise ValueError("evaluation needs level-1 land cover on the optical grid")
    unknown = sorted(set(figure_names or []) - set(dataset.names))
    if unknown:
        raise ValueError(f"--samples: no sample named {', '.join(unknown)} in split {dataset.split!r}")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    acc = MetricAccumulator()
    wanted = set(figure_names or [])
    kept: dict[str, tuple[dict[str, Any], torch.Tensor]] = {}
    kept_per_bin: dict[int, int] = {}  # without names: up to figure_count candidates per bin, not the whole set
    for batch in progress_bar(loader, desc=f"evaluate {method}", unit="batch", enabled=progress):
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) and k != "transform" else v for k, v in batch.items()}
        pred = predict(batch).float()
        if clip:
            pred = pred.clamp(0, 1)
        acc.update(pred, batch["cloudfree"], batch["landcover"], batch["cloudmask"],
                   [float(c) for c in batch["cloud_cover"]], batch["name"], cloudy=batch["cloudy"])
        for i, name in enumerate(batch["name"]):
            if save_predictions:
                write_prediction(out / "predictions" / f"{name}.tif", pred[i], batch["crs"][i], batch["transform"][i])
            b = cover_bin(float(batch["cloud_cover"][i]))
            if name in wanted or (not wanted and kept_per_bin.get(b, 0) < figure_count):
                kept_per_bin[b] = kept_per_bin.get(b, 0) + 1
                sample = {k: (v[i].cpu() if isinstance(v, torch.Tensor) else v[i]) for k, v in batch.items()}
                kept[name] = (sample, pred[i].cpu())
    summary = acc.summary()
    info = {
        "split": dataset.split, "data": str(dataset.root), "images": len(acc.records),
        "crop_size": list(dataset.crop_size) if dataset.crop_size else None, "sar_mode": dataset.sar_mode,
        "clip": clip, "evaluated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **(settings or {}),
    }
    hist = acc.ndvi_hist.cpu().numpy() if acc.ndvi_hist is not None else None
    write_outputs(out, method, summary, acc.records, info, hist)
    picked = list(figure_names) if figure_names else spread_over_bins(
        [(r.name, r.cloud_cover) for r in acc.records], figure_count)
    names = [n for n in picked if n in kept]
    if names:
        fig = qualitative_grid([kept[n][0] for n in names], {method: [kept[n][1] for n in names]}, stretch=stretch)
        save_figure(fig, out / "fig_qualitative.png")
    return summary


def read_prediction(path: Path) -> torch.Tensor:
    """A prediction written by :func:`write_prediction`, back on the [0, 1] scale."""
    with rasterio.open(path) as src:
        return torch.from_numpy(read_bands(src, where=path).astype(np.float32) / 10000.0)


def _read_evaluation(folder: Path) -> tuple[dict[str, Any], set[str] | None]:
    """An evaluation folder's metrics.json and the names of the images it scored (None without metrics.csv)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such evaluation folder")
    path = folder / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not an evaluation folder (no metrics.json)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(path, f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(path, "not an m3rcr evaluation (expected a JSON object)")
    table = folder / "metrics.csv"
    if not table.is_file():  # the image count and data root of metrics.json are all there is to check
        return data, None
    try:
        with open(table, newline="") as fh:
            reader = csv.DictReader(fh)
            names = [row.get("name") for row in reader]
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DataError(table, f"cannot be read as CSV ({exc})") from None
    if "name" not in (reader.fieldnames or []) or not names:
        raise DataError(table, "lists no scored image (no rows, or no 'name' column): not an evaluation's metrics.csv")
    return data, {n for n in names if n}


def _evaluation_groups(folders: Sequence[str | Path | Sequence[str | Path]]
                       ) -> list[tuple[list[Path], list[dict[str, Any]]]]:
    """Each method's folders and their metrics, checked to score the same images as the first evaluation."""
    groups: list[tuple[list[Path], list[dict[str, Any]]]] = []
    first: tuple[Path, dict[str, Any], set[str] | None] | None = None
    for i, item in enumerate(folders):
        group = [Path(item)] if isinstance(item, str | Path) else [Path(f) for f in item]
        if not group:
            raise ValueError(f"method {i + 1}: no evaluation folder")
        runs = []
        for folder in group:
            data, images = _read_evaluation(folder)
            if first is None:
                first = (folder, data, images)
            ref_folder, ref, ref_images = first
            for key in ("split", "crop_size"):
                if data.get(key) != ref.get(key):
                    raise ValueError(f"{folder / 'metrics.json'}: {key} {data.get(key)!r} differs from "
                                     f"{ref.get(key)!r} of {ref_folder}; compare evaluations of the same images")
            if images is None or ref_images is None:  # without a list of names: the same count of the same data
                for key in ("images", "data"):
                    mine, theirs = data.get(key), ref.get(key)
                    if key == "data" and mine is not None and theirs is not None:
                        mine, theirs = str(Path(mine).resolve()), str(Path(theirs).resolve())
                    if mine != theirs:
                        raise ValueError(f"{folder / 'metrics.json'}: {key} {data.get(key)!r} differs from "
                                         f"{ref.get(key)!r} of {ref_folder}; compare evaluations of the same images")
            elif images != ref_images:
                only_here, only_there = sorted(images - ref_images), sorted(ref_images - images)
                raise ValueError(f"{folder}: scores other images than {ref_folder} ({len(only_here)} only here, e.g. "
                                 f"{(only_here or ['-'])[0]}; {len(only_there)} only there, e.g. "
                                 f"{(only_there or ['-'])[0]}); compare evaluations of the same images")
            runs.append(data)
        groups.append((group, runs))
    return groups


def _method_labels(groups: Sequence[tuple[list[Path], list[dict[str, Any]]]], names: Sequence[str] | None) -> list[str]:
    """One distinct label per method: ``names``, else the recorded method, with the folder added where two agree."""
    if names is not None:
        return list(names)
    base = [str(runs[0].get("method") or group[0].name) for group, runs in groups]
    repeated = {label for label, k in Counter(base).items() if k > 1}
    for where in (lambda g: g[0].name, lambda g: str(g[0])):  # the folder's name, or its whole path if need be
        labels = [f"{label} ({where(group)})" if label in repeated else label for label, (group, _) in zip(base, groups)]
        if len(set(labels)) == len(labels):
            return labels
    twice = next(label for label, k in Counter(labels).items() if k > 1)
    raise ValueError(f"{twice.rsplit(' (', 1)[-1].rstrip(')')}: given more than once")


def compare(folders: Sequence[str | Path | Sequence[str | Path]], out: str | Path, names: Sequence[str] | None = None,
            figure_count: int = 4, overwrite: bool = False, html: bool = True,
            stretch: str = "percentile") -> dict[str, Any]:
    """Combine several evaluation folders into the comparison folder ``out`` (see :func:`compare_into`).

    An existing, non-empty ``out`` is refused unless ``overwrite``, and even then unless it holds an earlier
    comparison (not an evaluation, a dataset or a run: they are not this function's to delete) and none of
    the evaluations compared; it is written under a temporary name and replaces ``out`` whole.
    """
    final = check_output(out, overwrite, folder=True)
    inputs = [f for item in folders for f in ([item] if isinstance(item, str | Path) else item)]
    refuse_replacing(final, inputs, owned=lambda d: (d / "tables.md").is_file() and not (d / "metrics.json").exists(),
                     kind="comparison (tables.md, no metrics.json)")
    with atomic_dir(final) as tmp:
        return compare_into(folders, tmp, names, figure_count=figure_count, html=html, stretch=stretch)


def compare_into(folders: Sequence[str | Path | Sequence[str | Path]], out: str | Path,
                 names: Sequence[str] | None = None, figure_count: int = 4, html: bool = True,
                 stretch: str = "percentile") -> dict[str, Any]:
    """Combine several evaluation folders into one set of tables and figures, written into the folder ``out``.

    Each item of ``folders`` is one method: an evaluation folder, or a list of folders (the same method
    trained with several seeds), whose metrics are averaged with their spread (mean ± std in every table,
    error bars in the figures; :func:`m3rcr.evaluation.aggregate.aggregate`). The qualitative figure
    shows the methods whose (first) folders hold saved predictions, on the samples they share, read
    again from the evaluated dataset.

    Every evaluation must score the same images (same split, crop and image names). Methods are labelled by
    ``names``, else by the method recorded in each folder; two folders recording the same method (e.g. the
    cloudy input of two runs) get their folder names added rather than being merged into one row.
    ``html``: also write ``out/report.html``
    (:func:`m3rcr.reports.html.write_compare_html`). ``stretch``: the RGB display stretch of the qualitative
    figure.
    """
    from m3rcr.evaluation.aggregate import aggregate

    if names is not None:
        if len(names) != len(folders):
            raise ValueError(f"--names: {len(names)} name(s) for {len(folders)} evaluation(s); give one per folder")
        if any(not str(n).strip() for n in names):
            raise ValueError("--names: a method name is empty")
        repeated = sorted(n for n, k in Counter(names).items() if k > 1)
        if repeated:
            raise ValueError(f"--names: {', '.join(map(repr, repeated))} given more than once; every method needs "
                             "its own name")
    groups = _evaluation_groups(folders)
    labels = _method_labels(groups, names)
    results: dict[str, Any] = {}
    histograms: dict[str, np.ndarray] = {}
    with_predictions: dict[str, Path] = {}
    for (group, runs), label in zip(groups, labels):
        results[label] = aggregate(runs)
        hist_file = group[0] / "ndvi_histogram.npy"
        if hist_file.is_file():
            histograms[label] = np.load(hist_file, allow_pickle=False)
        if (group[0] / "predictions").is_dir():
            with_predictions[label] = group[0] / "predictions"
    out = Path(out)
    write_tables(out, results, histograms or None)
    if with_predictions:
        first = results[next(iter(with_predictions))]
        ds = M3RCRDataset(first["data"], first["split"], sar_mode=first.get("sar_mode", "nearest"),
                          crop_size=first.get("crop_size"), crop="center")
        label = next(iter(with_predictions))
        with open(with_predictions[label].parent / "metrics.csv") as fh:  # cloud cover without reading images
            covers = {row["name"]: float(row["cloud_cover"]) for row in csv.DictReader(fh)}
        common = [(n, covers[n]) for n in ds.names
                  if n in covers and all((p / f"{n}.tif").is_file() for p in with_predictions.values())]
        picked = spread_over_bins(common, figure_count)
        if picked:
            index = {n: i for i, n in enumerate(ds.names)}
            samples = {n: ds[index[n]] for n in picked}
            fig = qualitative_grid([samples[n] for n in picked],
                                   {m: [read_prediction(p / f"{n}.tif") for n in picked]
                                    for m, p in with_predictions.items()}, stretch=stretch)
            save_figure(fig, out / "fig_qualitative.png")
    if html:
        from m3rcr.reports.html import write_compare_html

        write_compare_html(out, {label: group for (group, _), label in zip(groups, labels)})
    return results

