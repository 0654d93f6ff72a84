"""WSSS maps: the ground-truth oracle, external-map validation, shard gathering and mIoU."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from bestie.artifacts import instances_to_annotations, read_json, write_json, write_records
from bestie.data.io import read_label_map, write_label_map
from bestie.stages import make_wsss
from bestie.structures import ImageRecord, Instances
from bestie.wsss import check_label_map, restrict_to_image_label, semantic_from_instances

RECORDS = [
    ImageRecord(1, "a", "/nonexistent/a.png", 4, 5, (0, 1)),
    ImageRecord(2, "b", "/nonexistent/b.png", 4, 5, (1,)),
]


def two_instances() -> Instances:
    masks = np.zeros((2, 4, 5), bool)
    masks[0, :2, :2] = True
    masks[1, 2:, 3:] = True
    return Instances(masks, [0, 1])


def test_oracle_map_paints_labels_and_void() -> None:
    void = np.zeros((4, 5), bool)
    void[0, 4] = True
    semantic = semantic_from_instances(two_instances(), (4, 5), void)
    expected = np.zeros((4, 5), np.uint8)
    expected[:2, :2] = 1
    expected[2:, 3:] = 2
    expected[0, 4] = 255
    assert np.array_equal(semantic, expected)


def test_label_map_checks_name_the_image() -> None:
    good = np.zeros((4, 5), np.uint8)
    good[0, 0], good[1, 1] = 2, 255
    assert check_label_map(good, RECORDS[0], 2, "src") is good
    with pytest.raises(ValueError, match=r"image a \(id 1\) is 3x5"):
        check_label_map(np.zeros((3, 5), np.uint8), RECORDS[0], 2, "src")
    bad = good.copy()
    bad[2, 2] = 3
    with pytest.raises(ValueError, match="image a.*value 3"):
        check_label_map(bad, RECORDS[0], 2, "src")


def test_restrict_to_image_label() -> None:
    semantic = np.array([[1, 2, 3, 255]], np.uint8)
    assert restrict_to_image_label(semantic, (1,)).tolist() == [[0, 2, 0, 255]]


def write_split(tmp_path: Path) -> tuple[Path, Path]:
    records = tmp_path / "train.json"
    write_records(records, RECORDS, ["p", "q"], dataset="test", split="train")
    gt = tmp_path / "train_gt.json"
    images = [{"id": r.id, "file_name": r.name, "height": 4, "width": 5} for r in RECORDS]
    write_json(
        gt,
        {
            "images": images,
            "annotations": instances_to_annotations(two_instances(), 1),
            "categories": [{"id": 0, "name": "p"}, {"id": 1, "name": "q"}],
        },
    )
    return records, gt


def run_shards(tmp_path: Path, wsss: dict, count: int = 2) -> dict:
    records, gt = write_split(tmp_path)
    shards = []
    for shard in range(count):
        out = tmp_path / f"shard{shard}"
        make_wsss.run(
            argparse.Namespace(
                config=json.dumps({"wsss": wsss}),
                records=str(records),
                gt=str(gt),
                out=str(out),
                classifier="",
                segnet="",
                shard=shard,
                num_shards=count,
            )
        )
        shards.append(str(out))
    make_wsss.gather(shards, str(records), str(tmp_path / "maps"), str(tmp_path / "miou.json"))
    return read_json(tmp_path / "miou.json")


def test_gt_oracle_equals_ground_truth_and_scores_miou_one(tmp_path: Path) -> None:
    summary = run_shards(tmp_path, {"method": "gt"})
    assert summary["miou"] == 1.0 and summary["images"] == 2
    expected = semantic_from_instances(two_instances(), (4, 5))
    assert np.array_equal(read_label_map(tmp_path / "maps/a.png"), expected)
    assert read_label_map(tmp_path / "maps/b.png").max() == 0


def test_external_maps_are_scored_by_hand_computed_miou(tmp_path: Path) -> None:
    folder = tmp_path / "external"
    a = semantic_from_instances(two_instances(), (4, 5))
    a[0, 0] = 0  # one pixel of class p (id 1) missed
    write_label_map(folder / "a.png", a)
    write_label_map(folder / "b.png", np.zeros((4, 5), np.uint8))
    summary = run_shards(tmp_path, {"method": "external", "external_dir": str(folder)}, count=1)
    # background: 32 GT pixels, all predicted background, plus the missed p pixel:
    # 32 / 33; p: 3 of its 4 pixels, nothing extra: 3 / 4; q: 4 / 4
    assert summary["iou"] == {"background": 32 / 33, "p": 3 / 4, "q": 1.0}
    assert summary["miou"] == pytest.approx((32 / 33 + 3 / 4 + 1) / 3)


def test_external_maps_missing_or_wrong_size_name_the_image(tmp_path: Path) -> None:
    folder = tmp_path / "external"
    write_label_map(folder / "a.png", np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError, match="no map for image b"):
        run_shards(tmp_path, {"method": "external", "external_dir": str(folder)}, count=1)
    write_label_map(folder / "b.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(ValueError, match=r"image b \(id 2\) is 5x5"):
        run_shards(tmp_path, {"method": "external", "external_dir": str(folder)}, count=1)
    with pytest.raises(ValueError, match="wsss.external_dir"):
        run_shards(tmp_path, {"method": "external", "external_dir": str(tmp_path / "no")})
