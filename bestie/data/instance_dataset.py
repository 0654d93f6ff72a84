"""Training data of the instance network: augmented images with pseudo-label targets.

SPEC §2.1-2.3 with the SPEC §12 design change: the pseudo instances are a stored artifact
(``pseudo/train.json``), computed once on the un-augmented WSSS map. Each item augments the
image, the WSSS map, the instance masks and the points together (``TrainAugmentation``), then
makes the centre/offset/weight targets from the transformed masks (``make_targets``); each
centre is the truncated centroid recomputed on the transformed mask (stored centres refer to
the un-augmented image and are not used).

Randomness: item ``index`` of epoch ``epoch`` draws every choice from
``np.random.default_rng((seed, epoch, index))``. The same (seed, epoch, index) gives the same
item whatever the worker, the batch order or an interruption and resume in between. Call
``set_epoch`` before building each epoch's DataLoader (workers copy the dataset when the
iterator starts), or address items as ``(index, epoch)``, which overrides it.

Reference: clovaai/BESTIE utils/LoadData.py ``VOCDataset.__getitem__`` (train mode),
https://github.com/clovaai/BESTIE/blob/85636d98f2b186980af88eeca91d3075baa92189/utils/LoadData.py
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from bestie.data.io import read_image
from bestie.data.targets import make_targets
from bestie.data.transforms import Sample, TrainAugmentation
from bestie.structures import IGNORE_LABEL, ImageRecord, Instances

__all__ = ["MAX_POINTS", "InstanceDataset"]

# Rows of the padded ``points`` tensor. The official loader holds 128 points per class; one
# image of VOC has at most 56 instances and one of COCO about 100, so 256 per image leaves
# room at a cost of 6 KB per item. An image with more points is an error at construction.
MAX_POINTS = 256


class InstanceDataset(Dataset):
    """Augmented training items of the instance network.

    Args:
        records: the training split's image records.
        pseudo_instances: image id → the image's pseudo instances (masks [K, H, W] at the
            image size, labels [K]); every record's id must be present.
        semantic_loader: record → the image's WSSS map, uint8 [H, W] (0 background, c + 1
            class c, 255 ignore), e.g. reading ``results/{exp}/wsss/train/{name}.png``.
        num_classes: C.
        augmentation: the training augmentation (crop size, scales, padding value).
        sigma: centre Gaussian standard deviation (6).
        supervision: "image" (centres at the instance centroids) or "point" (centres at the
            record's points of image-label classes; offsets still point to the centroids).
        seed: base seed of the per-item generators.
        max_points: rows of the padded ``points`` tensor.
        image_loader: path → uint8 RGB [H, W, 3] (``read_image``).

    Items are dicts of tensors (crop = ``augmentation.crop``):

    - ``image`` float32 [3, crop, crop], ImageNet-normalised;
    - ``semantic`` int64 [crop, crop], the augmented WSSS map (255 ignore kept; padding is
      ``augmentation.pad_semantic``);
    - ``center`` float32 [C, crop, crop], ``offset`` float32 [2, crop, crop] as (dy, dx),
      ``weight`` float32 [crop, crop] in {0, 1} (``make_targets``);
    - ``image_label`` float32 [C], multi-hot;
    - ``points`` int64 [max_points, 3] as (y, x, class), the first ``point_count`` rows valid
      (the rest are -1; no (0, 0) sentinel): point supervision's points after augmentation,
      none under image supervision;
    - ``point_count`` int64 [], ``instance_count`` int64 [] (pseudo instances left after the
      crop) and ``index`` int64 [].

    Raises:
        ValueError: at construction, on a missing pseudo-instance entry, a class id outside
            [0, C) or too many points; when loading an item, on an image, WSSS map or mask
            of the wrong size or a WSSS value above C other than 255 (naming the image).
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        pseudo_instances: Mapping[int, Instances],
        semantic_loader: Callable[[ImageRecord], np.ndarray],
        num_classes: int,
        augmentation: TrainAugmentation,
        *,
        sigma: float = 6.0,
        supervision: Literal["image", "point"] = "image",
        seed: int = 0,
        max_points: int = MAX_POINTS,
        image_loader: Callable[[str], np.ndarray] = read_image,
    ) -> None:
        if supervision not in ("image", "point"):
            raise ValueError(f"supervision must be 'image' or 'point', got {supervision!r}")
        if num_classes <= 0 or num_classes >= IGNORE_LABEL:
            raise ValueError(f"num_classes must lie in [1, {IGNORE_LABEL - 1}], got {num_classes}")
        self.records = list(records)
        self.pseudo_instances = pseudo_instances
        self.semantic_loader = semantic_loader
        self.num_classes = num_classes
        self.augmentation = augmentation
        self.sigma = sigma
        self.supervision = supervision
        self.seed = seed
        self.max_points = max_points
        self.image_loader = image_loader
        self.epoch = 0
        self._check_records()

    def _check_records(self) -> None:
        missing = [record.id for record in self.records if record.id not in self.pseudo_instances]
        if missing:
            raise ValueError(
                f"no pseudo instances for {len(missing)} image(s), e.g. ids {missing[:5]}"
            )
        for record in self.records:
            points = record.points_array()
            classes = np.concatenate([np.asarray(record.classes, np.int64), points[:, 2]])
            if classes.size and (classes.min() < 0 or classes.max() >= self.num_classes):
                raise ValueError(
                    f"image {record.id} ({record.name}): class ids outside "
                    f"0..{self.num_classes - 1} in its label or points"
                )
            if self.supervision == "point" and len(points) > self.max_points:
                raise ValueError(
                    f"image {record.id} ({record.name}) has {len(points)} points, more than "
                    f"max_points = {self.max_points}"
                )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentations ``__getitem__(index)`` produces."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        index, epoch = (key, self.epoch) if isinstance(key, int | np.integer) else key
        index = int(index)
        record = self.records[index]
        rng = np.random.default_rng((self.seed, int(epoch), index))
        sample = self.augmentation(self._load(record), rng)
        crop = self.augmentation.crop
        point_centres = sample.points if self.supervision == "point" else None
        # The augmented instances carry no centres: make_targets recomputes the centroids.
        center, offset, weight = make_targets(
            sample.instances,
            (crop, crop),
            self.num_classes,
            sigma=self.sigma,
            point_centres=point_centres,
        )
        points = np.full((self.max_points, 3), -1, np.int64)
        count = len(sample.points) if self.supervision == "point" else 0
        points[:count] = sample.points[:count]
        return {
            "image": torch.from_numpy(sample.image),
            "semantic": torch.from_numpy(sample.semantic.astype(np.int64)),
            "center": torch.from_numpy(center),
            "offset": torch.from_numpy(offset),
            "weight": torch.from_numpy(weight),
            "image_label": torch.from_numpy(record.label_vector(self.num_classes)),
            "points": torch.from_numpy(points),
            "point_count": torch.tensor(count, dtype=torch.int64),
            "instance_count": torch.tensor(len(sample.instances), dtype=torch.int64),
            "index": torch.tensor(index, dtype=torch.int64),
        }

    def _load(self, record: ImageRecord) -> Sample:
        """The un-augmented sample of a record, validated against the record's size."""
        size = (record.height, record.width)
        name = f"image {record.id} ({record.name})"
        image = self.image_loader(record.file)
        if image.shape[:2] != size:
            raise ValueError(f"{name}: file {record.file} is {image.shape[:2]}, records say {size}")
        semantic = np.asarray(self.semantic_loader(record))
        if semantic.shape != size:
            raise ValueError(f"{name}: WSSS map is {semantic.shape}, image is {size}")
        if not np.issubdtype(semantic.dtype, np.integer):
            raise ValueError(f"{name}: WSSS map must hold integers, got {semantic.dtype}")
        low, high = int(semantic.min(initial=0)), int(semantic.max(initial=0))
        if low < 0 or high > self.num_classes:
            bad = (semantic < 0) | ((semantic > self.num_classes) & (semantic != IGNORE_LABEL))
            if bad.any():
                values = np.unique(semantic[bad]).tolist()
                raise ValueError(
                    f"{name}: WSSS map values {values[:10]} outside 0..{self.num_classes} "
                    f"and {IGNORE_LABEL}"
                )
        instances = self.pseudo_instances[record.id]
        if instances.image_shape != size:
            raise ValueError(f"{name}: pseudo masks are {instances.image_shape}, image is {size}")
        points = np.zeros((0, 3), np.int64)
        if self.supervision == "point":
            points = record.points_array()
            points = points[np.isin(points[:, 2], np.asarray(record.classes, np.int64))]
        return Sample(image, semantic.astype(np.uint8, copy=False), instances, points)
