"""Every on-disk format of the pipeline, read and written here only.

All writers are atomic: they write a temporary file in the target directory and rename it
into place, so a killed job never leaves a file that looks complete (Snakemake then sees
the output missing and reruns the job).

Formats (paths relative to ``results/{experiment}/``):

``dataset/{split}.json`` (records, ``bestie.records/1``)
    ``{"format", "dataset", "split", "categories": [{"id", "name"}],
    "images": [{"id", "name", "file", "height", "width", "classes": [c...],
    "points": [[y, x, c]...]}]}``. Class ids are 0-based; ``file`` is absolute. This is all
    that training stages may read about a split.

``dataset/{split}_gt.json`` (ground truth, COCO instances format)
    Standard COCO: ``images`` (``id``, ``file_name``, ``height``, ``width``, optional
    ``void``: an RLE of VOC's 255 boundary pixels), ``annotations`` (``id``, ``image_id``,
    ``category_id`` = 0-based class id, ``segmentation`` as compressed RLE with a utf-8
    ``counts`` string, ``area``, ``bbox`` [x, y, w, h], ``iscrowd`` 0) and ``categories``.
    Never read by training stages; only evaluation, statistics and the ``gt`` oracles.

``*/pred_{split}.json`` (predictions, COCO results format)
    A list of ``{"image_id", "category_id", "segmentation" (RLE), "score"}``. An image
    without predictions simply has no entry.

RLE strings: pycocotools returns ``counts`` as bytes; JSON needs text, so they are decoded as
utf-8 (the encoding pycocotools itself accepts back).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from bestie.structures import ImageRecord, Instances

RECORDS_FORMAT = "bestie.records/1"


# ----------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched.
    The temporary name keeps the suffix so libraries that dispatch on it (cv2, h5py) work.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent
    )
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike[str], data: Any, *, indent: int | None = None) -> None:
    write_text(path, json.dumps(data, indent=indent, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file; a missing or malformed file raises ValueError naming it."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError as error:
        raise ValueError(f"{path}: file not found") from error
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error


# ----------------------------------------------------------------------------- RLE
def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """Compressed COCO RLE of a bool [H, W] mask, with ``counts`` as a utf-8 string."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("utf-8")
    return rle


def decode_mask(rle: dict[str, Any]) -> np.ndarray:
    """bool [H, W] mask of a compressed (string or bytes ``counts``) or uncompressed RLE."""
    if isinstance(rle.get("counts"), list):
        rle = mask_utils.frPyObjects(rle, *rle["size"])
    return mask_utils.decode(rle).astype(bool)


def mask_to_bbox(mask: np.ndarray) -> list[float]:
    """COCO box [x, y, width, height] enclosing a bool mask; zeros for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [
        float(cols[0]),
        float(rows[0]),
        float(cols[-1] - cols[0] + 1),
        float(rows[-1] - rows[0] + 1),
    ]


# ----------------------------------------------------------------------------- records
def write_records(
    path: str | os.PathLike[str],
    records: Sequence[ImageRecord],
    categories: Sequence[str],
    *,
    dataset: str,
    split: str,
) -> None:
    images = [
        {
            "id": record.id,
            "name": record.name,
            "file": record.file,
            "height": record.height,
            "width": record.width,
            "classes": list(record.classes),
            "points": [list(point) for point in record.points],
        }
        for record in records
    ]
    write_json(
        path,
        {
            "format": RECORDS_FORMAT,
            "dataset": dataset,
            "split": split,
            "categories": [{"id": index, "name": name} for index, name in enumerate(categories)],
            "images": images,
        },
    )


def read_records(path: str | os.PathLike[str]) -> tuple[list[ImageRecord], list[str]]:
    """Read a records file; returns (records, category names indexed by class id)."""
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != RECORDS_FORMAT:
        raise ValueError(f"{path}: not a records file (expected format {RECORDS_FORMAT!r})")
    categories = [entry["name"] for entry in sorted(data["categories"], key=lambda c: c["id"])]
    records = [
        ImageRecord(
            id=int(image["id"]),
            name=str(image["name"]),
            file=str(image["file"]),
            height=int(image["height"]),
            width=int(image["width"]),
            classes=tuple(int(c) for c in image["classes"]),
            points=tuple((int(p[0]), int(p[1]), int(p[2])) for p in image.get("points", [])),
        )
        for image in data["images"]
    ]
    return records, categories


# ----------------------------------------------------------------------------- COCO instances
def instances_to_annotations(
    instances: Instances, image_id: int, *, first_id: int = 1
) -> list[dict[str, Any]]:
    """COCO annotations (ground-truth style, no score) for one image's instances."""
    annotations = []
    for index in range(len(instances)):
        mask = instances.masks[index]
        annotations.append(
            {
                "id": first_id + index,
                "image_id": int(image_id),
                "category_id": int(instances.labels[index]),
                "segmentation": encode_mask(mask),
                "area": int(mask.sum()),
                "bbox": mask_to_bbox(mask),
                "iscrowd": 0,
            }
        )
    return annotations


def instances_to_results(instances: Instances, image_id: int) -> list[dict[str, Any]]:
    """COCO results entries (predictions) for one image; scores are required."""
    if instances.scores is None:
        raise ValueError(f"image {image_id}: predictions need scores")
    return [
        {
            "image_id": int(image_id),
            "category_id": int(instances.labels[index]),
            "segmentation": encode_mask(instances.masks[index]),
            "score": float(instances.scores[index]),
        }
        for index in range(len(instances))
    ]


def annotations_by_image(
    entries: Sequence[dict[str, Any]], images: Sequence[ImageRecord] | Sequence[dict[str, Any]]
) -> dict[int, Instances]:
    """Group COCO annotation or result entries into one Instances per image id.

    ``images`` gives every image id with its size, so images without entries get zero
    instances. Entries carrying ``score`` produce scored instances.
    """
    sizes = {}
    for image in images:
        if isinstance(image, ImageRecord):
            sizes[image.id] = (image.height, image.width)
        else:
            sizes[int(image["id"])] = (int(image["height"]), int(image["width"]))
    grouped: dict[int, list[dict[str, Any]]] = {image_id: [] for image_id in sizes}
    for entry in entries:
        image_id = int(entry["image_id"])
        if image_id not in grouped:
            raise ValueError(f"annotation {entry.get('id', '?')} names unknown image {image_id}")
        grouped[image_id].append(entry)
    result = {}
    for image_id, group in grouped.items():
        height, width = sizes[image_id]
        if not group:
            result[image_id] = Instances.empty(height, width, with_scores=True)
            continue
        masks = np.stack([decode_mask(entry["segmentation"]) for entry in group])
        if masks.shape[1:] != (height, width):
            raise ValueError(
                f"image {image_id}: mask size {masks.shape[1:]} != image size {(height, width)}"
            )
        labels = [int(entry["category_id"]) for entry in group]
        scores = [float(entry.get("score", 1.0)) for entry in group]
        result[image_id] = Instances(masks, labels, scores)
    return result
