"""Workflows: run an evaluation (:mod:`m3rcr.evaluation`) and render it (:mod:`m3rcr.reports`) into one output
folder, as ``m3rcr evaluate``, ``compare`` and ``seg evaluate`` do."""

from m3rcr.workflows.compare import compare, compare_into
from m3rcr.workflows.evaluate import evaluate
from m3rcr.workflows.semantic import semantic_evaluate

__all__ = ["compare", "compare_into", "evaluate", "semantic_evaluate"]
