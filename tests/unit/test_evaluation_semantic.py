"""Semantic mIoU on hand-built 4x4 label maps (0 background, c+1 class c, 255 ignore)."""

from __future__ import annotations

import numpy as np
import pytest

from bestie.evaluation.semantic import confusion, miou

GT = np.array(
    [
        [0, 0, 1, 1],
        [0, 0, 1, 1],
        [2, 2, 255, 255],
        [2, 2, 0, 0],
    ],
    np.uint8,
)
PRED = np.array(
    [
        [0, 1, 1, 1],
        [0, 0, 1, 1],
        [2, 0, 1, 2],  # the last two pixels fall on ignored ground truth
        [2, 2, 0, 0],
    ],
    np.uint8,
)
NAMES = ["aeroplane", "bicycle", "bird"]  # labels 1, 2, 3; "bird" appears nowhere


def test_confusion_by_hand():
    expected = np.array(
        [
            [5, 1, 0, 0],  # background: 6 pixels, one predicted as aeroplane
            [0, 4, 0, 0],  # aeroplane: 4 pixels, all right
            [1, 0, 3, 0],  # bicycle: 4 pixels, one predicted as background
            [0, 0, 0, 0],
        ]
    )
    np.testing.assert_array_equal(confusion(PRED, GT, num_classes=3), expected)


def test_miou_by_hand():
    result = miou(confusion(PRED, GT, num_classes=3), NAMES)
    # IoU = diagonal / (row + column - diagonal): 5/7, 4/5, 3/4; bird absent -> NaN.
    assert result["iou"]["background"] == pytest.approx(5 / 7)
    assert result["iou"]["aeroplane"] == pytest.approx(4 / 5)
    assert result["iou"]["bicycle"] == pytest.approx(3 / 4)
    assert np.isnan(result["iou"]["bird"])
    assert result["miou"] == pytest.approx((5 / 7 + 4 / 5 + 3 / 4) / 3)
    assert result["pixel_accuracy"] == pytest.approx(12 / 14)


def test_names_may_include_background():
    matrix = confusion(PRED, GT, num_classes=3)
    assert miou(matrix, ["bg", *NAMES])["iou"]["bg"] == pytest.approx(5 / 7)
    with pytest.raises(ValueError, match="class names"):
        miou(matrix, NAMES[:2])


def test_matrices_add_over_images():
    twice = confusion(PRED, GT, 3) + confusion(PRED, GT, 3)
    assert miou(twice, NAMES)["miou"] == pytest.approx(miou(confusion(PRED, GT, 3), NAMES)["miou"])


def test_empty_maps_give_nan():
    matrix = confusion(np.zeros((0, 0), np.uint8), np.zeros((0, 0), np.uint8), num_classes=3)
    assert matrix.shape == (4, 4) and matrix.sum() == 0
    result = miou(matrix, NAMES)
    assert np.isnan(result["miou"]) and np.isnan(result["pixel_accuracy"])
    all_ignored = confusion(PRED, np.full_like(GT, 255), num_classes=3)
    assert all_ignored.sum() == 0


def test_predicted_ignore_counts_as_background():
    pred = PRED.copy()
    pred[0, 2] = 255  # an aeroplane pixel left undecided
    matrix = confusion(pred, GT, num_classes=3)
    assert matrix[1, 0] == 1 and matrix[1, 1] == 3
    with pytest.raises(ValueError, match="predicted labels"):
        confusion(pred, GT, num_classes=3, ignored_prediction_as_background=False)


def test_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        confusion(PRED, GT[:3], num_classes=3)
    with pytest.raises(ValueError, match="ground-truth labels"):
        confusion(PRED, GT, num_classes=1)
    with pytest.raises(ValueError, match="square"):
        miou(np.zeros((2, 3)), ["a"])
