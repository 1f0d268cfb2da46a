"""Confusion matrices and the scores derived from them (mIoU, pixel accuracy), pooled over pixels."""

from __future__ import annotations

import torch


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int | None = None) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts, rows = target class, columns = predicted class.

    Pixels whose target is ``ignore_index`` (or outside 0..num_classes-1) are left out.
    """
    t = target.reshape(-1).long()
    p = pred.reshape(-1).long().to(t.device)
    keep = (t >= 0) & (t < num_classes) & (p >= 0) & (p < num_classes)
    if ignore_index is not None:
        keep &= t != ignore_index
    idx = t[keep] * num_classes + p[keep]
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def miou(cm: torch.Tensor) -> float | None:
    """Mean intersection over union in percent; classes absent from both target and prediction are left out."""
    cm = cm.double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    present = union > 0
    if not present.any():
        return None
    return float((tp[present] / union[present]).mean() * 100)


def pixel_accuracy(cm: torch.Tensor) -> float | None:
    """Correct pixels over all counted pixels, in percent."""
    total = cm.sum()
    return float(cm.diag().sum().double() / total * 100) if total > 0 else None


def iou_per_class(cm: torch.Tensor) -> list[float | None]:
    """IoU of each class in percent (None where the class is absent from target and prediction)."""
    cm = cm.double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    return [float(tp[i] / union[i] * 100) if union[i] > 0 else None for i in range(len(tp))]
