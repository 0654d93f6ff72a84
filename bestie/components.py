"""Connected components on the host, for refinement and decoding (SPEC §4.1, §4.2.2, §6.5).

Connected-component labelling is the one step of post-processing that runs on the CPU
(cv2); everything else stays on the tensors' device. Two helpers live here:

- ``label_components``: the 8-connected components of a class mask with their bounding
  boxes and truncated centroids, so that callers can work on one small crop per component.
- ``region_centroids``: the centre-clustering CCL (4-connectivity, area window) on a crop,
  with the results the official code gets on the *full* image. The official code also
  tests CCL label 0 (every non-region pixel of the image) against the area window; its
  area and centroid are computed here analytically from the full image size, so a crop
  gives exactly the full-image answer.

Reference: clovaai/BESTIE utils/utils.py ``cluster_peaks`` and the component loops of
``refine_label_generation`` / ``get_ins_map``,
https://github.com/clovaai/BESTIE/blob/85636d98f2b186980af88eeca91d3075baa92189/utils/utils.py
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Up to this many foreground pixels, component statistics are computed from the pixels
# (cv2's own statistics pass has a fixed cost of about 1 ms on a VOC-sized image).
SPARSE_PIXELS = 10_000


@dataclass(frozen=True)
class Component:
    """One connected component of a binary mask.

    Attributes:
        label: the component's value in the label map returned with it (>= 1).
        area: number of pixels.
        top, left: the first row and column of its bounding box.
        bottom, right: one past the last row and column of its bounding box.
        centroid: (y, x) of the cv2 float centroid, truncated to int. It may lie outside a
            non-convex component.
    """

    label: int
    area: int
    top: int
    left: int
    bottom: int
    right: int
    centroid: tuple[int, int]

    @property
    def origin(self) -> tuple[int, int]:
        """(y, x) of the bounding box's top-left pixel in image coordinates."""
        return self.top, self.left

    @property
    def slices(self) -> tuple[slice, slice]:
        """(rows, cols) slices that crop an [..., H, W] array to the bounding box."""
        return slice(self.top, self.bottom), slice(self.left, self.right)


def label_components(
    mask: np.ndarray, *, connectivity: int = 8, min_area: int = 0
) -> tuple[np.ndarray, list[Component]]:
    """Connected components of a binary mask, in cv2 label order.

    Args:
        mask: bool or uint8 [H, W]; non-zero pixels are foreground.
        connectivity: 4 or 8.
        min_area: components with fewer pixels are left out of the list (their pixels
            keep their label in the map).

    Components are labelled on the mask's bounding box; the label map and the statistics
    are those of the whole mask.

    Returns:
        labels: int32 [H, W], 0 for background and 1..n for the components.
        components: the components with ``area >= min_area``, by ascending label.

    Raises:
        ValueError: if ``mask`` is not 2-D or ``connectivity`` is not 4 or 8.
    """
    if mask.ndim != 2:
        raise ValueError(f"label_components: mask must be [H, W], got shape {mask.shape}")
    if connectivity not in (4, 8):
        raise ValueError(f"label_components: connectivity must be 4 or 8, got {connectivity}")
    mask = mask.astype(np.uint8, copy=False)
    labels = np.zeros(mask.shape, np.int32)
    box = bounding_box(mask)
    if box is None:  # no foreground (and cv2 crashes on an empty array)
        return labels, []
    # The components of the mask's bounding box are those of the whole mask, in the same
    # (raster) order; labelling the crop skips cv2's pass over the background around it.
    crop = mask[box]
    foreground = np.flatnonzero(crop)
    if foreground.size > SPARSE_PIXELS:
        crop_labels, stats = _components_with_stats(crop, connectivity, min_area)
    else:
        crop_labels, stats = _components_from_pixels(crop, foreground, connectivity, min_area)
    labels[box] = crop_labels
    top, left = box[0].start, box[1].start
    components = []
    for label, area, y0, x0, y1, x1, row_sum, col_sum in stats:
        components.append(
            Component(
                label=label,
                area=area,
                top=top + y0,
                left=left + x0,
                bottom=top + y1,
                right=left + x1,
                # Exact integer coordinate sums over one true division: cv2's whole-image
                # double centroid, truncated (coordinates are non-negative).
                centroid=((row_sum + top * area) // area, (col_sum + left * area) // area),
            )
        )
    return labels, components


def bounding_box(mask: np.ndarray) -> tuple[slice, slice] | None:
    """Slices of the bounding box of the non-zero pixels of [H, W]; None when there are none."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask[rows[0] : rows[-1] + 1].any(axis=0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


# Per component: (label, area, top, left, bottom, right, row sum, column sum) in the crop.
_Stats = list[tuple[int, int, int, int, int, int, int, int]]


def _components_from_pixels(
    mask: np.ndarray, foreground: np.ndarray, connectivity: int, min_area: int
) -> tuple[np.ndarray, _Stats]:
    """Sparse (often speckled) masks: cv2's stats pass costs more than labelling, so the
    statistics come from the foreground pixels, for the components of ``min_area`` or more
    only (a speckled map has thousands of tiny ones)."""
    _, labels = cv2.connectedComponents(mask, connectivity=connectivity)
    values = labels.ravel()[foreground]
    areas = np.bincount(values)
    stats = []
    for label in (np.flatnonzero(areas[1:] >= max(min_area, 1)) + 1).tolist():
        rows, cols = np.divmod(foreground[values == label], mask.shape[1])
        stats.append(
            (
                label,
                int(areas[label]),
                int(rows.min()),
                int(cols.min()),
                int(rows.max()) + 1,
                int(cols.max()) + 1,
                int(rows.sum()),
                int(cols.sum()),
            )
        )
    return labels, stats


def _components_with_stats(
    mask: np.ndarray, connectivity: int, min_area: int
) -> tuple[np.ndarray, _Stats]:
    count, labels, boxes, centroids = cv2.connectedComponentsWithStats(
        mask, connectivity=connectivity
    )
    stats = []
    for label in (np.flatnonzero(boxes[1:count, cv2.CC_STAT_AREA] >= min_area) + 1).tolist():
        left, top, width, height, area = (int(v) for v in boxes[label])
        # centroid x area recovers the exact integer coordinate sums
        col_sum, row_sum = (int(v) for v in np.rint(centroids[label] * area))
        stats.append((label, area, top, left, top + height, left + width, row_sum, col_sum))
    return labels, stats


def region_centroids(
    region: np.ndarray,
    *,
    origin: tuple[int, int],
    image_shape: tuple[int, int],
    area: int = 21,
    tolerance: int = 3,
) -> np.ndarray:
    """Centroids of the 4-connected region components whose area is in the cluster window.

    A label is kept when ``area - tolerance < label area < area + tolerance`` (strict), as
    in the official code. Label 0, the non-region pixels of the *whole image*, is tested
    too and comes first; its area is ``H * W - region pixels``, so it only qualifies on
    degenerate, tiny images.

    ``region`` may be a crop of the image: every region pixel must lie inside it. cv2 gives
    4-connected labels in raster order of their first pixel, which a rectangular crop
    preserves, and the truncated centroid of a component is its crop centroid truncated plus
    the origin, so the result equals a full-image computation.

    Args:
        region: bool [h, w], the crop of the region mask (|offset| < magnitude and
            foreground) whose top-left pixel is ``origin`` in the image.
        origin: (y, x) of the crop in image coordinates.
        image_shape: (H, W) of the full image.
        area: the expected area of a cluster (21 for magnitude 2.5).
        tolerance: half-width of the open area window.

    Returns:
        int64 [K, 2] (y, x) truncated centroids in image coordinates, label 0 first, then
        the region labels in cv2 order.
    """
    if region.ndim != 2:
        raise ValueError(f"region_centroids: region must be [h, w], got shape {region.shape}")
    lower, upper = area - tolerance, area + tolerance
    height, width = image_shape
    origin_y, origin_x = origin
    rows, cols = np.nonzero(region)
    count = int(rows.size)
    centers = []
    background_area = height * width - count
    if lower < background_area < upper:
        # Sums of all pixel coordinates of the image minus those of the region, in exact
        # integers; one true division gives cv2's double centroid.
        sum_y = width * height * (height - 1) // 2 - (int(rows.sum()) + origin_y * count)
        sum_x = height * width * (width - 1) // 2 - (int(cols.sum()) + origin_x * count)
        centers.append([int(sum_y / background_area), int(sum_x / background_area)])
    if count > 0:
        n_labels, _, stats, centroids = cv2.connectedComponentsWithStats(
            region.astype(np.uint8), connectivity=4
        )
        areas = stats[1:n_labels, cv2.CC_STAT_AREA]
        kept = np.flatnonzero((areas > lower) & (areas < upper)) + 1
        # Centroids are >= 0, so the int cast truncates like the official np.int32.
        local = centroids[kept][:, ::-1].astype(np.int64)
        centers.extend((local + np.array([origin_y, origin_x])).tolist())
    return np.asarray(centers, dtype=np.int64).reshape(-1, 2)
