"""PASCAL VOC 2012: the records and ground truth of a split (DESIGN.md §5 ``voc``, SPEC §7).

Reads the VOC2012 tree (``JPEGImages/``, ``Annotations/*.xml``, ``SegmentationObject/``,
``SegmentationClass/``) for the ids of a list file, such as ``ImageSets/Segmentation/val.txt``
or the SBD ``train_aug`` list, and returns a :class:`bestie.data.split.SplitData`.

Conventions and policy:

- List files: one image per line; only the first token counts, so BESTIE's
  ``train_cls.txt`` (``id c1 c2 ...``) works as is. A path-like first token (DeepLab's
  ``/JPEGImages/2007_000032.jpg ...``) is reduced to its file stem. Blank lines are ignored;
  a repeated id is an error.
- Image ids: the VOC id with its underscore removed (``2007_000032`` -> 2007000032): stable
  across list files and splits, unlike a position in the list.
- Image-level classes: the object names in the XML annotation, as 0-based indices into
  :data:`VOC_CLASSES`. Objects marked ``difficult`` still count: the object is in the image.
- Points: VOC has no point labels; as an approximation each XML object gives the centre of
  its bounding box, converted from VOC's 1-based inclusive coordinates to 0-based pixels
  (truncated, clipped to the image), as (y, x, class). Difficult objects give points too.
- Image sizes come from the JPEG header (Pillow, no decode), not from the XML.
- Ground truth (``with_gt``), chainercv's ``VOCInstanceSegmentationDataset`` semantics:
  instances are the ``SegmentationObject`` ids other than 0 and 255, in ascending id order;
  an instance's class is the (smallest) ``SegmentationClass`` value under its mask, minus 1;
  the 255 boundary pixels of ``SegmentationObject`` are stored as the image's ``void`` RLE.
  Only images with a ``SegmentationObject`` PNG enter the GT; the records still hold every
  listed image (most of ``train_aug`` has no instance masks). With ``with_gt=False`` the GT
  has no images at all.

Errors (ValueError naming the id and the file): a missing or empty list file, a missing or
unreadable JPEG, a missing or malformed XML, an unknown class name, a ``SegmentationObject``
whose size differs from the image or without its ``SegmentationClass``, and an instance
whose mask covers ``SegmentationClass`` 0 (background) or 255 (void).
"""

from __future__ import annotations

import logging
import math
import os
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import numpy as np

from bestie.artifacts import encode_mask, instances_to_annotations
from bestie.data.io import read_label_map
from bestie.data.split import SplitData, gt_categories, probe_image
from bestie.structures import IGNORE_LABEL, ImageRecord, Instances

LOG = logging.getLogger(__name__)

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
_CLASS_INDEX = {name: index for index, name in enumerate(VOC_CLASSES)}
_BOX_KEYS = ("xmin", "ymin", "xmax", "ymax")


def load_voc_split(
    root: str | os.PathLike[str], list_file: str | os.PathLike[str], *, with_gt: bool
) -> SplitData:
    """Read the images of a VOC id list.

    Args:
        root: the VOC2012 folder (holding ``JPEGImages/``, ``Annotations/``, ...).
        list_file: the id list, relative to ``root`` or absolute.
        with_gt: read the instance ground truth from ``SegmentationObject`` and
            ``SegmentationClass``; otherwise the GT holds no images.

    Returns:
        Records in list order, the 20 VOC class names, and the COCO ground truth.

    Raises:
        ValueError: invalid input (see the module docstring), naming the id and file.
    """
    root = Path(os.path.abspath(root))
    if not root.is_dir():
        raise ValueError(f"VOC root folder not found: {root}")
    list_path = Path(list_file) if os.path.isabs(list_file) else root / list_file
    records: list[ImageRecord] = []
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    names_by_id: dict[int, str] = {}
    for name in read_id_list(list_path):
        record = _read_record(root, name)
        if record.id in names_by_id:
            raise ValueError(
                f"{list_path}: ids {names_by_id[record.id]} and {name} map to the same "
                f"image id {record.id}"
            )
        names_by_id[record.id] = name
        records.append(record)
        ground_truth = _read_ground_truth(root, record) if with_gt else None
        if ground_truth is None:
            continue
        instances, void = ground_truth
        images.append(
            {
                "id": record.id,
                "file_name": f"{name}.jpg",
                "height": record.height,
                "width": record.width,
                "void": encode_mask(void),
            }
        )
        annotations.extend(
            instances_to_annotations(instances, record.id, first_id=len(annotations) + 1)
        )
    categories = list(VOC_CLASSES)
    gt = {"images": images, "annotations": annotations, "categories": gt_categories(categories)}
    return SplitData(records, categories, gt)


def read_id_list(path: str | os.PathLike[str]) -> list[str]:
    """The image ids of a VOC list file (first token per line, see the module docstring).

    Raises:
        ValueError: the file is missing, lists no id, or repeats one.
    """
    if not os.path.isfile(path):
        raise ValueError(f"VOC list file not found: {path}")
    names: list[str] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            tokens = line.split()
            if not tokens:
                continue
            name = tokens[0]
            if "/" in name or name.endswith((".jpg", ".png")):
                name = Path(name).stem
            if name in seen:
                raise ValueError(f"{path}:{line_number}: id {name} is listed twice")
            seen.add(name)
            names.append(name)
    if not names:
        raise ValueError(f"{path}: the list has no image ids")
    return names


def voc_image_id(name: str) -> int:
    """The integer image id of a VOC id: its digits (``2007_000032`` -> 2007000032).

    Raises:
        ValueError: the id holds anything but digits and underscores.
    """
    digits = name.replace("_", "")
    if not digits.isdigit() or not digits.isascii():
        raise ValueError(f"VOC id {name!r}: expected digits and underscores (e.g. 2007_000032)")
    return int(digits)


def _read_record(root: Path, name: str) -> ImageRecord:
    image_id = voc_image_id(name)
    file = root / "JPEGImages" / f"{name}.jpg"
    height, width = probe_image(file, source=f"VOC image {name}")
    objects = _read_objects(root / "Annotations" / f"{name}.xml", name)
    points = []
    for label, (xmin, ymin, xmax, ymax) in objects:
        y = min(max(int(math.floor((ymin + ymax) / 2.0 - 1.0)), 0), height - 1)
        x = min(max(int(math.floor((xmin + xmax) / 2.0 - 1.0)), 0), width - 1)
        points.append((y, x, label))
    return ImageRecord(
        id=image_id,
        name=name,
        file=str(file),
        height=height,
        width=width,
        classes=tuple(sorted({label for label, _ in objects})),
        points=tuple(points),
    )


def _read_objects(path: Path, name: str) -> list[tuple[int, tuple[float, float, float, float]]]:
    """(class id, (xmin, ymin, xmax, ymax) 1-based) of each object of a VOC XML file."""
    if not path.is_file():
        raise ValueError(f"VOC image {name}: annotation file not found: {path}")
    try:
        tree = ElementTree.parse(path)
    except ElementTree.ParseError as error:
        raise ValueError(f"{path}: malformed XML ({error})") from error
    objects = []
    for index, element in enumerate(tree.getroot().iter("object")):
        class_name = (element.findtext("name") or "").strip()
        if class_name not in _CLASS_INDEX:
            raise ValueError(f"{path}: object {index} has unknown class name {class_name!r}")
        box = element.find("bndbox")
        texts = [None if box is None else box.findtext(key) for key in _BOX_KEYS]
        try:
            xmin, ymin, xmax, ymax = (float(text) for text in texts)  # type: ignore[arg-type]
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: object {index} has no valid bndbox") from error
        objects.append((_CLASS_INDEX[class_name], (xmin, ymin, xmax, ymax)))
    return objects


def _read_ground_truth(root: Path, record: ImageRecord) -> tuple[Instances, np.ndarray] | None:
    """The instances and void mask bool [H, W] of one image; None without instance masks."""
    object_path = root / "SegmentationObject" / f"{record.name}.png"
    if not object_path.is_file():
        return None
    class_path = root / "SegmentationClass" / f"{record.name}.png"
    if not class_path.is_file():
        raise ValueError(f"VOC image {record.name}: {object_path} has no {class_path}")
    objects = read_label_map(object_path)
    classes = read_label_map(class_path)
    for path, array in ((object_path, objects), (class_path, classes)):
        if array.shape != (record.height, record.width):
            raise ValueError(
                f"VOC image {record.name}: {path} is {array.shape[0]}x{array.shape[1]} (HxW) "
                f"but the image is {record.height}x{record.width}"
            )
    instance_ids = [int(value) for value in np.unique(objects) if value not in (0, IGNORE_LABEL)]
    masks = np.zeros((len(instance_ids), record.height, record.width), bool)
    labels = np.zeros((len(instance_ids),), np.int64)
    for index, instance_id in enumerate(instance_ids):
        masks[index] = objects == instance_id
        values = np.unique(classes[masks[index]])
        if values[0] == 0 or values[-1] == IGNORE_LABEL or values[-1] > len(VOC_CLASSES):
            raise ValueError(
                f"VOC image {record.name}: object {instance_id} of {object_path} covers "
                f"{class_path} values {values.tolist()} (expected classes 1..20 only)"
            )
        if values.size > 1:
            LOG.warning(
                "VOC image %s: object %d covers classes %s; taking the smallest (chainercv)",
                record.name,
                instance_id,
                values.tolist(),
            )
        labels[index] = int(values[0]) - 1
    return Instances(masks, labels), objects == IGNORE_LABEL
