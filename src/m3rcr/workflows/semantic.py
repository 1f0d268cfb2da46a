"""``m3rcr seg evaluate``: the semantic evaluation folder (semantic.json, Table III, Figs. 6 and 7)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from m3rcr.data import M3RCRDataset
from m3rcr.evaluation.semantic import SemanticOptions, Source, semantic_scores, write_semantic_json
from m3rcr.reports.figures import save_figure
from m3rcr.reports.semantic import landcover_maps, write_semantic_tables
from m3rcr.utils.files import check_output, refuse_replacing

#: what a semantic evaluation folder holds (and so may be replaced)
_OWN_FILES = ("semantic", "table_semantic", "fig_", ".")


def semantic_evaluate(segmenter: torch.nn.Module, dataset: M3RCRDataset, sources: Mapping[str, Source],
                      out: str | Path, options: SemanticOptions | None = None, *,
                      overwrite: bool = False) -> dict[str, Any]:
    """Segment every source's images, score them (:func:`m3rcr.evaluation.semantic.semantic_scores`), and
    write the semantic evaluation folder ``out``.

    Returns ``{source: {overall, per_bin, per_class_iou, confusion_matrix}}``. An existing, non-empty ``out``
    is refused unless ``overwrite``, and even then unless it holds only a semantic evaluation's files.
    """
    options = options or SemanticOptions()
    out = check_output(out, overwrite, folder=True)
    # its own files only (an interrupted run leaves some of them, not yet semantic.json)
    refuse_replacing(out, [dataset.root], owned=lambda d: all(p.name.startswith(_OWN_FILES) for p in d.iterdir()),
                     kind="semantic evaluation (semantic.json, table_semantic.*, fig_*.png)")
    scored = semantic_scores(segmenter, dataset, sources, options)
    write_semantic_json(out, scored.results)
    write_semantic_tables(out, scored.results)
    if scored.samples:
        save_figure(landcover_maps(scored.samples, stretch=options.stretch), out / "fig_landcover_maps.png")
    return scored.results
