"""The synthetic data set: deterministic, touching instances, consistent records and GT."""

from __future__ import annotations

import filecmp
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from bestie.artifacts import decode_mask
from bestie.data.synthetic import generate_scene, generate_split, interior_point, shape_mask
from bestie.sections import SyntheticConfig

SMALL = SyntheticConfig(num_train=10, num_val=4, height=64, width=64, min_size=12, max_size=20)


def test_same_seed_same_images_and_ground_truth(tmp_path: Path) -> None:
    first = generate_split(SMALL, "train", str(tmp_path / "a"))
    second = generate_split(SMALL, "train", str(tmp_path / "b"))
    assert first[2] == second[2]
    for left, right in zip(first[0], second[0], strict=True):
        assert filecmp.cmp(left.file, right.file, shallow=False)
        assert (left.classes, left.points) == (right.classes, right.points)


def test_other_seed_and_split_differ(tmp_path: Path) -> None:
    base = generate_split(SMALL, "train", str(tmp_path / "a"))[2]
    reseeded = generate_split(replace(SMALL, seed=1), "train", str(tmp_path / "b"))[2]
    val = generate_split(SMALL, "val", str(tmp_path / "c"))[2]
    assert base["annotations"] != reseeded["annotations"]
    assert len(val["images"]) == 4


def test_records_agree_with_ground_truth(tmp_path: Path) -> None:
    records, categories, gt = generate_split(SMALL, "train", str(tmp_path))
    assert categories == ["disc", "square", "triangle"]
    for record in records:
        annotations = [a for a in gt["annotations"] if a["image_id"] == record.id]
        assert record.classes == tuple(sorted({a["category_id"] for a in annotations}))
        assert len(record.points) == len(annotations)
        masks = [decode_mask(a["segmentation"]) for a in annotations]
        # visible masks never overlap; every GT point lies inside its own instance
        assert np.sum(masks, axis=0).max(initial=0) <= 1
        for (y, x, label), mask, annotation in zip(record.points, masks, annotations, strict=True):
            assert mask[y, x] and label == annotation["category_id"]
            assert annotation["area"] == mask.sum()
        image = cv2.imread(record.file)
        assert image.shape == (64, 64, 3)


def test_same_class_instances_touch_so_semantics_alone_cannot_split_them() -> None:
    config = replace(SMALL, touch_probability=1.0, min_instances=3, max_instances=3)
    rng = np.random.default_rng(0)
    merged = 0
    for _ in range(10):
        scene = generate_scene(rng, config)
        for label in set(scene.instances.labels.tolist()):
            union = scene.instances.masks[scene.instances.labels == label].any(axis=0)
            components = cv2.connectedComponents(union.astype(np.uint8), connectivity=8)[0] - 1
            merged += components < int((scene.instances.labels == label).sum())
    assert merged >= 5


def test_shapes_and_interior_point() -> None:
    disc = shape_mask("disc", (10.0, 10.0), 10.0, 0.0, (21, 21))
    assert disc[10, 10] and not disc[0, 0]
    ring = shape_mask("ring", (10.0, 10.0), 16.0, 0.0, (21, 21))
    assert not ring[10, 10]  # the centroid of a ring lies outside it ...
    y, x = interior_point(ring)
    assert ring[y, x]  # ... so its point is the nearest pixel inside


def _class_hue_pixels(scene) -> list[tuple[int, int]]:
    """(area, pixels in their class's hue) per instance, for three classes at hue_jitter 0:
    OpenCV hues 0, 60, 120 (of 180), within 5, saturation at least 100."""
    hsv = cv2.cvtColor(scene.image, cv2.COLOR_RGB2HSV).astype(int)
    counts = []
    for mask, label in zip(scene.instances.masks, scene.instances.labels, strict=True):
        off = np.abs((hsv[..., 0] - 60 * int(label) + 90) % 180 - 90)
        counts.append((int(mask.sum()), int((mask & (off <= 5) & (hsv[..., 1] >= 100)).sum())))
    return counts


def test_marker_carries_the_class_hue_on_a_small_disc() -> None:
    config = replace(
        SMALL, height=96, width=96, min_size=30, max_size=46, hue_jitter=0.0, touch_probability=0
    )
    # a disc of diameter 7 covers 37 pixels (x² + y² <= 3.5²); texture noise moves a few out
    marked = _class_hue_pixels(
        generate_scene(np.random.default_rng(0), replace(config, marker_size=7))
    )
    plain = _class_hue_pixels(generate_scene(np.random.default_rng(0), config))
    assert marked and plain
    assert all(20 <= near <= 60 and near < 0.1 * area for area, near in marked)
    assert all(near > 0.8 * area for area, near in plain)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (replace(SMALL, classes=["disc", "blob"]), r"dataset\.synthetic\.classes.*'blob'"),
        (replace(SMALL, num_train=0), r"dataset\.synthetic\.num_train"),
        (replace(SMALL, marker_size=5, hue_jitter=-1), r"dataset\.synthetic\.marker_size"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, config: SyntheticConfig, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        generate_split(config, "train", str(tmp_path))
