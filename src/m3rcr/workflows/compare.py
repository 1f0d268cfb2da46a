"""``m3rcr compare``: several evaluation folders as one set of tables, figures and an HTML report."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from m3rcr.evaluation.compare import Folders, comparison_samples, load_comparison
from m3rcr.reports.evaluation import write_qualitative, write_tables
from m3rcr.reports.html import write_compare_html
from m3rcr.utils.files import atomic_dir, check_output, refuse_replacing


def compare(folders: Folders, out: str | Path, names: Sequence[str] | None = None, figure_count: int = 4,
            overwrite: bool = False, html: bool = True, stretch: str = "percentile") -> dict[str, Any]:
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


def compare_into(folders: Folders, out: str | Path, names: Sequence[str] | None = None, figure_count: int = 4,
                 html: bool = True, stretch: str = "percentile") -> dict[str, Any]:
    """Combine several evaluation folders into one set of tables and figures, written into the folder ``out``;
    return each method's (aggregated) results.

    The methods, their labels and the checks are those of :func:`m3rcr.evaluation.compare.load_comparison`
    (a list of folders is one method trained with several seeds: mean ± std in every table, error bars in
    the figures). The qualitative figure shows the methods whose (first) folders hold saved predictions, on
    the samples they share, read again from the evaluated dataset. ``html``: also write ``out/report.html``
    (:func:`m3rcr.reports.html.write_compare_html`). ``stretch``: the RGB display stretch of the qualitative
    figure.
    """
    comparison = load_comparison(folders, names)
    out = Path(out)
    write_tables(out, comparison.results, comparison.histograms or None)
    write_qualitative(out, *comparison_samples(comparison, figure_count), stretch=stretch)
    if html:
        write_compare_html(out, comparison.groups)
    return comparison.results
