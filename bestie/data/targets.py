"""Centre, offset and weight targets of the instance network (SPEC §2.2-2.3).

The targets are made from (augmented) pseudo instances:

- ``center`` [C, H, W]: a Gaussian of peak 1.0 at each instance centre on its class channel,
  combined by element-wise max; under point supervision, Gaussians at the points instead.
- ``offset`` [2, H, W]: (dy, dx) = centre - pixel on every instance pixel, 0 elsewhere.
- ``weight`` [H, W]: 1 on instance pixels, 0 elsewhere (the instance-aware guidance mask:
  background and rejected components are ignored by the centre and offset losses).

Reference: clovaai/BESTIE utils/utils.py ``gaussian``, ``center_map_gen`` and the target
part of ``pseudo_label_generation``,
https://github.com/clovaai/BESTIE/blob/85636d98f2b186980af88eeca91d3075baa92189/utils/utils.py
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import cv2
import numpy as np

from bestie.structures import Instances


def gaussian_patch(sigma: float = 6) -> np.ndarray:
    """The square centre Gaussian, float32 [S, S] with S = 2r + 1 and r = round(3σ + 1).

    g(v, u) = exp(-((u - r)² + (v - r)²) / (2σ²)), so the peak g(r, r) is exactly 1.0. For
    integer σ, S = 6σ + 3 as in the official code (39 for σ = 6). The official code sizes
    the patch 6σ + 3 for any σ, which puts the peak off-centre for non-integer 3σ; rounding
    the radius keeps a centred peak of 1.0 instead.

    Args:
        sigma: standard deviation in pixels, > 0.

    Returns:
        A new writable float32 array [S, S].

    Reference: clovaai/BESTIE utils/utils.py ``gaussian``.
    """
    return _cached_patch(float(sigma)).copy()


@functools.lru_cache(maxsize=8)
def _cached_patch(sigma: float) -> np.ndarray:
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    radius = round(3 * sigma + 1)
    squared = (np.arange(2 * radius + 1, dtype=np.float64) - radius) ** 2
    # Evaluated in float64 and rounded once, like the official float64 kernel pasted into a
    # float32 map.
    patch = np.exp(-(squared[:, None] + squared[None, :]) / (2 * sigma**2)).astype(np.float32)
    patch.setflags(write=False)
    return patch


def draw_gaussians(
    heatmaps: np.ndarray, points: np.ndarray, classes: np.ndarray, *, sigma: float = 6
) -> np.ndarray:
    """Max-combine a Gaussian into ``heatmaps`` at every point, in place.

    The patch centre lands on the point; the patch is clipped at the borders. Points outside
    the image (y < 0, x < 0, y >= H or x >= W) are skipped, as in the official code.

    Args:
        heatmaps: float32 [C, H, W], modified in place.
        points: int [N, 2] as (y, x).
        classes: int [N], 0-based channel of each point, in [0, C).
        sigma: Gaussian standard deviation (see ``gaussian_patch``).

    Returns:
        ``heatmaps``.

    Raises:
        ValueError: on mismatched shapes or a class outside [0, C).

    Reference: clovaai/BESTIE utils/utils.py ``center_map_gen``.
    """
    if heatmaps.ndim != 3:
        raise ValueError(f"heatmaps must be [C, H, W], got shape {heatmaps.shape}")
    channels, height, width = heatmaps.shape
    points = np.asarray(points, dtype=np.int64).reshape(-1, 2)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    if len(points) != len(classes):
        raise ValueError(f"{len(points)} points but {len(classes)} classes")
    if classes.size and (classes.min() < 0 or classes.max() >= channels):
        raise ValueError(f"point classes must lie in [0, {channels}), got {classes.tolist()}")
    patch = _cached_patch(float(sigma))
    radius = patch.shape[0] // 2
    for (y, x), class_id in zip(points.tolist(), classes.tolist(), strict=True):
        if not (0 <= y < height and 0 <= x < width):
            continue
        top, left = y - radius, x - radius
        y0, y1 = max(top, 0), min(y + radius + 1, height)
        x0, x1 = max(left, 0), min(x + radius + 1, width)
        region = heatmaps[class_id, y0:y1, x0:x1]
        np.maximum(region, patch[y0 - top : y1 - top, x0 - left : x1 - left], out=region)
    return heatmaps


def centroids(masks: np.ndarray) -> np.ndarray:
    """Truncated centroids of masks, as cv2 computes them for connected components.

    The centroid is the mean pixel coordinate, truncated toward zero: the official
    ``int(centroid)`` of ``cv2.connectedComponentsWithStats``. Integer sums and floor
    division give exactly that value. It may lie outside a non-convex mask.

    Args:
        masks: bool [K, H, W].

    Returns:
        int64 [K, 2] as (y, x); (-1, -1) for an empty mask.
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be [K, H, W], got shape {masks.shape}")
    result = np.full((masks.shape[0], 2), -1, np.int64)
    for index, mask in enumerate(masks):
        box = _bounding_box(mask)
        if box is not None:
            result[index] = _box_centroid(mask, box)
    return result


def make_targets(
    instances: Instances,
    shape: tuple[int, int],
    num_classes: int,
    *,
    sigma: float = 6,
    point_centres: np.ndarray | None = None,
    image_classes: Iterable[int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre, offset and weight targets of one image (SPEC §2.2-2.3).

    Instances are written in order; where masks overlap, a later instance overwrites the
    offsets of earlier ones (pseudo instances from ``transfer`` never overlap). An instance
    with an empty mask (e.g. cropped away by augmentation) contributes nothing. Its centre
    is ``instances.centers`` when present, else the truncated centroid of its mask
    (``centroids``); a centre outside the image gets no Gaussian but offsets still point
    to it.

    Args:
        instances: K instances with masks bool [K, H, W] and labels in [0, num_classes).
        shape: (H, W) of the image; must equal the masks' size.
        num_classes: C, the number of centre channels.
        sigma: Gaussian standard deviation (the official 6).
        point_centres: point supervision: int [P, 3] as (y, x, class). The centre map then
            holds a Gaussian at every point (of an ``image_classes`` class, when given)
            instead of at the instance centres; offsets still point to the instance
            centres (SPEC §2.2 step 2, §8.14). Float coordinates are truncated toward zero
            as the official loader does.
        image_classes: 0-based classes of the image label; restricts ``point_centres``.
            None draws every point.

    Returns:
        ``(center, offset, weight)``: float32 [C, H, W], float32 [2, H, W] as (dy, dx) and
        float32 [H, W] in {0, 1}.

    Raises:
        ValueError: on a shape mismatch, a label or point class outside [0, C), or
            malformed points.

    Reference: clovaai/BESTIE utils/utils.py ``pseudo_label_generation``.
    """
    height, width = _check_inputs(instances, shape, num_classes)
    center = np.zeros((num_classes, height, width), np.float32)
    offset = np.zeros((2, height, width), np.float32)
    weight = np.zeros((height, width), np.float32)
    present = np.zeros(len(instances), bool)
    centers = np.full((len(instances), 2), -1, np.int64)
    for index, mask in enumerate(instances.masks):
        box = _bounding_box(mask)
        if box is None:
            continue
        present[index] = True
        if instances.centers is not None:
            centers[index] = instances.centers[index]
        else:
            centers[index] = _box_centroid(mask, box)
        _write_offsets(offset, weight, mask, box, centers[index])
    if point_centres is None:
        draw_gaussians(center, centers[present], instances.labels[present], sigma=sigma)
    else:
        points = _select_points(point_centres, image_classes)
        draw_gaussians(center, points[:, :2], points[:, 2], sigma=sigma)
    return center, offset, weight


def _write_offsets(
    offset: np.ndarray,
    weight: np.ndarray,
    mask: np.ndarray,
    box: tuple[int, int, int, int],
    centre: np.ndarray,
) -> None:
    """Offsets to ``centre`` and weight 1 on the mask's pixels, inside its bounding box."""
    y0, y1, x0, x1 = box
    window = (slice(y0, y1), slice(x0, x1))
    crop = mask[window]
    # Broadcast (centre - row) and (centre - column) over the box; write only mask pixels.
    rows = np.float32(centre[0]) - np.arange(y0, y1, dtype=np.float32)[:, None]
    cols = np.float32(centre[1]) - np.arange(x0, x1, dtype=np.float32)[None, :]
    np.copyto(offset[0][window], rows, where=crop)
    np.copyto(offset[1][window], cols, where=crop)
    np.copyto(weight[window], np.float32(1.0), where=crop)


def _bounding_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1), end-exclusive, of a bool [H, W] mask; None when it is empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    cols = np.flatnonzero(mask[y0:y1].any(axis=0))
    return y0, y1, int(cols[0]), int(cols[-1]) + 1


def _box_centroid(mask: np.ndarray, box: tuple[int, int, int, int]) -> tuple[int, int]:
    """Truncated (y, x) centroid of a non-empty mask from its bounding-box crop."""
    y0, y1, x0, x1 = box
    moments = cv2.moments(mask[y0:y1, x0:x1].view(np.uint8), binaryImage=True)
    # The moments are sums of whole numbers (exact in float64); shifting them to image
    # coordinates and floor-dividing in integers reproduces int(sum / area) exactly.
    area = round(moments["m00"])
    y_sum = round(moments["m01"]) + y0 * area
    x_sum = round(moments["m10"]) + x0 * area
    return y_sum // area, x_sum // area


def _check_inputs(
    instances: Instances, shape: tuple[int, int], num_classes: int
) -> tuple[int, int]:
    height, width = (int(size) for size in shape)
    if height <= 0 or width <= 0:
        raise ValueError(f"shape must be a positive (H, W), got {tuple(shape)}")
    if num_classes <= 0:
        raise ValueError(f"num_classes must be > 0, got {num_classes}")
    if instances.image_shape != (height, width):
        raise ValueError(f"instance masks are {instances.image_shape}, expected {(height, width)}")
    labels = instances.labels
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"instance labels must lie in [0, {num_classes}), got {labels.tolist()}")
    return height, width


def _select_points(point_centres: np.ndarray, image_classes: Iterable[int] | None) -> np.ndarray:
    """Points as int64 [P, 3] (y, x, class), keeping only image-label classes when given."""
    points = np.asarray(point_centres)
    if points.size == 0:
        return np.zeros((0, 3), np.int64)
    if points.ndim != 2 or points.shape[1] < 3:
        raise ValueError(f"point_centres must be [P, 3] (y, x, class[, ...]), got {points.shape}")
    if not np.isfinite(points[:, :3]).all():
        raise ValueError("point_centres must hold finite coordinates and classes")
    points = np.trunc(points[:, :3]).astype(np.int64)
    if image_classes is not None:
        points = points[np.isin(points[:, 2], np.asarray(list(image_classes), dtype=np.int64))]
    return points
