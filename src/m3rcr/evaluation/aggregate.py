"""Results of one method trained with several seeds: mean and spread of every metric.

Evaluation summaries (``metrics.json``) and semantic results have nested dicts of numbers.
:func:`aggregate` averages every number over the runs (lists element by element) and keeps the
sample standard deviation (``ddof=1``) of each in a parallel structure under ``"std"``, with the
number of runs under ``"runs"``. Tables print ``mean ± std``; a single run has no ``"std"``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

#: count-like keys: equal across seeds of one evaluation, never given a spread
_COUNTS = {"images", "pixels", "cloudy_pixels", "clear_pixels", "confusion_matrix"}


def _numbers(values: Sequence[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)]


def _merge(items: Sequence[Any], key: str | None) -> tuple[Any, Any]:
    """(mean structure, std structure) of equally shaped items."""
    first = items[0]
    if isinstance(first, Mapping):
        mean, std = {}, {}
        for k in first:
            m, s = _merge([it.get(k) if isinstance(it, Mapping) else None for it in items], k)
            mean[k] = m
            if s is not None:
                std[k] = s
        return mean, (std or None)
    if isinstance(first, list) and key not in _COUNTS:
        if not all(isinstance(it, list) and len(it) == len(first) for it in items):
            return first, None
        pairs = [_merge([it[i] for it in items], None) for i in range(len(first))]
        return [p[0] for p in pairs], [p[1] for p in pairs]
    nums = _numbers(items)
    if key in _COUNTS or not nums or isinstance(first, bool) or not isinstance(first, int | float | None):
        return first, None
    mean = sum(nums) / len(nums)
    if len(nums) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in nums) / (len(nums) - 1))


#: the metric sections of an evaluation summary and of a semantic result; everything else (settings,
#: paths, counts) is taken from the first run
METRIC_SECTIONS = ("overall", "per_class", "per_bin", "removal", "per_class_iou")


def aggregate(results: Sequence[Mapping[str, Any]], sections: Sequence[str] = METRIC_SECTIONS) -> dict[str, Any]:
    """The first run's summary with every number of its metric ``sections`` replaced by the mean over
    ``results``; ``"std"``: the sample standard deviations (only with two or more runs); ``"runs"``: how
    many. One run is returned as is (plus ``runs``)."""
    if not results:
        raise ValueError("nothing to aggregate")
    out = {**results[0], "runs": len(results)}
    if len(results) == 1:
        return out
    std: dict[str, Any] = {}
    for key in sections:
        if key in results[0]:
            out[key], s = _merge([r.get(key) for r in results], key)
            if s is not None:
                std[key] = s
    out["std"] = std
    return out


def spread(summary: Mapping[str, Any], *path: str | int) -> float | None:
    """The standard deviation stored for ``path`` in an aggregated summary (None for a single run)."""
    return value(summary.get("std") or {}, *path)


def value(summary: Mapping[str, Any], *path: str | int) -> float | None:
    """The value at ``path`` (None where missing)."""
    node: Any = summary
    for key in path:
        if isinstance(node, Mapping):
            node = node.get(key)
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            return None
    return float(node) if isinstance(node, int | float) and not isinstance(node, bool) else None
