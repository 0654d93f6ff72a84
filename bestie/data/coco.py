"""A COCO-format data set (any domain, any categories): the records and ground truth of a split.

DESIGN.md §5 ``coco``: an images folder plus a COCO instances JSON per split. The loader turns
them into image records (image-level classes, optional ground-truth points) and a normalised
COCO ground truth (:class:`bestie.data.split.SplitData`).

Conventions and policy:

- Categories get 0-based contiguous class ids in ascending COCO ``id`` order; names are kept.
- Image ids are the JSON's ids; a record's ``name`` is the ``file_name`` stem and its ``file``
  the absolute path ``images_dir / file_name``. Images are checked when loading (the file
  exists, Pillow identifies and verifies it without decoding it, and its size equals the
  JSON's ``height``/``width``). Gray, RGBA and 16-bit images are accepted:
  :func:`bestie.data.io.read_image` converts them when they are read.
- Segmentations may be polygons, compressed RLE (string ``counts``) or uncompressed RLE
  (list ``counts``). Every segmentation is converted to compressed RLE (RLE runs are
  checked to cover the image exactly); ``area`` and ``bbox`` are recomputed from it (the
  JSON's own values are not trusted).
- ``iscrowd`` annotations are not instances: they give no GT annotation and no point, but
  their category still counts in the image-level label (a crowd of people shows a person).
  They are counted in ``SplitData.skipped["crowd"]``.
- An annotation whose segmentation is empty (no polygon with 3 or more vertices, or a mask
  of zero area) is skipped with a logged warning naming it, and counted in
  ``SplitData.skipped["empty_segmentation"]``; it contributes nothing to the image label.
- GT annotation ids are renumbered 1..N in the JSON's order: pycocotools' matcher stores
  matched ids in a zero-initialised array, so an id 0 would never count as matched.
- Points (``points="centroid"``): per instance, the mask pixel nearest to the mask centroid
  (the centroid's own pixel when it lies in the mask) as (y, x, class).

Everything else that is wrong raises ValueError naming the JSON file and the culprit (image
or annotation id): unknown image or category ids, duplicate ids, malformed fields,
missing/unreadable images, size mismatches, an empty split.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from bestie.artifacts import read_json
from bestie.data.split import SplitData, gt_categories, probe_image
from bestie.structures import ImageRecord

LOG = logging.getLogger(__name__)

POINT_MODES = ("centroid", "none")


@dataclass
class _ImageLabels:
    """What the annotations say about one image."""

    classes: set[int] = field(default_factory=set)
    points: list[tuple[int, int, int]] = field(default_factory=list)


def load_coco_split(
    images_dir: str | os.PathLike[str],
    annotation_json: str | os.PathLike[str],
    *,
    points: str = "centroid",
) -> SplitData:
    """Read one split of a COCO-format data set.

    Args:
        images_dir: the folder that ``file_name`` entries are relative to.
        annotation_json: a COCO instances JSON (``images``, ``annotations``, ``categories``).
        points: ``"centroid"`` for one ground-truth point per instance (see
            :func:`centroid_point`), ``"none"`` for records without points.

    Returns:
        The records (in the JSON's image order), category names by 0-based class id, and
        the COCO ground truth of every image (images without instances included).

    Raises:
        ValueError: invalid input (see the module docstring), naming the file and culprit.
    """
    if points not in POINT_MODES:
        raise ValueError(f"points must be one of {POINT_MODES}, got {points!r}")
    source = os.fspath(annotation_json)
    if not os.path.isdir(images_dir):
        raise ValueError(f"{source}: images folder not found: {os.fspath(images_dir)}")
    data = read_json(annotation_json)
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a COCO instances object, got {type(data).__name__}")
    names, class_of = _read_categories(data, source)
    images = _read_images(data, source)
    sizes = {image["id"]: (image["height"], image["width"]) for image in images}
    annotations, labels, skipped = _read_annotations(
        data, source, sizes, class_of, with_points=points == "centroid"
    )
    records = []
    for image in images:
        file = os.path.abspath(os.path.join(images_dir, image["file_name"]))
        where = f"{source}: image {image['id']} ({image['file_name']})"
        height, width = probe_image(file, source=where)
        if (height, width) != sizes[image["id"]]:
            raise ValueError(
                f"{where}: the file is {height}x{width} (HxW) but the JSON says "
                f"{image['height']}x{image['width']}"
            )
        image_labels = labels[image["id"]]
        records.append(
            ImageRecord(
                id=image["id"],
                name=Path(image["file_name"]).stem,
                file=file,
                height=height,
                width=width,
                classes=tuple(sorted(image_labels.classes)),
                points=tuple(image_labels.points),
            )
        )
    gt = {"images": images, "annotations": annotations, "categories": gt_categories(names)}
    return SplitData(records, names, gt, dict(skipped))


def centroid_point(mask: np.ndarray) -> tuple[int, int]:
    """The mask pixel nearest to the mask centroid, as (y, x).

    When the centroid lies in the mask this is the centroid's own (rounded) pixel; for a
    non-convex mask whose centroid falls outside it, the closest mask pixel. Ties go to the
    first pixel in row-major order.

    Args:
        mask: bool [H, W], not empty.

    Raises:
        ValueError: the mask is empty.
    """
    row_counts = np.count_nonzero(mask, axis=1)
    column_counts = np.count_nonzero(mask, axis=0)
    area = int(row_counts.sum())
    if area == 0:
        raise ValueError("centroid_point: empty mask")
    center_y = float(row_counts @ np.arange(row_counts.size)) / area
    center_x = float(column_counts @ np.arange(column_counts.size)) / area
    # The nearest pixel to a point is its rounded position (halves round down, the
    # row-major tie rule); the full search is only needed when that pixel is off the mask.
    y, x = math.ceil(center_y - 0.5), math.ceil(center_x - 0.5)
    if mask[y, x]:
        return y, x
    ys, xs = np.nonzero(mask)
    nearest = int(np.argmin((ys - center_y) ** 2 + (xs - center_x) ** 2))
    return int(ys[nearest]), int(xs[nearest])


def _rle_centroid_point(rle: dict[str, Any]) -> tuple[int, int]:
    """:func:`centroid_point` of a non-empty pycocotools RLE, mostly without decoding it.

    The centroid comes in closed form from the foreground runs (column-major pixel order);
    the mask is decoded only when the centroid's own pixel is not in it.
    """
    height = int(rle["size"][0])
    runs = np.asarray(_string_runs(rle["counts"], "RLE"), np.int64)
    bounds = np.concatenate([[0], np.cumsum(runs)])
    starts, ends = bounds[1 : runs.size : 2], bounds[2 : runs.size + 1 : 2]

    def prefix_sums(position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Sums of the row and of the column indices of all pixels before `position`.
        columns, rows = np.divmod(position, height)
        row_sums = columns * (height * (height - 1) // 2) + rows * (rows - 1) // 2
        column_sums = height * columns * (columns - 1) // 2 + rows * columns
        return row_sums, column_sums

    (rows_end, columns_end), (rows_start, columns_start) = prefix_sums(ends), prefix_sums(starts)
    area = int((ends - starts).sum())
    center_y = float((rows_end - rows_start).sum()) / area
    center_x = float((columns_end - columns_start).sum()) / area
    y, x = math.ceil(center_y - 0.5), math.ceil(center_x - 0.5)
    run = int(np.searchsorted(bounds, x * height + y, side="right")) - 1
    if run % 2 == 1:  # odd runs are foreground
        return y, x
    return centroid_point(mask_utils.decode(rle))


def _integer(entry: Any, key: str, where: str) -> int:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected an object, got {type(entry).__name__}")
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}: '{key}' must be an integer, got {value!r}")
    return value


def _entries(data: dict[str, Any], key: str, source: str) -> list[Any]:
    entries = data.get(key)
    if not isinstance(entries, list):
        raise ValueError(f"{source}: missing or invalid '{key}' list")
    return entries


def _read_categories(data: dict[str, Any], source: str) -> tuple[list[str], dict[int, int]]:
    """Category names by 0-based class id, and the COCO category id -> class id map."""
    by_id: dict[int, str] = {}
    for index, entry in enumerate(_entries(data, "categories", source)):
        category_id = _integer(entry, "id", f"{source}: category #{index}")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{source}: category {category_id} has no name")
        if category_id in by_id:
            raise ValueError(f"{source}: duplicate category id {category_id}")
        by_id[category_id] = name
    if not by_id:
        raise ValueError(f"{source}: no categories")
    ordered = sorted(by_id)
    return [by_id[key] for key in ordered], {key: index for index, key in enumerate(ordered)}


def _read_images(data: dict[str, Any], source: str) -> list[dict[str, Any]]:
    """The GT ``images`` entries (id, file_name, height, width), structurally checked."""
    images: list[dict[str, Any]] = []
    seen: set[int] = set()
    for index, entry in enumerate(_entries(data, "images", source)):
        image_id = _integer(entry, "id", f"{source}: image #{index}")
        where = f"{source}: image {image_id}"
        if image_id in seen:
            raise ValueError(f"{source}: duplicate image id {image_id}")
        seen.add(image_id)
        file_name = entry.get("file_name")
        if not isinstance(file_name, str) or not file_name:
            raise ValueError(f"{where}: missing 'file_name'")
        height, width = _integer(entry, "height", where), _integer(entry, "width", where)
        if height <= 0 or width <= 0:
            raise ValueError(f"{where}: invalid size {height}x{width}")
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
    if not images:
        raise ValueError(f"{source}: the split has no images")
    return images


def _read_annotations(
    data: dict[str, Any],
    source: str,
    sizes: dict[int, tuple[int, int]],
    class_of: dict[int, int],
    *,
    with_points: bool,
) -> tuple[list[dict[str, Any]], dict[int, _ImageLabels], Counter[str]]:
    """GT annotations (ids renumbered 1..N), per-image labels, and skip counts."""
    annotations: list[dict[str, Any]] = []
    labels = {image_id: _ImageLabels() for image_id in sizes}
    skipped: Counter[str] = Counter()
    seen: set[int] = set()
    for index, entry in enumerate(_entries(data, "annotations", source)):
        annotation_id = _integer(entry, "id", f"{source}: annotation #{index}")
        where = f"{source}: annotation {annotation_id}"
        if annotation_id in seen:
            raise ValueError(f"{source}: duplicate annotation id {annotation_id}")
        seen.add(annotation_id)
        image_id = _integer(entry, "image_id", where)
        if image_id not in sizes:
            raise ValueError(f"{where}: unknown image id {image_id}")
        category_id = _integer(entry, "category_id", where)
        if category_id not in class_of:
            raise ValueError(f"{where}: unknown category id {category_id}")
        label, image_labels = class_of[category_id], labels[image_id]
        if entry.get("iscrowd", 0):
            skipped["crowd"] += 1
            image_labels.classes.add(label)
            continue
        if "segmentation" not in entry:
            raise ValueError(f"{where}: no 'segmentation'")
        rle = _segmentation_rle(entry["segmentation"], sizes[image_id], where)
        if rle is None or not mask_utils.area(rle):
            LOG.warning("%s: empty segmentation; annotation skipped", where)
            skipped["empty_segmentation"] += 1
            continue
        image_labels.classes.add(label)
        if with_points:
            image_labels.points.append((*_rle_centroid_point(rle), label))
        annotations.append(_gt_annotation(len(annotations) + 1, image_id, label, rle))
    if skipped["crowd"]:
        LOG.info("%s: %d crowd annotations are not instances", source, skipped["crowd"])
    return annotations, labels, skipped


def _gt_annotation(
    annotation_id: int, image_id: int, label: int, rle: dict[str, Any]
) -> dict[str, Any]:
    """A GT annotation of a (valid, non-empty) pycocotools RLE; bbox and area from it."""
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": label,
        "segmentation": {"size": list(rle["size"]), "counts": rle["counts"].decode("utf-8")},
        "area": int(mask_utils.area(rle)),
        "bbox": [float(value) for value in mask_utils.toBbox(rle)],
        "iscrowd": 0,
    }


def _segmentation_rle(
    segmentation: Any, size: tuple[int, int], where: str
) -> dict[str, Any] | None:
    """Validated pycocotools RLE (bytes counts) of a polygon list or a COCO RLE.

    Returns None when no polygon has 3 or more vertices. Decoding is left to the caller:
    polygons always rasterise, and RLE runs are checked to cover the image exactly.
    """
    height, width = size
    if isinstance(segmentation, list):
        polygons = [_polygon(polygon, where) for polygon in segmentation]
        # Fewer than 3 vertices enclose nothing; pycocotools would also misread a
        # 4-number list as a box, so such polygons are dropped here.
        polygons = [polygon for polygon in polygons if len(polygon) >= 6]
        if not polygons:
            return None
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    if isinstance(segmentation, dict) and "counts" in segmentation:
        return _rle(segmentation, size, where)
    raise ValueError(f"{where}: segmentation must be a list of polygons or an RLE object")


def _polygon(polygon: Any, where: str) -> list[float]:
    if not isinstance(polygon, list) or not all(
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        for value in polygon
    ):
        raise ValueError(f"{where}: a polygon must be a list of finite numbers")
    if len(polygon) % 2:
        raise ValueError(f"{where}: a polygon has an odd number of coordinates ({len(polygon)})")
    return [float(value) for value in polygon]


def _rle(segmentation: dict[str, Any], size: tuple[int, int], where: str) -> dict[str, Any]:
    """A pycocotools RLE object of a compressed or uncompressed COCO RLE, size-checked."""
    height, width = size
    rle_size = segmentation.get("size")
    if not isinstance(rle_size, list) or rle_size != [height, width]:
        raise ValueError(f"{where}: RLE size {rle_size!r} differs from the image's {[*size]}")
    counts = segmentation["counts"]
    if isinstance(counts, list):
        if not all(isinstance(value, int) and value >= 0 for value in counts):
            raise ValueError(f"{where}: uncompressed RLE counts must be non-negative integers")
        if sum(counts) != height * width:
            raise ValueError(
                f"{where}: uncompressed RLE counts sum to {sum(counts)}, not {height * width}"
            )
        return mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    if isinstance(counts, str | bytes):
        text = counts.encode("utf-8") if isinstance(counts, str) else counts
        # pycocotools decodes a string whose runs fall short of H*W into uninitialised
        # memory without complaint, so the runs are checked here first.
        runs = _string_runs(text, where)
        if min(runs, default=0) < 0 or sum(runs) != height * width:
            raise ValueError(
                f"{where}: invalid RLE (runs sum to {sum(runs)}, not {height * width})"
            )
        return {"size": [height, width], "counts": text}
    raise ValueError(f"{where}: RLE counts must be a string or a list of integers")


def _string_runs(text: bytes, where: str) -> list[int]:
    """Run lengths of a compressed RLE string (pycocotools' ``rleFrString``, in Python).

    Each run is a little-endian base-32 number in characters '0'..'o' (6 bits: 5 of value,
    1 of continuation; the last one's bit 4 is the sign); from the third run on, a run is
    stored as its difference from the run two before it.
    """
    runs: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(text) or not 48 <= text[position] < 112:
                raise ValueError(f"{where}: invalid RLE (malformed counts string)")
            code = text[position] - 48
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            position += 1
            shift += 5
            if not more and code & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs
