"""bestie.data.coco: a tiny COCO-format data set built in tmp_path, known answers."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from bestie.artifacts import decode_mask, encode_mask
from bestie.data.coco import (
    _rle_centroid_point,
    _string_runs,
    centroid_point,
    load_coco_split,
)

HEIGHT, WIDTH = 20, 30


def _rectangle(top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """bool [HEIGHT, WIDTH], True on rows top..bottom-1 and columns left..right-1."""
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[top:bottom, left:right] = True
    return mask


def _uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO uncompressed RLE: column-major run lengths, starting with a run of zeros."""
    counts, value, run = [], 0, 0
    for pixel in mask.flatten(order="F"):
        if pixel != value:
            counts.append(run)
            value, run = pixel, 0
        run += 1
    counts.append(run)
    return {"size": [HEIGHT, WIDTH], "counts": counts}


# Annotation 10: polygon, pycocotools rasterises it to rows 3..8, columns 2..11.
POLYGON_MASK = _rectangle(3, 9, 2, 12)
# Annotation 11: two blobs, 3x3 and 3x2; the centroid (5, 9.8) falls between them.
TWO_BLOBS = _rectangle(4, 7, 5, 8) | _rectangle(4, 7, 15, 17)
# Annotation 12: uncompressed RLE.
RLE_RECTANGLE = _rectangle(10, 15, 20, 28)


def _write_images(images_dir: Path) -> None:
    random = np.random.default_rng(0)
    (images_dir / "sub").mkdir(parents=True)
    rgb = random.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    gray = random.integers(0, 256, (HEIGHT, WIDTH), dtype=np.uint8)
    rgba = random.integers(0, 256, (HEIGHT, WIDTH, 4), dtype=np.uint8)
    deep = random.integers(0, 65536, (HEIGHT, WIDTH), dtype=np.uint16)
    assert cv2.imwrite(str(images_dir / "sub" / "rgb.jpg"), rgb)
    assert cv2.imwrite(str(images_dir / "gray.png"), gray)
    assert cv2.imwrite(str(images_dir / "rgba.png"), rgba)
    assert cv2.imwrite(str(images_dir / "deep.png"), deep)


def _annotation(annotation_id: int, image_id: int, category_id: int, segmentation: Any) -> dict:
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": segmentation,
        "iscrowd": 0,
    }


def _coco_json() -> dict[str, Any]:
    files = ["sub/rgb.jpg", "gray.png", "rgba.png", "deep.png"]
    crowd = _annotation(13, 104, 3, encode_mask(_rectangle(0, 5, 0, 5)))
    crowd["iscrowd"] = 1
    return {
        "images": [
            {"id": 101 + index, "file_name": name, "height": HEIGHT, "width": WIDTH}
            for index, name in enumerate(files)
        ],
        "annotations": [
            _annotation(10, 101, 7, [[2, 3, 12, 3, 12, 9, 2, 9]]),
            _annotation(11, 102, 3, encode_mask(TWO_BLOBS)),
            _annotation(12, 103, 7, _uncompressed_rle(RLE_RECTANGLE)),
            crowd,
            _annotation(20, 101, 3, []),
        ],
        # Out of order on purpose: class ids follow ascending COCO ids (3 -> 0, 7 -> 1).
        "categories": [{"id": 7, "name": "cell"}, {"id": 3, "name": "nucleus"}],
    }


@pytest.fixture
def coco_tree(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    images_dir = tmp_path / "images"
    _write_images(images_dir)
    return images_dir, _coco_json()


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_records_and_gt(tmp_path: Path, coco_tree, caplog) -> None:
    images_dir, data = coco_tree
    with caplog.at_level(logging.WARNING, logger="bestie.data.coco"):
        split = load_coco_split(images_dir, _write(tmp_path, data))
    assert "annotation 20: empty segmentation" in caplog.text
    assert split.categories == ["nucleus", "cell"]
    assert split.skipped == {"crowd": 1, "empty_segmentation": 1}

    records = {record.id: record for record in split.records}
    assert [record.id for record in split.records] == [101, 102, 103, 104]
    assert [record.name for record in split.records] == ["rgb", "gray", "rgba", "deep"]
    assert records[101].file == os.path.abspath(images_dir / "sub" / "rgb.jpg")
    assert all((r.height, r.width) == (HEIGHT, WIDTH) for r in split.records)
    assert records[101].classes == (1,)  # the empty nucleus annotation 20 is skipped
    assert records[102].classes == (0,)
    assert records[103].classes == (1,)
    assert records[104].classes == (0,)  # the crowd counts for the image label
    # Centroid (5.5, 6.5) lies in the mask: its pixel (ties go to row-major order).
    assert records[101].points == ((5, 6, 1),)
    # Centroid (5, 9.8) lies between the blobs: the nearest mask pixel is (5, 7).
    assert records[102].points == ((5, 7, 0),)
    assert records[103].points == ((12, 23, 1),)
    assert records[104].points == ()

    gt = split.gt
    assert gt["categories"] == [{"id": 0, "name": "nucleus"}, {"id": 1, "name": "cell"}]
    assert gt["images"] == [
        {"id": 101 + index, "file_name": name, "height": HEIGHT, "width": WIDTH}
        for index, name in enumerate(["sub/rgb.jpg", "gray.png", "rgba.png", "deep.png"])
    ]
    annotations = gt["annotations"]
    assert [a["id"] for a in annotations] == [1, 2, 3]
    assert [a["image_id"] for a in annotations] == [101, 102, 103]
    assert [a["category_id"] for a in annotations] == [1, 0, 1]
    assert [a["area"] for a in annotations] == [60, 15, 40]
    assert [a["bbox"] for a in annotations] == [
        [2.0, 3.0, 10.0, 6.0],
        [5.0, 4.0, 12.0, 3.0],
        [20.0, 10.0, 8.0, 5.0],
    ]
    assert all(a["iscrowd"] == 0 for a in annotations)
    assert all(isinstance(a["segmentation"]["counts"], str) for a in annotations)
    for annotation, expected in zip(
        annotations, [POLYGON_MASK, TWO_BLOBS, RLE_RECTANGLE], strict=True
    ):
        np.testing.assert_array_equal(decode_mask(annotation["segmentation"]), expected)
    json.dumps(gt)  # serialisable as is


def test_points_none(tmp_path: Path, coco_tree) -> None:
    images_dir, data = coco_tree
    split = load_coco_split(images_dir, _write(tmp_path, data), points="none")
    assert all(record.points == () for record in split.records)
    assert len(split.gt["annotations"]) == 3


def test_degenerate_polygon_is_skipped_not_read_as_box(tmp_path: Path, coco_tree) -> None:
    images_dir, data = coco_tree
    data["annotations"][0]["segmentation"] = [[1, 1, 5, 5]]  # 2 vertices, no area
    split = load_coco_split(images_dir, _write(tmp_path, data))
    assert split.skipped["empty_segmentation"] == 2
    assert split.records[0].classes == ()


def test_image_without_annotations(tmp_path: Path, coco_tree) -> None:
    images_dir, data = coco_tree
    data["annotations"] = []
    split = load_coco_split(images_dir, _write(tmp_path, data))
    assert all(record.classes == () for record in split.records)
    assert split.gt["annotations"] == [] and len(split.gt["images"]) == 4
    assert split.skipped == {}


def test_compressed_rle_runs_round_trip() -> None:
    random = np.random.default_rng(0)
    for _ in range(50):
        height, width = (int(v) for v in random.integers(1, 40, 2))
        mask = random.random((height, width)) < random.random()
        counts = encode_mask(mask)["counts"].encode("utf-8")
        runs = _string_runs(counts, "test")
        values = np.concatenate([np.full(run, index % 2, bool) for index, run in enumerate(runs)])
        np.testing.assert_array_equal(values, mask.flatten(order="F"))


def test_centroid_point() -> None:
    assert centroid_point(_rectangle(0, 3, 0, 3)) == (1, 1)
    ring = _rectangle(0, 9, 0, 9) & ~_rectangle(2, 7, 2, 7)
    assert centroid_point(ring) == (1, 4)  # centre (4, 4) is a hole; the nearest pixel
    with pytest.raises(ValueError, match="empty mask"):
        centroid_point(np.zeros((4, 4), bool))


def test_centroid_point_matches_brute_force() -> None:
    """Both the mask and the RLE version equal the plain nearest-pixel search."""
    random = np.random.default_rng(1)
    for index in range(300):
        shape = [(7, 9), (12, 5), (30, 40)][index % 3]
        if index % 2:  # blobs: the centroid usually lies inside (the fast path)
            mask = cv2.GaussianBlur(random.random(shape), (0, 0), 2.0) > 0.5
        else:
            mask = random.random(shape) < random.uniform(0.05, 0.6)
        if not mask.any():
            continue
        ys, xs = np.nonzero(mask)
        nearest = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
        expected = (int(ys[nearest]), int(xs[nearest]))
        assert centroid_point(mask) == expected
        rle = mask_utils.encode(np.asfortranarray(mask, np.uint8))
        assert _rle_centroid_point(rle) == expected


def _set(path: list, value: Any):
    def mutate(data: dict[str, Any]) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_set(["images", 0, "height"], 21), r"ann\.json: image 101 \(sub/rgb\.jpg\).*20x30"),
        (_set(["images", 1, "id"], 101), r"ann\.json: duplicate image id 101"),
        (_set(["images"], []), r"ann\.json: the split has no images"),
        (_set(["images", 2, "file_name"], "gone.png"), r"image 103 \(gone\.png\).*not found"),
        (_set(["annotations", 1, "id"], 10), r"ann\.json: duplicate annotation id 10"),
        (_set(["annotations", 0, "image_id"], 999), r"annotation 10: unknown image id 999"),
        (_set(["annotations", 0, "category_id"], 99), r"annotation 10: unknown category id 99"),
        (_set(["annotations", 0, "segmentation"], [[1, 2, 3, 4, 5]]), r"annotation 10: .*odd"),
        (_set(["annotations", 2, "segmentation", "size"], [30, 20]), r"annotation 12: RLE size"),
        (_set(["annotations", 2, "segmentation", "counts"], [5, 5]), r"annotation 12: .*sum to"),
        (_set(["annotations", 1, "segmentation", "counts"], "0k9"), r"annotation 11: invalid RLE"),
        (_set(["annotations", 1, "segmentation", "counts"], "3"), r"annotation 11: invalid RLE"),
        (_set(["annotations", 1, "segmentation", "counts"], "P~"), r"annotation 11: invalid RLE"),
        (_set(["annotations", 1, "segmentation"], "x"), r"annotation 11: segmentation must be"),
        (_set(["annotations", 0, "image_id"], "101"), r"annotation 10: 'image_id' must be an"),
        (_set(["categories"], []), r"ann\.json: no categories"),
        (_set(["categories", 1, "id"], 7), r"ann\.json: duplicate category id 7"),
    ],
)
def test_invalid_json(tmp_path: Path, coco_tree, mutate, message: str) -> None:
    images_dir, data = coco_tree
    mutate(data)
    with pytest.raises(ValueError, match=message):
        load_coco_split(images_dir, _write(tmp_path, data))


def test_missing_image_file(tmp_path: Path, coco_tree) -> None:
    images_dir, data = coco_tree
    (images_dir / "deep.png").unlink()
    with pytest.raises(ValueError, match=r"ann\.json: image 104 \(deep\.png\): image file not"):
        load_coco_split(images_dir, _write(tmp_path, data))


def test_corrupt_image_file(tmp_path: Path, coco_tree) -> None:
    images_dir, data = coco_tree
    (images_dir / "gray.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match=r"image 102 \(gray\.png\): not an image file"):
        load_coco_split(images_dir, _write(tmp_path, data))


def test_truncated_image_file(tmp_path: Path, coco_tree) -> None:
    images_dir, data = coco_tree
    path = images_dir / "rgba.png"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ValueError, match=r"image 103 \(rgba\.png\): unreadable image"):
        load_coco_split(images_dir, _write(tmp_path, data))


def test_bad_arguments(tmp_path: Path, coco_tree) -> None:
    images_dir, data = coco_tree
    path = _write(tmp_path, data)
    with pytest.raises(ValueError, match="points must be one of"):
        load_coco_split(images_dir, path, points="boxes")
    with pytest.raises(ValueError, match=r"ann\.json: images folder not found"):
        load_coco_split(tmp_path / "nowhere", path)
    with pytest.raises(ValueError, match=r"missing\.json: file not found"):
        load_coco_split(images_dir, tmp_path / "missing.json")


def test_gt_scores_perfectly_in_pycocotools(tmp_path: Path, coco_tree) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images_dir, data = coco_tree
    data["annotations"][0]["id"] = 0  # source id 0: renumbered, so matches still count
    gt = load_coco_split(images_dir, _write(tmp_path, data)).gt
    coco_gt = COCO()
    coco_gt.dataset = gt
    coco_gt.createIndex()
    results = [
        {**{k: a[k] for k in ("image_id", "category_id", "segmentation")}, "score": 1.0}
        for a in gt["annotations"]
    ]
    evaluation = COCOeval(coco_gt, coco_gt.loadRes(results), "segm")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[1] == pytest.approx(1.0)  # AP50
