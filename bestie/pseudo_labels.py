"""Semantic knowledge transfer: pseudo instances from a WSSS map and instance cues (SPEC §2.2).

Every connected component of an image-label class in the weakly-supervised semantic map
becomes a pseudo instance when exactly one instance cue of that class falls on it. The
centre of an accepted instance is the truncated cv2 centroid of its component, never the
cue. Components with no cue, with two or more cues, or under ``min_area`` pixels are
rejected; the training targets leave them at weight 0 (``bestie.data.targets``).

Reference: clovaai/BESTIE utils/utils.py ``pseudo_label_generation`` (the component loop),
https://github.com/clovaai/BESTIE/blob/85636d98f2b186980af88eeca91d3075baa92189/utils/utils.py
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from bestie.components import label_components
from bestie.structures import IGNORE_LABEL, Instances

MIN_COMPONENT_AREA = 50  # the official MINIMUM_MASK_SIZE
STAT_KEYS = (
    "components",
    "accepted",
    "rejected_no_cue",
    "rejected_multiple_cues",
    "rejected_small",
)


def transfer(
    semantic: np.ndarray,
    cues: np.ndarray,
    image_classes: Iterable[int],
    *,
    min_area: int = MIN_COMPONENT_AREA,
) -> Instances:
    """Pseudo instances of one image by semantic knowledge transfer (SPEC §2.2).

    See ``transfer_with_stats`` for the arguments; this drops the statistics.

    Reference: clovaai/BESTIE utils/utils.py ``pseudo_label_generation``.
    """
    instances, _ = transfer_with_stats(semantic, cues, image_classes, min_area=min_area)
    return instances


def transfer_with_stats(
    semantic: np.ndarray,
    cues: np.ndarray,
    image_classes: Iterable[int],
    *,
    min_area: int = MIN_COMPONENT_AREA,
) -> tuple[Instances, dict[str, int]]:
    """Pseudo instances of one image, with the count of components by outcome.

    For every class c of the image label, in ascending order, the 8-connected components of
    ``semantic == c + 1`` are found with cv2. A component of at least ``min_area`` pixels
    on which exactly one cue of class c lies is accepted. Classes absent from the image
    label are ignored even where the map contains them; cues of such classes never count.

    Args:
        semantic: integer [H, W] WSSS map: 0 background, c + 1 for class c, 255 ignore.
        cues: int [N, 3] as (y, x, class) or [N, 4] as (y, x, class, score); class is
            0-based. Float arrays are accepted when y, x and class hold whole numbers.
        image_classes: 0-based class ids of the image-level label (any order, repeats
            allowed).
        min_area: components with fewer pixels are rejected (the official 50).

    Returns:
        ``(instances, stats)``. ``instances`` holds K accepted components ordered by class,
        then by cv2 component label (raster order of the first pixel): ``masks`` bool
        [K, H, W], ``labels`` int64 [K], ``centers`` int64 [K, 2] as (y, x), the truncated
        cv2 centroid (it may lie outside a non-convex mask), ``cues`` float32 [K, 4] as
        (y, x, class, score) of the selecting cue (score 1.0 when ``cues`` has no score
        column; JSON artifacts cannot hold NaN) and ``scores`` None. ``stats`` maps
        ``components`` (every component of an image-label class, small ones included),
        ``accepted``, ``rejected_no_cue``, ``rejected_multiple_cues`` and
        ``rejected_small`` to counts; the last four add up to ``components``.

    Raises:
        ValueError: on a map that is not 2-D or not integer, malformed cues, a cue outside
            the image (the message names it), a negative cue class, or an image class
            outside [0, 253].

    Reference: clovaai/BESTIE utils/utils.py ``pseudo_label_generation``.
    """
    semantic = _check_semantic(semantic)
    height, width = semantic.shape
    cue_rows = _check_cues(cues, height, width)
    classes = _check_classes(image_classes)
    if min_area < 0:
        raise ValueError(f"min_area must be >= 0, got {min_area}")

    stats = dict.fromkeys(STAT_KEYS, 0)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    cue_classes = cue_rows[:, 2].astype(np.int64)
    for class_id in classes:
        class_cues = cue_rows[cue_classes == class_id]
        parts.append(_transfer_class(semantic, class_id, class_cues, min_area, stats))
    return _assemble(parts, classes, height, width), stats


def _transfer_class(
    semantic: np.ndarray,
    class_id: int,
    class_cues: np.ndarray,
    min_area: int,
    stats: dict[str, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One class: CCL, cue counting by bincount, masks of the accepted components.

    Returns masks bool [k, H, W], centres int64 [k, 2] (y, x), cue rows float32 [k, 4] and
    the accepted component labels; ``stats`` is updated in place.
    """
    labels, components = label_components(semantic == class_id + 1)
    if not components:
        return _no_instances(semantic.shape)
    count = components[-1].label + 1
    cue_labels = labels[class_cues[:, 0].astype(np.intp), class_cues[:, 1].astype(np.intp)]
    hits = np.bincount(cue_labels, minlength=count)
    area = np.zeros(count, np.int64)
    area[[c.label for c in components]] = [c.area for c in components]
    large = area >= min_area
    small = (area > 0) & ~large
    large[0] = small[0] = False  # label 0 is everything outside the class mask
    stats["components"] += len(components)
    stats["rejected_small"] += int(small.sum())
    stats["rejected_no_cue"] += int((large & (hits == 0)).sum())
    stats["rejected_multiple_cues"] += int((large & (hits >= 2)).sum())
    accepted = np.flatnonzero(large & (hits == 1))
    stats["accepted"] += int(accepted.size)

    # With exactly one hit per accepted label, a scatter finds each label's cue unambiguously.
    cue_of_label = np.full(count, -1, np.int64)
    cue_of_label[cue_labels] = np.arange(cue_labels.size)
    by_label = {component.label: component for component in components}
    masks = np.zeros((accepted.size, *semantic.shape), bool)
    for index, label in enumerate(accepted.tolist()):
        window = by_label[label].slices
        masks[index][window] = labels[window] == label
    centers = np.array([by_label[label].centroid for label in accepted.tolist()], np.int64)
    return masks, centers.reshape(-1, 2), class_cues[cue_of_label[accepted]], accepted


def _no_instances(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    empty = np.zeros((0,), np.int64)
    return (
        np.zeros((0, *shape), bool),
        np.zeros((0, 2), np.int64),
        np.zeros((0, 4), np.float32),
        empty,
    )


def _assemble(
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    classes: list[int],
    height: int,
    width: int,
) -> Instances:
    if not parts:
        return Instances(
            np.zeros((0, height, width), bool),
            np.zeros((0,), np.int64),
            centers=np.zeros((0, 2), np.int64),
            cues=np.zeros((0, 4), np.float32),
        )
    labels = np.concatenate(
        [
            np.full(len(part[3]), class_id, np.int64)
            for part, class_id in zip(parts, classes, strict=True)
        ]
    )
    return Instances(
        np.concatenate([part[0] for part in parts]),
        labels,
        centers=np.concatenate([part[1] for part in parts]),
        cues=np.concatenate([part[2] for part in parts]),
    )


def _check_semantic(semantic: np.ndarray) -> np.ndarray:
    semantic = np.asarray(semantic)
    if semantic.ndim != 2 or semantic.size == 0:
        raise ValueError(f"semantic map must be a non-empty [H, W], got shape {semantic.shape}")
    if not np.issubdtype(semantic.dtype, np.integer):
        raise ValueError(f"semantic map must hold integer class indices, got {semantic.dtype}")
    return semantic


def _check_cues(cues: np.ndarray, height: int, width: int) -> np.ndarray:
    """Cues as float32 [N, 4] (y, x, class, score), checked against the image size."""
    cues = np.asarray(cues)
    if cues.size == 0:
        return np.zeros((0, 4), np.float32)
    if cues.ndim != 2 or cues.shape[1] not in (3, 4):
        raise ValueError(f"cues must be [N, 3] (y, x, class) or [N, 4], got {cues.shape}")
    position = cues[:, :3]
    if not np.issubdtype(cues.dtype, np.integer):
        whole = np.isfinite(position) & (position == np.floor(position))
        if not whole.all():
            row = int(np.flatnonzero(~whole.all(axis=1))[0])
            raise ValueError(f"cue {row} {cues[row].tolist()}: y, x and class must be whole")
    position = position.astype(np.int64)
    y, x, class_ids = position.T
    outside = (y < 0) | (y >= height) | (x < 0) | (x >= width) | (class_ids < 0)
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        raise ValueError(
            f"cue {row} (y={y[row]}, x={x[row]}, class={class_ids[row]}) lies outside the "
            f"{height}x{width} image or has a negative class"
        )
    rows = np.ones((len(cues), 4), np.float32)
    rows[:, :3] = position
    if cues.shape[1] == 4:
        rows[:, 3] = cues[:, 3]
    return rows


def _check_classes(image_classes: Iterable[int]) -> list[int]:
    classes = sorted({int(class_id) for class_id in image_classes})
    # c + 1 must be a class value of the map: neither background (0) nor ignore (255).
    if classes and (classes[0] < 0 or classes[-1] + 1 >= IGNORE_LABEL):
        raise ValueError(f"image classes must lie in [0, {IGNORE_LABEL - 2}], got {classes}")
    return classes
