"""Artifact formats: atomic writes, RLE, records, COCO grouping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bestie.artifacts import (
    annotations_by_image,
    atomic_path,
    decode_mask,
    encode_mask,
    instances_to_annotations,
    instances_to_results,
    mask_to_bbox,
    read_json,
    read_records,
    write_json,
    write_records,
)
from bestie.structures import ImageRecord, Instances


def test_atomic_write_leaves_nothing_when_interrupted(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    write_json(target, {"a": 1})
    assert read_json(target) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_read_json_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        read_json(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="missing.json"):
        read_json(tmp_path / "missing.json")


def test_rle_round_trip_and_box() -> None:
    mask = np.zeros((5, 7), bool)
    mask[1:3, 2:6] = True
    rle = encode_mask(mask)
    assert isinstance(rle["counts"], str)
    assert np.array_equal(decode_mask(rle), mask)
    assert mask_to_bbox(mask) == [2.0, 1.0, 4.0, 2.0]
    assert mask_to_bbox(np.zeros((3, 3), bool)) == [0.0, 0.0, 0.0, 0.0]
    uncompressed = {"size": [2, 2], "counts": [1, 2, 1]}
    assert decode_mask(uncompressed).tolist() == [[False, True], [True, False]]


def test_records_round_trip(tmp_path: Path) -> None:
    records = [
        ImageRecord(1, "a", "/x/a.png", 4, 5, (0, 2), ((1, 2, 0), (0, 0, 2))),
        ImageRecord(2, "b", "/x/b.png", 4, 5, (), ()),
    ]
    write_records(tmp_path / "r.json", records, ["p", "q", "r"], dataset="d", split="train")
    loaded, categories = read_records(tmp_path / "r.json")
    assert loaded == records and categories == ["p", "q", "r"]
    assert records[0].label_vector(3).tolist() == [1.0, 0.0, 1.0]
    write_json(tmp_path / "other.json", {"images": []})
    with pytest.raises(ValueError, match="not a records file"):
        read_records(tmp_path / "other.json")


def test_annotations_group_per_image_with_empty_images() -> None:
    masks = np.zeros((2, 4, 4), bool)
    masks[0, :2, :2] = masks[1, 2:, 2:] = True
    annotations = instances_to_annotations(Instances(masks, [1, 0]), image_id=7)
    assert [a["area"] for a in annotations] == [4, 4]
    results = instances_to_results(Instances(masks, [1, 0], [0.9, 0.2]), image_id=7)
    images = [{"id": 7, "height": 4, "width": 4}, {"id": 8, "height": 4, "width": 4}]
    grouped = annotations_by_image(results, images)
    assert np.array_equal(grouped[7].masks, masks)
    assert grouped[7].labels.tolist() == [1, 0]
    assert np.allclose(grouped[7].scores, [0.9, 0.2])
    assert len(grouped[8]) == 0
    with pytest.raises(ValueError, match="unknown image 9"):
        annotations_by_image([{**results[0], "image_id": 9}], images)
    with pytest.raises(ValueError, match="need scores"):
        instances_to_results(Instances(masks, [1, 0]), image_id=7)
