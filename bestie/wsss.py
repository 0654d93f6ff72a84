"""Weakly-supervised semantic (WSSS) maps: the label maps that cap the whole pipeline.

Label maps are uint8 [H, W]: 0 background, c+1 for class c, 255 ignore (DESIGN.md §4).
Three sources (``wsss.method``): the CAM classifier's maps, optionally retrained with a
segmentation network (``bestie.wsss_cam``); a folder of maps from any external WSSS method
(PMM, RRM, ...), validated here; or the ground truth itself (the oracle row of the
paper's Table 4).
"""

from __future__ import annotations

import numpy as np

from bestie.structures import IGNORE_LABEL, ImageRecord, Instances


def semantic_from_instances(
    instances: Instances, shape: tuple[int, int], void: np.ndarray | None = None
) -> np.ndarray:
    """The semantic label map of a set of instances (the ground-truth oracle).

    Args:
        instances: masks bool [K, H, W] and 0-based labels [K].
        shape: (H, W).
        void: optional bool [H, W] of pixels to mark 255 (VOC boundaries).

    Returns:
        uint8 [H, W]: 0 background, label+1 under each mask (later instances win), 255 void.
    """
    semantic = np.zeros(shape, np.uint8)
    for mask, label in zip(instances.masks, instances.labels, strict=True):
        semantic[mask] = label + 1
    if void is not None:
        semantic[void] = IGNORE_LABEL
    return semantic


def check_label_map(
    semantic: np.ndarray, record: ImageRecord, num_classes: int, source: str
) -> np.ndarray:
    """Validate a label map for one image; return it unchanged.

    Raises:
        ValueError: naming the image and ``source`` when the size differs from the image's
            or a value is neither a class index (0..num_classes) nor 255.
    """
    if semantic.shape != (record.height, record.width):
        raise ValueError(
            f"{source}: WSSS map of image {record.name} (id {record.id}) is "
            f"{semantic.shape[0]}x{semantic.shape[1]}, the image is "
            f"{record.height}x{record.width}"
        )
    values = np.unique(semantic)
    bad = values[(values > num_classes) & (values != IGNORE_LABEL)]
    if bad.size:
        raise ValueError(
            f"{source}: WSSS map of image {record.name} (id {record.id}) holds value "
            f"{int(bad[0])}; allowed are 0..{num_classes} and 255"
        )
    return semantic


def restrict_to_image_label(semantic: np.ndarray, classes: tuple[int, ...]) -> np.ndarray:
    """Set pixels of classes outside the image-level label to background (a copy)."""
    allowed = np.zeros(256, bool)
    allowed[[0, IGNORE_LABEL, *(c + 1 for c in classes)]] = True
    return np.where(allowed[semantic], semantic, 0).astype(np.uint8)
