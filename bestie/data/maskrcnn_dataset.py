"""Training data of the Mask R-CNN stage: pseudo ground truth and (image, target) items.

The refinement stage (paper §4.3) trains a Mask R-CNN on the instance network's predictions
for the train split. :func:`predictions_to_ground_truth` turns those predictions (a COCO
results list) into a COCO instances file: predictions scored at least
``maskrcnn.pseudo_score_threshold`` are kept, empty masks are dropped, and boxes and areas
are computed from the masks. :class:`MaskRcnnDataset` serves images with their instances in
torchvision's detection format; :func:`training_records` applies ``maskrcnn.empty_policy`` to
images without any instance.

Randomness: item ``(index, epoch)`` draws its flip from ``np.random.default_rng((seed, epoch,
index))``, so a resumed run sees the same items as an uninterrupted one.

Reference: pytorch/vision references/detection/coco_utils.py (``ConvertCocoPolysToMask``:
COCO annotations to boxes/labels/masks targets, crowd regions dropped) and transforms.py
(``RandomHorizontalFlip`` of image, boxes and masks together).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from bestie.artifacts import annotations_by_image, instances_to_annotations, mask_to_bbox
from bestie.data.io import read_image
from bestie.structures import ImageRecord, Instances

__all__ = [
    "MaskRcnnDataset",
    "collate",
    "ground_truth_instances",
    "predictions_to_ground_truth",
    "training_records",
]

Target = dict[str, torch.Tensor]


def predictions_to_ground_truth(
    predictions: Sequence[dict[str, Any]],
    records: Sequence[ImageRecord],
    categories: Sequence[str],
    *,
    score_threshold: float,
) -> tuple[dict[str, Any], dict[str, int]]:
    """COCO instances ground truth made of the confident, non-empty predictions.

    Args:
        predictions: COCO results entries (``image_id``, ``category_id`` 0-based,
            ``segmentation`` RLE, ``score``) of the records' images.
        records: the split's images; every one appears in ``images`` of the result, also
            those left without an instance.
        categories: class names indexed by class id.
        score_threshold: predictions with ``score >= score_threshold`` are kept.

    Returns:
        ``(ground truth, counts)``: a COCO dict (``images``, ``annotations`` with RLE
        ``segmentation``, ``area`` and ``bbox`` [x, y, w, h] from the mask, ``iscrowd`` 0,
        ``categories``) and counts of ``predictions``, ``kept``, ``below_threshold``,
        ``empty`` masks and ``images_without_instances``.
    """
    grouped = annotations_by_image(predictions, records)
    annotations: list[dict[str, Any]] = []
    below = empty = without = 0
    for record in records:
        instances = grouped[record.id]
        confident = instances.scores >= score_threshold
        nonempty = instances.masks.any(axis=(1, 2))
        below += int((~confident).sum())
        empty += int((confident & ~nonempty).sum())
        kept = instances.select(np.flatnonzero(confident & nonempty))
        without += int(len(kept) == 0)
        kept.scores = None  # ground truth carries no score
        annotations += instances_to_annotations(kept, record.id, first_id=len(annotations) + 1)
    images = [
        {"id": r.id, "file_name": r.file, "height": r.height, "width": r.width} for r in records
    ]
    coco = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": index, "name": name} for index, name in enumerate(categories)],
    }
    counts = {
        "predictions": len(predictions),
        "kept": len(annotations),
        "below_threshold": below,
        "empty": empty,
        "images_without_instances": without,
    }
    return coco, counts


def ground_truth_instances(
    coco: Mapping[str, Any], records: Sequence[ImageRecord]
) -> dict[int, Instances]:
    """The instances of a COCO instances file per record id, crowd regions left out.

    Raises:
        ValueError: an annotation names an image that is not among the records.
    """
    known = {record.id for record in records}
    entries = [a for a in coco["annotations"] if not a.get("iscrowd", 0)]
    strangers = sorted({int(a["image_id"]) for a in entries} - known)
    if strangers:
        raise ValueError(f"annotations name images not in the records, e.g. ids {strangers[:5]}")
    return annotations_by_image(entries, records)


def training_records(
    records: Sequence[ImageRecord],
    instances: Mapping[int, Instances],
    policy: Literal["skip", "negative"],
) -> list[ImageRecord]:
    """The records to train on under ``maskrcnn.empty_policy``.

    ``skip`` leaves out images without any instance; ``negative`` keeps them as
    background-only images (targets with zero boxes, which torchvision supports).

    Raises:
        ValueError: an unknown policy, or no image is left to train on.
    """
    if policy not in ("skip", "negative"):
        raise ValueError(f"maskrcnn.empty_policy must be 'skip' or 'negative', got {policy!r}")
    with_instances = [record for record in records if len(instances[record.id]) > 0]
    chosen = with_instances if policy == "skip" else list(records)
    if not with_instances or not chosen:
        raise ValueError(
            f"no training image has an instance ({len(records)} images): the training "
            "annotations are empty (pseudo GT: lower maskrcnn.pseudo_score_threshold, or "
            "check the instance network's train predictions)"
        )
    return chosen


def target_from_instances(instances: Instances) -> Target:
    """torchvision's target dict of one image's instances (empty masks dropped).

    Returns:
        ``boxes`` float32 [K, 4] as (x1, y1, x2, y2) with x2 = last column + 1, ``labels``
        int64 [K] = class id + 1 (0 is background), ``masks`` uint8 [K, H, W].
    """
    nonempty = instances.masks.any(axis=(1, 2))
    masks = instances.masks[nonempty]
    boxes = np.zeros((len(masks), 4), np.float32)
    for row, mask in enumerate(masks):
        x, y, w, h = mask_to_bbox(mask)
        boxes[row] = (x, y, x + w, y + h)
    return {
        "boxes": torch.from_numpy(boxes),
        "labels": torch.from_numpy(instances.labels[nonempty] + 1),
        "masks": torch.from_numpy(masks.astype(np.uint8)),
    }


class MaskRcnnDataset(Dataset):
    """Images with their instances as torchvision detection targets.

    Args:
        records: the images to train on (see :func:`training_records`).
        instances: record id -> the image's instances (bool masks at the image size).
        flip: flip image and masks horizontally with p = 0.5.
        seed: base seed of the per-item generators.
        image_loader: path -> uint8 RGB [H, W, 3].

    Items, addressed as ``(index, epoch)`` (or a plain index, epoch 0), are
    ``(image float32 [3, H, W] in [0, 1], target)`` with the target of
    :func:`target_from_instances` plus ``image_id`` int64 [].

    Raises:
        ValueError: at construction, a record without an instances entry; when loading, an
            image or mask of the wrong size (naming the image).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        instances: Mapping[int, Instances],
        *,
        flip: bool = True,
        seed: int = 0,
        image_loader: Callable[[str], np.ndarray] = read_image,
    ) -> None:
        missing = [record.id for record in records if record.id not in instances]
        if missing:
            raise ValueError(f"no instances entry for {len(missing)} image(s), e.g. {missing[:5]}")
        self.records = list(records)
        self.instances = instances
        self.flip = flip
        self.seed = seed
        self.image_loader = image_loader

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, Target]:
        index, epoch = (key, 0) if isinstance(key, int | np.integer) else key
        record = self.records[int(index)]
        image = self.image_loader(record.file)
        instances = self.instances[record.id]
        size = (record.height, record.width)
        if image.shape[:2] != size or instances.image_shape != size:
            raise ValueError(
                f"image {record.id} ({record.name}): file is {image.shape[:2]}, masks are "
                f"{instances.image_shape}, records say {size}"
            )
        rng = np.random.default_rng((self.seed, int(epoch), int(index)))
        masks = instances.masks
        if self.flip and rng.random() < 0.5:
            image, masks = image[:, ::-1], masks[:, :, ::-1]
        target = target_from_instances(Instances(np.ascontiguousarray(masks), instances.labels))
        target["image_id"] = torch.tensor(record.id, dtype=torch.int64)
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        return tensor.float().div_(255.0), target


def collate(
    batch: Sequence[tuple[torch.Tensor, Target]],
) -> tuple[list[torch.Tensor], list[Target]]:
    """Lists of images and targets (torchvision detection models take lists)."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)
