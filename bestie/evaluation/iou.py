"""Pairwise mask IoU with chainercv's numerics, on bool masks or on COCO RLEs.

chainercv (``chainercv.utils.mask_iou``) divides the integer intersection and union in
float64 and stores the result in a float32 matrix, so two empty masks give NaN (0 / 0) and
thresholds are later compared in float32. Both functions here reproduce those values
exactly; they differ only in speed:

- bool masks are bit-packed (eight pixels a byte, padded to 64-bit words) and intersected
  with a popcount, several times faster than per-pair boolean sums;
- RLEs go through pycocotools' run-length IoU, which never decodes the masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

_POPCOUNT_TABLE = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)


def _popcount_sum(words: np.ndarray) -> np.ndarray:
    """Number of set bits along the last axis of a uint64 array, as int64."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(words).sum(axis=-1, dtype=np.int64)
    return _POPCOUNT_TABLE[words.view(np.uint8)].sum(axis=-1, dtype=np.int64)


def pack_masks(masks: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Bit-pack masks for fast intersections.

    Args:
        masks: bool [N, H, W].
        rows: int [K], the masks to pack (all by default); packing row by row avoids
            copying the selected masks first.

    Returns:
        words: uint64 [K, ceil(H * W / 64)], the masks' pixels as bits (zero padded).
        areas: int64 [K], pixels per mask.
    """
    rows = np.arange(masks.shape[0]) if rows is None else rows
    num_pixels = masks.shape[1] * masks.shape[2]
    packed = np.zeros((rows.size, -(-num_pixels // 64) * 8), np.uint8)
    for position, row in enumerate(rows):
        packed[position, : -(-num_pixels // 8)] = np.packbits(masks[row].reshape(-1))
    words = packed.view(np.uint64)
    return words, _popcount_sum(words)


def _ratio(intersection: np.ndarray, union: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return (intersection / union).astype(np.float32)


def packed_iou(
    words_a: np.ndarray, areas_a: np.ndarray, words_b: np.ndarray, areas_b: np.ndarray
) -> np.ndarray:
    """IoU of packed masks (from :func:`pack_masks`).

    Returns:
        float32 [N, M]; NaN where both masks are empty.
    """
    intersection = np.empty((words_a.shape[0], words_b.shape[0]), np.int64)
    for column in range(words_b.shape[0]):  # one column at a time bounds the temporary
        intersection[:, column] = _popcount_sum(words_a & words_b[column])
    return _ratio(intersection, areas_a[:, None] + areas_b[None, :] - intersection)


def mask_iou(masks_a: np.ndarray, masks_b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of bool masks, with the values of chainercv.utils.mask_iou.

    Args:
        masks_a: bool [N, H, W].
        masks_b: bool [M, H, W].

    Returns:
        float32 [N, M]: intersection / union; NaN for two empty masks.

    Raises:
        ValueError: if the masks are not 3-D or differ in size.
    """
    masks_a, masks_b = np.asarray(masks_a, bool), np.asarray(masks_b, bool)
    if masks_a.ndim != 3 or masks_b.ndim != 3 or masks_a.shape[1:] != masks_b.shape[1:]:
        raise ValueError(
            f"mask_iou needs [N, H, W] masks of one size, got {masks_a.shape} and {masks_b.shape}"
        )
    return packed_iou(*pack_masks(masks_a), *pack_masks(masks_b))


def rle_iou(rles_a: Sequence[dict[str, Any]], rles_b: Sequence[dict[str, Any]]) -> np.ndarray:
    """Pairwise IoU of compressed COCO RLEs of one size, with chainercv's values.

    pycocotools counts the intersection and union exactly and divides them in float64, as
    chainercv does; it reports 0 for two empty masks where chainercv has NaN, which is put
    back here.

    Args:
        rles_a: N RLE dicts (``size`` [H, W], ``counts`` str or bytes).
        rles_b: M RLE dicts of the same size.

    Returns:
        float32 [N, M].
    """
    if not rles_a or not rles_b:
        return np.zeros((len(rles_a), len(rles_b)), np.float32)
    iou = np.asarray(mask_utils.iou(list(rles_a), list(rles_b), [0] * len(rles_b)), np.float64)
    iou = iou.reshape(len(rles_a), len(rles_b))
    empty_a = _areas(list(rles_a)) == 0
    empty_b = _areas(list(rles_b)) == 0
    iou[empty_a[:, None] & empty_b[None, :]] = np.nan
    return iou.astype(np.float32)


def _areas(rles: list[dict]) -> np.ndarray:
    """Pixel counts of RLEs, int [N].

    pycocotools' ``area`` (2.0.11 under NumPy 2) sizes its output with a uint8 and raises
    OverflowError for more than 255 RLEs (an untrained network's image can have more), so it
    is called on chunks.
    """
    chunks = [mask_utils.area(rles[start : start + 255]) for start in range(0, len(rles), 255)]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int64)


def count_true_positives(
    masks: np.ndarray,
    labels: np.ndarray,
    gt_masks: np.ndarray,
    gt_labels: np.ndarray,
    iou_threshold: float = 0.5,
) -> int:
    """How many masks [K,H,W] have IoU >= ``iou_threshold`` with a GT mask of their label.

    Used for the pseudo-label statistics and the Fig. 6 audit (not for AP: no one-to-one
    matching here, as the paper counts true positives among the labels).
    """
    if not len(masks) or not len(gt_masks):
        return 0
    iou = mask_iou(masks, gt_masks)
    same = np.asarray(labels)[:, None] == np.asarray(gt_labels)[None, :]
    return int(((iou >= iou_threshold) & same).any(axis=1).sum())
