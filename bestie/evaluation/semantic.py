"""Semantic-segmentation mIoU from a confusion matrix (used for the WSSS maps, DESIGN §5).

Label maps use 0 for background, c+1 for class c and 255 for ignore. Ground-truth pixels at
255 are left out. Predicted pixels at 255 (regions a WSSS method left undecided) count as
background by default, as IRN's ``eval_sem_seg`` does, so that leaving pixels undecided
never raises the score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bestie.structures import IGNORE_LABEL


def confusion(
    pred: np.ndarray,
    gt: np.ndarray,
    num_classes: int,
    *,
    ignored_prediction_as_background: bool = True,
) -> np.ndarray:
    """Pixel confusion matrix of one label map (sum the matrices over a split).

    Args:
        pred: int [H, W] predicted label map, values in 0..num_classes (and 255).
        gt: int [H, W] ground-truth label map, values in 0..num_classes or 255 (ignored).
        num_classes: C, the number of foreground classes.
        ignored_prediction_as_background: count predicted 255 pixels as background; when
            False a predicted 255 is an error.

    Returns:
        int64 [C+1, C+1]: entry [g, p] counts the pixels with ground truth g predicted p.

    Raises:
        ValueError: on size mismatch or labels out of range.
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground-truth shape {gt.shape}")
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}")
    size = num_classes + 1
    gt = gt.reshape(-1).astype(np.int64)
    pred = pred.reshape(-1).astype(np.int64)
    if ignored_prediction_as_background:
        pred = np.where(pred == IGNORE_LABEL, 0, pred)
    keep = gt != IGNORE_LABEL
    gt, pred = gt[keep], pred[keep]
    for name, labels in (("ground-truth", gt), ("predicted", pred)):
        if labels.size and (labels.min() < 0 or labels.max() >= size):
            raise ValueError(
                f"{name} labels must lie in 0..{num_classes}"
                f"{' or 255' if name == 'ground-truth' else ''}, found "
                f"{labels.min()}..{labels.max()}"
            )
    counts = np.bincount(gt * size + pred, minlength=size * size)
    return counts.reshape(size, size)


def miou(confusion_matrix: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """mIoU, per-class IoU and pixel accuracy of a confusion matrix.

    Args:
        confusion_matrix: int [C+1, C+1], rows ground truth, columns prediction (as from
            :func:`confusion`).
        class_names: the C foreground names (``"background"`` is put first), or all C+1.

    Returns:
        ``{"miou": float, "iou": {name: float}, "pixel_accuracy": float}`` as fractions.
        A class absent from both ground truth and prediction has IoU NaN and is left out of
        the mean; with no counted pixel every figure is NaN.

    Raises:
        ValueError: if the matrix is not square or the names do not fit it.
    """
    matrix = np.asarray(confusion_matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"confusion matrix must be square [C+1, C+1], got {matrix.shape}")
    names = list(class_names)
    if len(names) == matrix.shape[0] - 1:
        names = ["background", *names]
    if len(names) != matrix.shape[0]:
        raise ValueError(f"{len(class_names)} class names for a {matrix.shape[0]}-row matrix")
    correct = np.diag(matrix)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - correct
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, correct / union, np.nan)
    valid = iou[~np.isnan(iou)]
    total = matrix.sum()
    return {
        "miou": float(valid.mean()) if valid.size else float("nan"),
        "iou": {name: float(value) for name, value in zip(names, iou, strict=True)},
        "pixel_accuracy": float(correct.sum() / total) if total > 0 else float("nan"),
    }
