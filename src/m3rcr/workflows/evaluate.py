"""``m3rcr evaluate``: score a method on a split and write the evaluation folder.

An evaluation folder holds::

    metrics.json            settings, and ``overall`` / ``per_class`` / ``per_bin`` results
    metrics.csv             one row per image
    tables.md               Table II (a) and (b) layouts; table_per_class.csv, table_per_bin.csv
    fig_metrics_by_cloud_cover.png   Fig. 5 layout
    fig_qualitative.png     Fig. 4 layout for the chosen samples
    predictions/NAME.tif    (with save_predictions) uint16 reflectance x 10000 on the input's grid

A dataset scored under another protocol (SEN12MS-CR, ``spec.protocol == "sen12mscr"``) gets that protocol's
metrics.json (``overall``, ``per_bin``, ``unbinned``, ``per_image``), tables.md with table_overall and
table_per_bin, the metrics by cloud cover (when images have a cloud cover) and the qualitative figure in true
colour (B4, B3, B2); predictions hold all its optical bands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from m3rcr.data import CloudRemovalDataset
from m3rcr.evaluation.evaluate import EvalOptions, evaluate_into
from m3rcr.inference.predictors import Predictor
from m3rcr.reports.evaluation import write_report
from m3rcr.utils.files import atomic_dir, check_output, refuse_replacing


def evaluate(predict: Predictor, dataset: CloudRemovalDataset, out: str | Path, method: str,
             options: EvalOptions | None = None, *, overwrite: bool = False) -> dict[str, Any]:
    """Score ``predict`` on every sample of ``dataset`` and write the evaluation folder ``out``: the results
    (:func:`m3rcr.evaluation.evaluate.evaluate_into`), their tables and figures; return the summary.

    An existing, non-empty ``out`` is refused unless ``overwrite``, and even then unless it holds an earlier
    evaluation and none of the inputs (the dataset, ``options.settings["checkpoint"]``); the folder is written
    under a temporary name and replaces ``out`` only when complete, so an interrupted evaluation leaves no mix
    of old and new files.
    """
    options = options or EvalOptions()
    final = check_output(out, overwrite, folder=True)
    refuse_replacing(final, [dataset.root, (options.settings or {}).get("checkpoint")],
                     owned=lambda d: (d / "metrics.json").is_file(), kind="evaluation (metrics.json)")
    with atomic_dir(final) as tmp:
        result = evaluate_into(predict, dataset, tmp, method, options)
        write_report(tmp, result, options.stretch, spec=dataset.spec)
    return result.summary
