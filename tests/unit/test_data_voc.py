"""bestie.data.voc: a tiny VOC2012 tree built in tmp_path, checked against known answers."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from bestie.artifacts import decode_mask
from bestie.data.io import write_label_map
from bestie.data.voc import VOC_CLASSES, load_voc_split, read_id_list, voc_image_id

HEIGHT, WIDTH = 20, 30
LIST = "ImageSets/Segmentation/val.txt"
AEROPLANE, CAT, DOG, PERSON, SOFA = 0, 7, 11, 14, 17


def _rectangle(top: int, bottom: int, left: int, right: int) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[top:bottom, left:right] = True
    return mask


# 2007_000032: object 1 an aeroplane with a void (255) row below it, object 2 a person.
PLANE_MASK = _rectangle(1, 9, 2, 12)
PLANE_VOID = _rectangle(9, 10, 2, 12)
PERSON_MASK = _rectangle(4, 18, 14, 26)
# 2007_000033: objects 1 and 3 dogs, object 2 a sofa (ids need not be contiguous).
DOG_MASKS = (_rectangle(0, 5, 0, 5), _rectangle(10, 20, 20, 30))
SOFA_MASK = _rectangle(6, 20, 0, 18)


def _xml(objects: list[tuple[str, tuple[int, int, int, int], int]]) -> str:
    parts = ["<annotation><filename>x.jpg</filename>"]
    parts.append(f"<size><width>{WIDTH}</width><height>{HEIGHT}</height><depth>3</depth></size>")
    for name, (xmin, ymin, xmax, ymax), difficult in objects:
        parts.append(
            f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
            f"<xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax>"
            "</bndbox></object>"
        )
    return "".join(parts) + "</annotation>"


def _write_image(root: Path, name: str, objects: list) -> None:
    image = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    assert cv2.imwrite(str(root / "JPEGImages" / f"{name}.jpg"), image)
    (root / "Annotations" / f"{name}.xml").write_text(_xml(objects), encoding="utf-8")


def _write_segmentation(root: Path, name: str, objects: np.ndarray, classes: np.ndarray) -> None:
    write_label_map(root / "SegmentationObject" / f"{name}.png", objects.astype(np.uint8))
    write_label_map(root / "SegmentationClass" / f"{name}.png", classes.astype(np.uint8))


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    root = tmp_path / "VOC2012"
    for folder in ("JPEGImages", "Annotations", "SegmentationObject", "SegmentationClass"):
        (root / folder).mkdir(parents=True)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)

    _write_image(
        root, "2007_000032", [("aeroplane", (3, 2, 12, 9), 0), ("person", (15, 5, 26, 18), 1)]
    )
    objects = np.zeros((HEIGHT, WIDTH), np.uint8)
    objects[PLANE_MASK], objects[PLANE_VOID], objects[PERSON_MASK] = 1, 255, 2
    classes = np.zeros((HEIGHT, WIDTH), np.uint8)
    classes[PLANE_MASK], classes[PLANE_VOID], classes[PERSON_MASK] = 1, 255, 15
    _write_segmentation(root, "2007_000032", objects, classes)

    _write_image(
        root,
        "2007_000033",
        [("dog", (1, 1, 5, 5), 0), ("sofa", (1, 7, 18, 20), 0), ("dog", (21, 11, 30, 20), 0)],
    )
    objects = np.zeros((HEIGHT, WIDTH), np.uint8)
    classes = np.zeros((HEIGHT, WIDTH), np.uint8)
    objects[SOFA_MASK], classes[SOFA_MASK] = 2, SOFA + 1
    objects[DOG_MASKS[0]], objects[DOG_MASKS[1]] = 1, 3
    classes[DOG_MASKS[0] | DOG_MASKS[1]] = DOG + 1
    _write_segmentation(root, "2007_000033", objects, classes)

    _write_image(root, "2008_000001", [("cat", (2, 2, 29, 20), 0)])  # no instance masks

    (root / LIST).write_text("2007_000032\n2007_000033 11 17\n\n2008_000001\n", encoding="utf-8")
    return root


def test_records(voc_root: Path) -> None:
    split = load_voc_split(voc_root, LIST, with_gt=True)
    assert split.categories == list(VOC_CLASSES) and len(VOC_CLASSES) == 20
    assert [r.name for r in split.records] == ["2007_000032", "2007_000033", "2008_000001"]
    assert [r.id for r in split.records] == [2007000032, 2007000033, 2008000001]
    assert split.records[0].file == str(voc_root / "JPEGImages" / "2007_000032.jpg")
    assert all((r.height, r.width) == (HEIGHT, WIDTH) for r in split.records)
    # The difficult person still counts for the image label and gives a point.
    assert [r.classes for r in split.records] == [(AEROPLANE, PERSON), (DOG, SOFA), (CAT,)]
    # Box centres, 1-based inclusive -> 0-based, truncated: ((2 + 9) / 2 - 1, (3 + 12) / 2 - 1).
    assert split.records[0].points == ((4, 6, AEROPLANE), (10, 19, PERSON))
    assert split.records[1].points == ((2, 2, DOG), (12, 8, SOFA), (14, 24, DOG))
    assert split.records[2].points == ((10, 14, CAT),)


def test_ground_truth(voc_root: Path) -> None:
    gt = load_voc_split(voc_root, LIST, with_gt=True).gt
    assert gt["categories"][0] == {"id": 0, "name": "aeroplane"}
    assert len(gt["categories"]) == 20
    # 2008_000001 has no SegmentationObject PNG: left out of the GT.
    assert [image["id"] for image in gt["images"]] == [2007000032, 2007000033]
    assert gt["images"][0]["file_name"] == "2007_000032.jpg"
    assert (gt["images"][0]["height"], gt["images"][0]["width"]) == (HEIGHT, WIDTH)
    np.testing.assert_array_equal(decode_mask(gt["images"][0]["void"]), PLANE_VOID)
    assert not decode_mask(gt["images"][1]["void"]).any()

    annotations = gt["annotations"]
    assert [a["id"] for a in annotations] == [1, 2, 3, 4, 5]
    assert [a["image_id"] for a in annotations] == [2007000032] * 2 + [2007000033] * 3
    # Instances in ascending SegmentationObject id order: plane, person; dog, sofa, dog.
    assert [a["category_id"] for a in annotations] == [AEROPLANE, PERSON, DOG, SOFA, DOG]
    expected = [PLANE_MASK, PERSON_MASK, DOG_MASKS[0], SOFA_MASK & ~DOG_MASKS[1], DOG_MASKS[1]]
    for annotation, mask in zip(annotations, expected, strict=True):
        np.testing.assert_array_equal(decode_mask(annotation["segmentation"]), mask)
        assert annotation["area"] == int(mask.sum())
        assert annotation["iscrowd"] == 0
    assert annotations[0]["bbox"] == [2.0, 1.0, 10.0, 8.0]


def test_without_gt(voc_root: Path) -> None:
    split = load_voc_split(voc_root, LIST, with_gt=False)
    assert len(split.records) == 3
    assert split.gt["images"] == [] and split.gt["annotations"] == []
    assert len(split.gt["categories"]) == 20


def test_list_formats(voc_root: Path, tmp_path: Path) -> None:
    # Absolute path, DeepLab-style path tokens, BESTIE train_cls-style class tokens.
    list_file = tmp_path / "train_aug.txt"
    list_file.write_text(
        "/JPEGImages/2008_000001.jpg /SegmentationClassAug/2008_000001.png\n2007_000033 11 17\n",
        encoding="utf-8",
    )
    assert read_id_list(list_file) == ["2008_000001", "2007_000033"]
    split = load_voc_split(voc_root, list_file, with_gt=True)
    assert [r.name for r in split.records] == ["2008_000001", "2007_000033"]
    assert [image["id"] for image in split.gt["images"]] == [2007000033]


def test_voc_image_id() -> None:
    assert voc_image_id("2007_000032") == 2007000032
    with pytest.raises(ValueError, match="'img_7'"):
        voc_image_id("img_7")


def test_mixed_classes_take_the_smallest(voc_root: Path, caplog) -> None:
    objects = np.zeros((HEIGHT, WIDTH), np.uint8)
    objects[PLANE_MASK] = 1
    classes = np.zeros((HEIGHT, WIDTH), np.uint8)
    classes[PLANE_MASK] = 9
    classes[1, 2] = 3
    _write_segmentation(voc_root, "2007_000032", objects, classes)
    with caplog.at_level(logging.WARNING, logger="bestie.data.voc"):
        gt = load_voc_split(voc_root, LIST, with_gt=True).gt
    assert gt["annotations"][0]["category_id"] == 2
    assert "object 1 covers classes [3, 9]" in caplog.text


def _label_maps(root: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    from bestie.data.io import read_label_map

    return (
        read_label_map(root / "SegmentationObject" / f"{name}.png"),
        read_label_map(root / "SegmentationClass" / f"{name}.png"),
    )


@pytest.mark.parametrize("value", [0, 255])
def test_object_over_background_or_void(voc_root: Path, value: int) -> None:
    objects, classes = _label_maps(voc_root, "2007_000032")
    classes[5, 5] = value  # inside the aeroplane (object 1)
    _write_segmentation(voc_root, "2007_000032", objects, classes)
    with pytest.raises(ValueError, match=r"2007_000032: object 1 of .*2007_000032\.png covers"):
        load_voc_split(voc_root, LIST, with_gt=True)
    load_voc_split(voc_root, LIST, with_gt=False)  # GT reading off: not looked at


def test_segmentation_size_mismatch(voc_root: Path) -> None:
    objects, classes = _label_maps(voc_root, "2007_000033")
    _write_segmentation(voc_root, "2007_000033", objects[:19], classes[:19])
    with pytest.raises(ValueError, match=r"2007_000033: .*SegmentationObject.* is 19x30"):
        load_voc_split(voc_root, LIST, with_gt=True)


def test_missing_segmentation_class(voc_root: Path) -> None:
    (voc_root / "SegmentationClass" / "2007_000033.png").unlink()
    with pytest.raises(ValueError, match=r"VOC image 2007_000033: .* has no .*2007_000033\.png"):
        load_voc_split(voc_root, LIST, with_gt=True)


def test_missing_jpeg(voc_root: Path) -> None:
    (voc_root / "JPEGImages" / "2007_000033.jpg").unlink()
    with pytest.raises(ValueError, match=r"VOC image 2007_000033: image file not found: .*\.jpg"):
        load_voc_split(voc_root, LIST, with_gt=False)


def test_corrupt_jpeg(voc_root: Path) -> None:
    (voc_root / "JPEGImages" / "2007_000033.jpg").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"VOC image 2007_000033: not an image file"):
        load_voc_split(voc_root, LIST, with_gt=False)


def test_missing_xml(voc_root: Path) -> None:
    (voc_root / "Annotations" / "2008_000001.xml").unlink()
    with pytest.raises(ValueError, match=r"VOC image 2008_000001: annotation file not found"):
        load_voc_split(voc_root, LIST, with_gt=False)


def test_bad_xml(voc_root: Path) -> None:
    path = voc_root / "Annotations" / "2007_000032.xml"
    path.write_text(_xml([("aeroplan", (1, 1, 2, 2), 0)]), encoding="utf-8")
    with pytest.raises(ValueError, match=r"2007_000032\.xml: object 0 .* class name 'aeroplan'"):
        load_voc_split(voc_root, LIST, with_gt=False)
    path.write_text("<annotation><object>", encoding="utf-8")
    with pytest.raises(ValueError, match=r"2007_000032\.xml: malformed XML"):
        load_voc_split(voc_root, LIST, with_gt=False)
    path.write_text("<annotation><object><name>cat</name></object></annotation>")
    with pytest.raises(ValueError, match=r"2007_000032\.xml: object 0 has no valid bndbox"):
        load_voc_split(voc_root, LIST, with_gt=False)


def test_bad_lists(voc_root: Path) -> None:
    with pytest.raises(ValueError, match=r"VOC list file not found: .*missing\.txt"):
        load_voc_split(voc_root, "missing.txt", with_gt=False)
    (voc_root / "empty.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"empty\.txt: the list has no image ids"):
        load_voc_split(voc_root, "empty.txt", with_gt=False)
    (voc_root / "twice.txt").write_text("2007_000032\n2007_000032 0\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"twice\.txt:2: id 2007_000032 is listed twice"):
        load_voc_split(voc_root, "twice.txt", with_gt=False)
    with pytest.raises(ValueError, match="VOC root folder not found"):
        load_voc_split(voc_root / "nowhere", LIST, with_gt=False)
