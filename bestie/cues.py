"""Instance cues: peaks of the classifier's class maps (paper §3.1; SPEC §1.3).

For each image the classifier sees a square-resized copy and (flip TTA) its mirror. Each
class map is ReLU'd, multiplied by the image label (here: only the image-label classes are
computed at all, which is the same thing and saves the work on absent classes), resized
bilinearly (align_corners=False) to the original size and divided by its maximum + 1e-5.
The original and the flipped-back maps are averaged, smoothed with a 3×3 mean
(count_include_pad=True, so border pixels are divided by 9) and their peaks are the pixels
equal to the 15×15 max-pool of the map (plateaus give several peaks). Per class the
``top_k`` peaks by score are visited in descending order until one falls below
``threshold``.

This is the only peak finder on the cue side. ``bestie.postprocess.find_centers`` is the
instance network's centre NMS (SPEC §4.2.1): it thresholds the heatmap *before* pooling and
keeps ``top_k`` only as an option; the cue rule here pools the raw map, keeps every
equality peak and then cuts at top-k and the threshold, as the official extraction does.

Reference: clovaai/BESTIE PAM/point_extraction.py (``smoothing``, ``peak_extract``) and
PAM/models/classifier.py (``cam_normalize``),
https://github.com/clovaai/BESTIE/blob/e2f377d4da49fc57d06ace7ad2af896558008e82/PAM/point_extraction.py
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bestie.artifacts import CUE_STAT_KEYS, ImageCues

__all__ = [
    "classifier_cues",
    "cues_from_points",
    "find_peaks",
    "merge_flip",
    "normalize_cams",
    "peaks_to_cues",
    "postprocess_cams",
    "smooth",
    "subsample_maps",
]

EPSILON = 1e-5  # added to each map's maximum before dividing (official value)


def normalize_cams(
    class_maps: torch.Tensor, labels: torch.Tensor | None, size: tuple[int, int]
) -> torch.Tensor:
    """ReLU, × image label, bilinear resize, per-map max normalisation.

    Args:
        class_maps: [N, K, h, w] raw class maps (``extra_conv4`` outputs).
        labels: [N, K] multi-hot image labels, or None when the K maps are already the
            image-label classes.
        size: (H, W), the original image size.

    Returns:
        float32 [N, K, H, W] in [0, 1).
    """
    cams = F.relu(class_maps.float())
    if labels is not None:
        cams = cams * labels[:, :, None, None].to(cams)
    cams = F.interpolate(cams, size=size, mode="bilinear", align_corners=False)
    return cams / (cams.amax(dim=(2, 3), keepdim=True) + EPSILON)


def merge_flip(cams: torch.Tensor, flipped_cams: torch.Tensor) -> torch.Tensor:
    """Average maps with the maps of the mirrored image, flipped back: [N, K, H, W] each."""
    return (cams + flipped_cams.flip(-1)) / 2


def smooth(heat: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """Mean filter, stride 1, zero padding counted (borders divided by kernel²): [N, K, H, W]."""
    if kernel <= 1:
        return heat
    return F.avg_pool2d(heat, kernel, stride=1, padding=kernel // 2, count_include_pad=True)


def find_peaks(
    heat: torch.Tensor, kernel: int = 15, top_k: int = 25
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``top_k`` highest local maxima of each map (equality with the kernel max-pool).

    A pixel is a peak when it equals the maximum of its kernel×kernel window (so every pixel
    of a flat plateau is one); non-peaks score 0. The max-pool is computed separably (a
    column then a row max, exactly equal to the square window).

    Args:
        heat: [N, K, H, W] maps.
        kernel: odd window side.
        top_k: peaks kept per map (fewer when H·W < top_k).

    Returns:
        ``(scores, ys, xs)``, each [N, K, k]: scores descending (ties in raster order),
        int64 coordinates. Entries past the last real peak have score 0.
    """
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"cues.peak_kernel must be a positive odd number, got {kernel}")
    height, width = heat.shape[-2:]
    pad = kernel // 2
    pooled = F.max_pool2d(heat, (kernel, 1), stride=1, padding=(pad, 0))
    pooled = F.max_pool2d(pooled, (1, kernel), stride=1, padding=(0, pad))
    peaks = torch.where(heat == pooled, heat, torch.zeros_like(heat)).flatten(2)
    count = min(top_k, height * width)
    scores, index = peaks.topk(count, dim=-1)
    # topk leaves the order of equal scores unspecified; fix it to raster order.
    index, order = index.sort(dim=-1, stable=True)
    scores = scores.gather(-1, order)
    scores, order = scores.sort(dim=-1, descending=True, stable=True)
    index = index.gather(-1, order)
    return scores, index // width, index % width


def peaks_to_cues(
    scores: torch.Tensor,
    ys: torch.Tensor,
    xs: torch.Tensor,
    classes: Sequence[int],
    threshold: float = 0.1,
) -> np.ndarray:
    """Cue rows of the peaks that reach ``threshold``.

    Args:
        scores, ys, xs: [K, k] per map, scores descending (from :func:`find_peaks`).
        classes: [K] class id of each map.
        threshold: keep score >= threshold (the official loop stops at the first score
            below it).

    Returns:
        float32 [N, 4] (y, x, class, score), grouped by map in the given order.
    """
    keep = (scores >= threshold).cpu().numpy()
    class_ids = np.broadcast_to(np.asarray(classes, np.float32)[:, None], keep.shape)
    rows = np.stack(
        [
            ys.cpu().numpy()[keep].astype(np.float32),
            xs.cpu().numpy()[keep].astype(np.float32),
            class_ids[keep],
            scores.float().cpu().numpy()[keep],
        ],
        axis=1,
    )
    return rows.reshape(-1, 4).astype(np.float32)


def postprocess_cams(
    merged: torch.Tensor,
    classes: Sequence[int],
    *,
    smooth_kernel: int = 3,
    peak_kernel: int = 15,
    top_k: int = 25,
    threshold: float = 0.1,
) -> np.ndarray:
    """Smoothing, peaks and the per-class cut for one image's merged maps.

    Args:
        merged: [K, H, W] flip-merged, normalised class maps.
        classes: [K] their class ids.

    Returns:
        float32 [N, 4] (y, x, class, score).
    """
    if merged.shape[0] == 0:
        return np.zeros((0, 4), np.float32)
    heat = smooth(merged[None], smooth_kernel)
    scores, ys, xs = find_peaks(heat, peak_kernel, top_k)
    return peaks_to_cues(scores[0], ys[0], xs[0], classes, threshold)


def subsample_maps(maps: torch.Tensor, stride: int) -> np.ndarray:
    """float16 [K, ceil(H/s), ceil(W/s)]: the map values at pixels (s·i, s·j)."""
    if stride < 1:
        raise ValueError(f"cues.map_stride must be >= 1, got {stride}")
    return maps[:, ::stride, ::stride].to(torch.float16).cpu().numpy()


@torch.no_grad()
def classifier_cues(
    model: nn.Module,
    images: torch.Tensor,
    classes: Sequence[Sequence[int]],
    sizes: Sequence[tuple[int, int]],
    *,
    flip: bool = True,
    smooth_kernel: int = 3,
    peak_kernel: int = 15,
    top_k: int = 25,
    threshold: float = 0.1,
    map_stride: int = 4,
) -> list[ImageCues]:
    """Cues of a batch of images from a classifier (eval mode, no gradients).

    The network runs once on the batch and its mirror; the rest runs once per group of
    images of equal original size, on the image-label class maps only.

    Args:
        model: returns ``(logits, class_maps [B, C, h, w])``.
        images: [B, 3, S, S] square-resized, normalised images (on the model's device).
        classes: per image, its image-label class ids (may be empty).
        sizes: per image, the original (H, W).

    Returns:
        one :class:`ImageCues` per image (peaks, and maps at ``map_stride``).
    """
    batch = images.shape[0]
    _, class_maps = model(torch.cat([images, images.flip(-1)]) if flip else images)
    results: list[ImageCues] = [None] * batch  # type: ignore[list-item]
    for size in dict.fromkeys(tuple(size) for size in sizes):
        members = [b for b in range(batch) if tuple(sizes[b]) == size]
        counts = [len(classes[b]) for b in members]
        merged = _merged_maps(class_maps, members, [classes[b] for b in members], size, flip)
        if merged.shape[0]:
            scores, ys, xs = find_peaks(smooth(merged[None], smooth_kernel), peak_kernel, top_k)
        else:
            scores = ys = xs = merged.new_zeros((1, 0, 1))
        splits = [tensor[0].split(counts) for tensor in (merged[None], scores, ys, xs)]
        for b, maps, score, y, x in zip(members, *splits, strict=True):
            results[b] = ImageCues(
                peaks_to_cues(score, y, x, classes[b], threshold),
                size[0],
                size[1],
                maps=subsample_maps(maps, map_stride),
                map_classes=np.asarray(classes[b], np.int64),
                stride=map_stride,
            )
    return results


def _merged_maps(
    class_maps: torch.Tensor,
    members: Sequence[int],
    classes: Sequence[Sequence[int]],
    size: tuple[int, int],
    flip: bool,
) -> torch.Tensor:
    """[sum K_b, H, W]: normalised (and flip-merged) label-class maps of images ``members``.

    ``class_maps`` is [B, C, h, w], or [2B, C, h, w] with the mirrored images second.
    """
    half = class_maps.shape[0] // 2 if flip else 0

    def pick(offset: int) -> torch.Tensor:
        return torch.cat(
            [
                class_maps[offset + b, torch.as_tensor(list(cls), dtype=torch.long)]
                for b, cls in zip(members, classes, strict=True)
            ]
        )

    chosen = pick(0)
    if chosen.shape[0] == 0:
        return chosen.new_zeros((0, *size), dtype=torch.float32)
    merged = normalize_cams(chosen[None], None, size)
    if flip:
        merged = merge_flip(merged, normalize_cams(pick(half)[None], None, size))
    return merged[0]


def cues_from_points(points: np.ndarray) -> np.ndarray:
    """Point supervision: int [N, 3] (y, x, class) -> float32 [N, 4] with score 1.0."""
    points = np.asarray(points, np.float32).reshape(-1, 3)
    return np.concatenate([points, np.ones((points.shape[0], 1), np.float32)], axis=1)


STAT_KEYS = CUE_STAT_KEYS


def match_cues(
    peaks: np.ndarray, masks: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Which ground-truth instances each cue falls in.

    Args:
        peaks: float [N, 4] (y, x, class, score) in image pixels.
        masks: bool [M, H, W] ground-truth instance masks.
        labels: int [M] their classes.

    Returns:
        ``(hits [M] int64, on_background [N] bool)``: the number of cues of each instance's
        class on its mask, and whether a cue lies on no instance of its own class.
    """
    peaks = np.asarray(peaks, np.float32).reshape(-1, 4)
    labels = np.asarray(labels, np.int64).reshape(-1)
    height, width = masks.shape[1:]
    ys = np.clip(peaks[:, 0].astype(np.int64), 0, height - 1)
    xs = np.clip(peaks[:, 1].astype(np.int64), 0, width - 1)
    # inside[m, n]: cue n lies on instance m and has its class.
    inside = masks[:, ys, xs] & (labels[:, None] == peaks[None, :, 2].astype(np.int64))
    return inside.sum(axis=1).astype(np.int64), ~inside.any(axis=0)


def touching_same_class(masks: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Which ground-truth instances touch another instance of their own class.

    Two masks touch when they overlap or a pixel of one is among the 8 neighbours of a pixel
    of the other. At a classifier's output stride such instances are one blob of their class
    map, often with a single peak, so a missed instance that touches its kind tells a merged
    blob apart from an instance the classifier did not see.

    Args:
        masks: bool [M, H, W].
        labels: int [M].

    Returns:
        bool [M].
    """
    masks = np.asarray(masks, bool)
    labels = np.asarray(labels, np.int64).reshape(-1)
    count, height, width = masks.shape
    padded = np.pad(masks, ((0, 0), (1, 1), (1, 1)))
    grown = np.zeros_like(masks)
    for dy in range(3):
        for dx in range(3):
            grown |= padded[:, dy : dy + height, dx : dx + width]
    touching = np.zeros(count, bool)
    for first in range(count):
        for second in range(first + 1, count):
            if labels[first] == labels[second] and (grown[first] & masks[second]).any():
                touching[first] = touching[second] = True
    return touching


def cue_statistics(
    images: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    num_classes: int,
    *,
    min_score: float | None = None,
) -> dict[str, dict[str, int]]:
    """Counts of ground-truth instances hit by exactly one, no or several cues, per class.

    Args:
        images: per image ``(peaks [N, 4], masks bool [M, H, W], labels [M])``.
        num_classes: C.
        min_score: count only cues with score > min_score (None: every cue).

    Returns:
        ``{"total": counts, "0": counts, ..., "C-1": counts}`` with keys :data:`STAT_KEYS`:
        instances, hit_once, missed, missed_touching (missed instances that touch another
        instance of their class, :func:`touching_same_class`), hit_multiple (of the GT
        instances), cues and cues_on_background (cues on no GT instance of their class).
    """
    table = np.zeros((num_classes, len(STAT_KEYS)), np.int64)
    for peaks, masks, labels in images:
        peaks = np.asarray(peaks, np.float32).reshape(-1, 4)
        if min_score is not None:
            peaks = peaks[peaks[:, 3] > min_score]
        labels = np.asarray(labels, np.int64).reshape(-1)
        hits, on_background = match_cues(peaks, masks, labels)
        touching = touching_same_class(masks, labels)
        cue_classes = peaks[:, 2].astype(np.int64)
        for column, values in enumerate(
            (
                labels,
                labels[hits == 1],
                labels[hits == 0],
                labels[(hits == 0) & touching],
                labels[hits > 1],
                cue_classes,
                cue_classes[on_background],
            )
        ):
            np.add.at(table[:, column], values, 1)
    result = {"total": dict(zip(STAT_KEYS, table.sum(axis=0).tolist(), strict=True))}
    for class_id in range(num_classes):
        result[str(class_id)] = dict(zip(STAT_KEYS, table[class_id].tolist(), strict=True))
    return result
