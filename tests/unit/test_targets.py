"""Centre, offset and weight targets (SPEC §2.2-2.3), checked value by value."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bestie.data.targets import centroids, draw_gaussians, gaussian_patch, make_targets
from bestie.structures import Instances


def _g(dy: int, dx: int, sigma: float = 6) -> np.float32:
    return np.float32(np.exp(-(dy**2 + dx**2) / (2 * sigma**2)))


def _brute_force(points, classes, channels, height, width, sigma=6):
    """Per-pixel max over points of the Gaussian within the 39x39 window (σ = 6)."""
    heat = np.zeros((channels, height, width), np.float32)
    for (py, px), class_id in zip(points, classes, strict=True):
        if not (0 <= py < height and 0 <= px < width):
            continue
        for y in range(height):
            for x in range(width):
                if abs(y - py) <= 19 and abs(x - px) <= 19:
                    heat[class_id, y, x] = max(heat[class_id, y, x], _g(y - py, x - px, sigma))
    return heat


def _box_instances(boxes, labels, shape, centers=None) -> Instances:
    masks = np.zeros((len(boxes), *shape), bool)
    for mask, (y0, y1, x0, x1) in zip(masks, boxes, strict=True):
        mask[y0:y1, x0:x1] = True
    return Instances(masks, labels, centers=centers)


# ----------------------------------------------------------------------------- Gaussian patch
def test_patch_is_39_wide_with_unit_peak_for_sigma_6() -> None:
    patch = gaussian_patch(6)
    assert patch.shape == (39, 39) and patch.dtype == np.float32
    assert patch[19, 19] == 1.0 and patch.max() == 1.0
    assert patch[19, 20] == _g(0, 1) and patch[0, 0] == _g(19, 19)
    np.testing.assert_array_equal(patch, patch.T)
    np.testing.assert_array_equal(patch, patch[::-1, ::-1])
    assert gaussian_patch(2).shape == (15, 15)  # 6σ + 3
    patch[0, 0] = 5.0  # a copy: the cached kernel is untouched
    assert gaussian_patch(6)[0, 0] == _g(19, 19)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_patch(0)


def test_patch_clipped_at_top_left_corner() -> None:
    heat = draw_gaussians(np.zeros((2, 30, 40), np.float32), [[0, 0]], [1])
    assert heat[1, 0, 0] == 1.0
    assert heat[1, 0, 19] == _g(0, 19) and heat[1, 19, 19] == _g(19, 19)
    assert heat[1, 0, 20] == 0 and heat[1, 20, 0] == 0
    assert np.count_nonzero(heat[1]) == 20 * 20 and not heat[0].any()


def test_patch_clipped_at_bottom_right_corner() -> None:
    heat = draw_gaussians(np.zeros((1, 30, 40), np.float32), [[29, 39]], [0])
    assert heat[0, 29, 39] == 1.0 and heat[0, 10, 20] == _g(19, 19)
    assert heat[0, 9, 39] == 0 and heat[0, 29, 19] == 0
    assert np.count_nonzero(heat) == 20 * 20


def test_centres_outside_the_image_are_skipped() -> None:
    heat = draw_gaussians(
        np.zeros((1, 30, 40), np.float32), [[-1, 5], [5, -1], [30, 5], [5, 40]], [0, 0, 0, 0]
    )
    assert not heat.any()


def test_overlapping_gaussians_are_max_combined() -> None:
    heat = draw_gaussians(np.zeros((1, 30, 40), np.float32), [[10, 10], [10, 16]], [0, 0])
    assert heat[0, 10, 13] == _g(0, 3)  # equidistant
    assert heat[0, 10, 12] == _g(0, 2)  # max(g(2), g(4)), not their sum
    assert heat[0, 10, 10] == 1.0 and heat[0, 10, 16] == 1.0
    np.testing.assert_array_equal(heat, _brute_force([(10, 10), (10, 16)], [0, 0], 1, 30, 40))


def test_draw_gaussians_matches_brute_force_near_borders() -> None:
    rng = np.random.default_rng(3)
    points = np.stack([rng.integers(-3, 28, 6), rng.integers(-3, 38, 6)], axis=1)
    classes = rng.integers(0, 2, 6)
    heat = draw_gaussians(np.zeros((2, 25, 35), np.float32), points, classes)
    np.testing.assert_array_equal(heat, _brute_force(points.tolist(), classes, 2, 25, 35))


def test_draw_gaussians_rejects_bad_classes() -> None:
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        draw_gaussians(np.zeros((2, 5, 5), np.float32), [[1, 1]], [2])
    with pytest.raises(ValueError, match="points but"):
        draw_gaussians(np.zeros((2, 5, 5), np.float32), [[1, 1]], [0, 1])


# ----------------------------------------------------------------------------- centroids
def test_centroids_match_cv2_components() -> None:
    rng = np.random.default_rng(0)
    for _ in range(30):
        noise = (rng.random((37, 53)) < 0.25).astype(np.uint8)
        binary = cv2.dilate(noise, np.ones((3, 3), np.uint8)) & (rng.random((37, 53)) < 0.85)
        count, labels, _, cents = cv2.connectedComponentsWithStats(
            binary.astype(np.uint8), connectivity=8
        )
        masks = np.stack([labels == k for k in range(1, count)])
        np.testing.assert_array_equal(centroids(masks), cents[1:, ::-1].astype(np.int64))


def test_centroids_of_empty_and_u_shaped_masks() -> None:
    masks = np.zeros((2, 30, 30), bool)
    masks[1, 5:25, 5:10] = masks[1, 5:25, 20:25] = masks[1, 20:25, 10:20] = True
    np.testing.assert_array_equal(centroids(masks), [[-1, -1], [16, 14]])
    assert centroids(np.zeros((0, 4, 4), bool)).shape == (0, 2)


# ----------------------------------------------------------------------------- make_targets
def test_offsets_weight_and_centres_of_two_instances() -> None:
    # Boxes: rows 2..5 x cols 3..8 (centroid (3.5, 5.5) -> (3, 5)), rows 10..19 x 20..29.
    instances = _box_instances([(2, 6, 3, 9), (10, 20, 20, 30)], [1, 0], (24, 32))
    center, offset, weight = make_targets(instances, (24, 32), 3)

    assert center.shape == (3, 24, 32) and offset.shape == (2, 24, 32) and weight.shape == (24, 32)
    assert center.dtype == offset.dtype == weight.dtype == np.float32
    np.testing.assert_array_equal(weight, instances.masks.any(axis=0))
    assert tuple(offset[:, 2, 3]) == (1.0, 2.0)  # (3 - 2, 5 - 3)
    assert tuple(offset[:, 5, 8]) == (-2.0, -3.0)
    assert tuple(offset[:, 10, 20]) == (4.0, 4.0)  # centroid (14.5, 24.5) -> (14, 24)
    assert tuple(offset[:, 19, 29]) == (-5.0, -5.0)
    assert not offset[:, ~instances.masks.any(axis=0)].any()
    assert center[1, 3, 5] == 1.0 and center[0, 14, 24] == 1.0 and not center[2].any()
    assert center[1, 3, 6] == _g(0, 1) and center[0, 0, 24] == _g(14, 0)


def test_given_centres_are_used_and_may_lie_outside_the_image() -> None:
    instances = _box_instances(
        [(0, 4, 0, 4), (6, 10, 6, 10)], [0, 0], (12, 12), centers=[[1, 1], [20, 8]]
    )
    center, offset, _ = make_targets(instances, (12, 12), 1)
    assert tuple(offset[:, 0, 0]) == (1.0, 1.0)
    assert tuple(offset[:, 9, 9]) == (11.0, -1.0)  # points to (20, 8), outside the image
    np.testing.assert_array_equal(center, _brute_force([(1, 1)], [0], 1, 12, 12))


def test_later_instances_overwrite_earlier_offsets() -> None:
    instances = _box_instances([(0, 10, 0, 10), (5, 15, 5, 15)], [0, 1], (16, 16))
    _, offset, weight = make_targets(instances, (16, 16), 2)
    assert tuple(offset[:, 7, 7]) == (2.0, 2.0)  # second instance's centroid (9, 9)
    assert tuple(offset[:, 2, 2]) == (2.0, 2.0)  # first instance's centroid (4, 4)
    assert weight.sum() == 100 + 100 - 25


def test_point_centres_replace_instance_centres_but_not_offsets() -> None:
    instances = _box_instances([(2, 6, 3, 9)], [1], (24, 32))
    points = np.array([[20, 30, 1], [0, 0, 0], [23, 5, 2], [-1, 3, 1]])
    center, offset, weight = make_targets(
        instances, (24, 32), 3, point_centres=points, image_classes=[0, 1]
    )
    expected = _brute_force([(20, 30), (0, 0)], [1, 0], 3, 24, 32)
    np.testing.assert_array_equal(center, expected)  # class 2 dropped, (-1, 3) skipped
    assert center[1, 3, 5] == 0.0  # no Gaussian at the instance centroid
    assert tuple(offset[:, 2, 3]) == (1.0, 2.0)  # still to the centroid (3, 5)
    assert weight.sum() == 24

    center, _, _ = make_targets(instances, (24, 32), 3, point_centres=points)
    assert center[2, 23, 5] == 1.0  # no image_classes: every point is drawn


def test_empty_instances_and_empty_masks() -> None:
    center, offset, weight = make_targets(Instances.empty(8, 9), (8, 9), 4)
    assert center.shape == (4, 8, 9) and offset.shape == (2, 8, 9) and weight.shape == (8, 9)
    assert not center.any() and not offset.any() and not weight.any()

    masks = np.zeros((2, 8, 9), bool)
    masks[1, 2:4, 2:4] = True
    center, offset, weight = make_targets(Instances(masks, [0, 1]), (8, 9), 2)
    assert not center[0].any() and center[1, 2, 2] == 1.0 and weight.sum() == 4

    center, _, _ = make_targets(Instances.empty(8, 9), (8, 9), 2, point_centres=np.zeros((0, 3)))
    assert not center.any()


def test_make_targets_rejects_bad_inputs() -> None:
    instances = _box_instances([(0, 2, 0, 2)], [3], (8, 8))
    with pytest.raises(ValueError, match="expected"):
        make_targets(instances, (8, 9), 4)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        make_targets(instances, (8, 8), 3)
    with pytest.raises(ValueError, match="point_centres"):
        make_targets(instances, (8, 8), 4, point_centres=np.zeros((2, 2)))
