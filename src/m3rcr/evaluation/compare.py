"""Several evaluation folders read back as one comparison: each method's (seed-aggregated) results, NDVI
histograms and saved predictions, checked to score the same images. Rendering it is
:func:`m3rcr.workflows.compare`'s job."""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from m3rcr.errors import DataError
from m3rcr.evaluation.aggregate import aggregate
from m3rcr.evaluation.evaluate import evaluation_dataset, read_prediction, spread_over_bins

#: one method's evaluation folder, or the folders of its seeds
Folders = Sequence[str | Path | Sequence[str | Path]]


@dataclass
class Comparison:
    """Per method label: its evaluation folders, its aggregated results (mean ± std over folders), its NDVI
    histogram (where its first folder has one) and predictions folder (where its first folder saved them)."""

    groups: dict[str, list[Path]]
    results: dict[str, Any]
    histograms: dict[str, np.ndarray]
    predictions: dict[str, Path]


def read_evaluation(folder: Path) -> tuple[dict[str, Any], set[str] | None]:
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


def _check_same_images(folder: Path, data: dict[str, Any], images: set[str] | None,
                       first: tuple[Path, dict[str, Any], set[str] | None]) -> None:
    """Refuse an evaluation of other images than the first one's."""
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


def _evaluation_groups(folders: Folders) -> list[tuple[list[Path], list[dict[str, Any]]]]:
    """Each method's folders and their metrics, checked to score the same images as the first evaluation."""
    groups: list[tuple[list[Path], list[dict[str, Any]]]] = []
    first: tuple[Path, dict[str, Any], set[str] | None] | None = None
    for i, item in enumerate(folders):
        group = [Path(item)] if isinstance(item, str | Path) else [Path(f) for f in item]
        if not group:
            raise ValueError(f"method {i + 1}: no evaluation folder")
        runs = []
        for folder in group:
            data, images = read_evaluation(folder)
            if first is None:
                first = (folder, data, images)
            _check_same_images(folder, data, images, first)
            runs.append(data)
        groups.append((group, runs))
    return groups


def _check_names(names: Sequence[str], folders: Folders) -> None:
    if len(names) != len(folders):
        raise ValueError(f"--names: {len(names)} name(s) for {len(folders)} evaluation(s); give one per folder")
    if any(not str(n).strip() for n in names):
        raise ValueError("--names: a method name is empty")
    repeated = sorted(n for n, k in Counter(names).items() if k > 1)
    if repeated:
        raise ValueError(f"--names: {', '.join(map(repr, repeated))} given more than once; every method needs "
                         "its own name")


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


def load_comparison(folders: Folders, names: Sequence[str] | None = None) -> Comparison:
    """Read several evaluations as one comparison.

    Each item of ``folders`` is one method: an evaluation folder, or a list of folders (the same method
    trained with several seeds), whose metrics are averaged with their spread
    (:func:`m3rcr.evaluation.aggregate.aggregate`). Every evaluation must score the same images (same split,
    crop and image names). Methods are labelled by ``names``, else by the method recorded in each folder;
    two folders recording the same method (e.g. the cloudy input of two runs) get their folder names added
    rather than being merged into one row.
    """
    if names is not None:
        _check_names(names, folders)
    groups = _evaluation_groups(folders)
    comparison = Comparison({}, {}, {}, {})
    for (group, runs), label in zip(groups, _method_labels(groups, names)):
        comparison.groups[label] = group
        comparison.results[label] = aggregate(runs)
        hist_file = group[0] / "ndvi_histogram.npy"
        if hist_file.is_file():
            comparison.histograms[label] = np.load(hist_file, allow_pickle=False)
        if (group[0] / "predictions").is_dir():
            comparison.predictions[label] = group[0] / "predictions"
    return comparison


def comparison_samples(comparison: Comparison, count: int
                       ) -> tuple[list[dict[str, Any]], dict[str, list[torch.Tensor]]]:
    """Up to ``count`` samples spread over the cloud-cover bins that every method with saved predictions
    predicted, read again from the evaluated dataset, and those predictions (per method label); nothing
    when no method saved predictions."""
    if not comparison.predictions:
        return [], {}
    label = next(iter(comparison.predictions))
    first = comparison.results[label]
    crop = first.get("crop_size")
    ds = evaluation_dataset(first["data"], first["split"], sar_mode=first.get("sar_mode", "nearest"),
                            crop=tuple(crop) if crop else None)
    with open(comparison.predictions[label].parent / "metrics.csv") as fh:  # cloud cover without reading images
        covers = {row["name"]: float(row["cloud_cover"]) for row in csv.DictReader(fh)}
    common = [(n, covers[n]) for n in ds.names
              if n in covers and all((p / f"{n}.tif").is_file() for p in comparison.predictions.values())]
    picked = spread_over_bins(common, count)
    index = {n: i for i, n in enumerate(ds.names)}
    samples = [ds[index[n]] for n in picked]
    predictions = {m: [read_prediction(p / f"{n}.tif") for n in picked] for m, p in comparison.predictions.items()}
    return samples, predictions
