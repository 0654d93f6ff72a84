"""Semantic knowledge transfer (SPEC §2.2) on hand-built maps with known answers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bestie.data.targets import make_targets
from bestie.pseudo_labels import STAT_KEYS, transfer, transfer_with_stats


def _stats(**counts: int) -> dict[str, int]:
    return {key: counts.get(key, 0) for key in STAT_KEYS}


def test_two_blobs_with_one_cue_each() -> None:
    semantic = np.zeros((40, 50), np.uint8)
    semantic[2:12, 3:13] = 1  # class 0, 10x10: centroid (6.5, 7.5) -> (6, 7)
    semantic[20:31, 30:45] = 3  # class 2, 11x15: centroid (25, 37)
    cues = np.array([[25, 40, 2], [5, 5, 0]])

    instances, stats = transfer_with_stats(semantic, cues, [2, 0])

    assert stats == _stats(components=2, accepted=2)
    np.testing.assert_array_equal(instances.labels, [0, 2])  # ascending class order
    np.testing.assert_array_equal(instances.centers, [[6, 7], [25, 37]])
    np.testing.assert_array_equal(instances.masks[0], semantic == 1)
    np.testing.assert_array_equal(instances.masks[1], semantic == 3)
    np.testing.assert_array_equal(instances.cues, [[5, 5, 0, 1], [25, 40, 2, 1]])
    assert instances.scores is None and instances.masks.dtype == bool


def test_touching_same_class_blobs_with_two_cues_are_rejected() -> None:
    semantic = np.zeros((30, 40), np.uint8)
    semantic[5:15, 5:15] = 2
    semantic[15:25, 14:24] = 2  # touches the first blob diagonally: one 8-connected component
    cues = np.array([[8, 8, 1], [20, 20, 1]])

    instances, stats = transfer_with_stats(semantic, cues, [1])

    assert len(instances) == 0
    assert stats == _stats(components=1, rejected_multiple_cues=1)


def test_diagonal_neighbours_are_one_component() -> None:
    semantic = np.zeros((30, 30), np.uint8)
    semantic[0:10, 0:10] = 1
    semantic[10:20, 10:20] = 1  # only corner (9, 9)-(10, 10) contact
    instances, stats = transfer_with_stats(semantic, np.array([[2, 2, 0]]), [0])
    assert stats == _stats(components=1, accepted=1)
    assert instances.masks[0].sum() == 200


def test_cue_of_another_class_does_not_count() -> None:
    semantic = np.zeros((30, 30), np.uint8)
    semantic[5:20, 5:20] = 1
    semantic[22:30, 22:30] = 2
    # A class-1 cue lies on the class-0 blob: class 0 has no cue, class 1's blob has none.
    _, stats = transfer_with_stats(semantic, np.array([[10, 10, 1]]), [0, 1])
    assert stats == _stats(components=2, rejected_no_cue=2)

    # With its own cue added, the class-0 blob has exactly one cue of its class.
    cues = np.array([[10, 10, 1], [12, 12, 0]])
    instances, stats = transfer_with_stats(semantic, cues, [0, 1])
    assert stats == _stats(components=2, accepted=1, rejected_no_cue=1)
    np.testing.assert_array_equal(instances.labels, [0])
    np.testing.assert_array_equal(instances.cues, [[12, 12, 0, 1]])


def test_minimum_area_is_fifty_pixels() -> None:
    semantic = np.zeros((30, 40), np.uint8)
    semantic[1:8, 1:8] = 1  # 49 pixels
    semantic[15:20, 20:30] = 1  # 50 pixels
    cues = np.array([[4, 4, 0], [17, 25, 0]])

    instances, stats = transfer_with_stats(semantic, cues, [0])

    assert stats == _stats(components=2, accepted=1, rejected_small=1)
    assert instances.masks[0].sum() == 50
    np.testing.assert_array_equal(instances.centers, [[17, 24]])  # (17.0, 24.5) truncated
    assert len(transfer(semantic, cues, [0], min_area=49)) == 2


def test_u_shaped_component_centroid_lies_outside_the_mask() -> None:
    semantic = np.zeros((30, 30), np.uint8)
    semantic[5:25, 5:10] = 1  # left arm
    semantic[5:25, 20:25] = 1  # right arm
    semantic[20:25, 10:20] = 1  # bottom bar
    cues = np.array([[6, 6, 0]])

    instances = transfer(semantic, cues, [0])

    # Area 250; mean y = (2 * 100 * 14.5 + 50 * 22) / 250 = 16.0, mean x = 14.5.
    np.testing.assert_array_equal(instances.centers, [[16, 14]])
    assert not instances.masks[0][16, 14]


def test_classes_absent_from_the_image_label_are_ignored() -> None:
    semantic = np.zeros((20, 20), np.uint8)
    semantic[2:12, 2:12] = 5  # class 4, not in the label
    cues = np.array([[5, 5, 4]])
    instances, stats = transfer_with_stats(semantic, cues, [0])
    assert len(instances) == 0
    assert stats == _stats()


def test_cue_on_background_or_ignore_counts_for_nothing() -> None:
    semantic = np.full((20, 20), 255, np.uint8)
    semantic[:, :5] = 0
    semantic[5:15, 8:18] = 1
    cues = np.array([[0, 0, 0], [1, 10, 0]])  # background, ignore
    _, stats = transfer_with_stats(semantic, cues, [0])
    assert stats == _stats(components=1, rejected_no_cue=1)


def test_image_without_label_or_cues() -> None:
    semantic = np.zeros((12, 16), np.uint8)
    semantic[2:10, 2:10] = 1
    instances, stats = transfer_with_stats(semantic, np.zeros((0, 3), np.int64), [])
    assert len(instances) == 0 and instances.image_shape == (12, 16)
    assert instances.centers.shape == (0, 2) and instances.cues.shape == (0, 4)
    assert stats == _stats()

    instances, stats = transfer_with_stats(semantic, np.zeros((0, 3)), [0])
    assert len(instances) == 0 and stats == _stats(components=1, rejected_no_cue=1)


def test_scored_cues_are_carried_into_instances() -> None:
    semantic = np.zeros((20, 20), np.uint8)
    semantic[2:12, 2:12] = 1
    cues = np.array([[3.0, 4.0, 0.0, 0.875], [15.0, 15.0, 0.0, 0.9]], np.float32)
    instances = transfer(semantic, cues, np.array([0]))
    np.testing.assert_array_equal(instances.cues, [[3, 4, 0, 0.875]])


@pytest.mark.parametrize(
    ("cues", "message"),
    [
        (np.array([[1, 1, 0], [20, 3, 0]]), r"cue 1 \(y=20, x=3, class=0\)"),
        (np.array([[1, -1, 0]]), r"cue 0 \(y=1, x=-1"),
        (np.array([[1, 1, -2]]), "negative class"),
        (np.array([[1.5, 1.0, 0.0]]), "cue 0 .* must be whole"),
        (np.array([[1, 1]]), r"\[N, 3\]"),
    ],
)
def test_malformed_cues_raise(cues: np.ndarray, message: str) -> None:
    semantic = np.zeros((20, 10), np.uint8)
    with pytest.raises(ValueError, match=message):
        transfer(semantic, cues, [0])


def test_bad_map_or_classes_raise() -> None:
    cues = np.zeros((0, 3))
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        transfer(np.zeros((2, 4, 4), np.uint8), cues, [0])
    with pytest.raises(ValueError, match="non-empty"):
        transfer(np.zeros((0, 4), np.uint8), cues, [0])  # cv2 would crash on it
    with pytest.raises(ValueError, match="integer"):
        transfer(np.zeros((4, 4), np.float32), cues, [0])
    with pytest.raises(ValueError, match="image classes"):
        transfer(np.zeros((4, 4), np.uint8), cues, [254])


# ----------------------------------------------------------------------------- reference check
def _reference(semantic, cues, classes, num_classes, sigma=6):
    """A per-component, per-pixel transcription of SPEC §2.2 (slow, obviously correct)."""
    height, width = semantic.shape
    center = np.zeros((num_classes, height, width), np.float32)
    offset = np.zeros((2, height, width), np.float32)
    weight = np.zeros((height, width), np.float32)
    for class_id in sorted(classes):
        count, labels, stats, cents = cv2.connectedComponentsWithStats(
            (semantic == class_id + 1).astype(np.uint8), connectivity=8
        )
        for k in range(1, count):
            if stats[k, cv2.CC_STAT_AREA] < 50:
                continue
            cx, cy = int(cents[k][0]), int(cents[k][1])
            hits = sum(1 for y, x, c in cues if c == class_id and labels[y, x] == k)
            if hits != 1:
                continue
            for y in range(max(0, cy - 19), min(height, cy + 20)):
                for x in range(max(0, cx - 19), min(width, cx + 20)):
                    value = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2))
                    center[class_id, y, x] = max(center[class_id, y, x], np.float32(value))
            ys, xs = np.nonzero(labels == k)
            weight[ys, xs] = 1
            offset[0, ys, xs] = cy - ys
            offset[1, ys, xs] = cx - xs
    return center, offset, weight


def _random_scene(rng: np.random.Generator, height: int, width: int):
    semantic = np.zeros((height, width), np.uint8)
    classes = rng.choice(4, size=rng.integers(1, 4), replace=False)
    cues = []
    for _ in range(rng.integers(3, 9)):
        class_id = int(rng.choice(classes))
        cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
        axes = (int(rng.integers(3, 16)), int(rng.integers(3, 16)))
        cv2.ellipse(semantic, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, class_id + 1, -1)
        for _ in range(rng.integers(0, 3)):
            cues.append((cy + int(rng.integers(-3, 4)), cx + int(rng.integers(-3, 4)), class_id))
    cues = np.array([c for c in cues if 0 <= c[0] < height and 0 <= c[1] < width], np.int64)
    # One extra class present in the map but absent from the label.
    semantic[: height // 8, : width // 8] = 5
    return semantic, cues.reshape(-1, 3), classes.tolist()


def test_transfer_and_targets_match_a_per_pixel_reference() -> None:
    rng = np.random.default_rng(7)
    for _ in range(12):
        semantic, cues, classes = _random_scene(rng, 60, 80)
        instances = transfer(semantic, cues, classes)
        actual = make_targets(instances, semantic.shape, 5)
        expected = _reference(semantic, cues.tolist(), classes, 5)
        for got, want in zip(actual, expected, strict=True):
            np.testing.assert_array_equal(got, want)
