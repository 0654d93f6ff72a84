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
    foreground = np.flatnonzero(mask)
    if foreground.size > SPARSE_PIXELS:
        return _components_with_stats(mask, connectivity, min_area)
    # Sparse (often speckled) masks: cv2's stats pass costs more than labelling; compute
    # the statistics of the few large components from the foreground pixels instead.
    _, labels = cv2.connectedComponents(mask, connectivity=connectivity)
    values = labels.ravel()[foreground]
    areas = np.bincount(values)
    components = []
    for label in (np.flatnonzero(areas[1:] >= max(min_area, 1)) + 1).tolist():
        rows, cols = np.divmod(foreground[values == label], mask.shape[1])
        area = int(areas[label])
        components.append(
            Component(
                label=label,
                area=area,
                top=int(rows.min()),
                left=int(cols.min()),
                bottom=int(rows.max()) + 1,
                right=int(cols.max()) + 1,
                # Exact integer sums over one true division: cv2's double centroid.
                centroid=(int(int(rows.sum()) / area), int(int(cols.sum()) / area)),
            )
        )
    return labels, components


def _components_with_stats(
    mask: np.ndarray, connectivity: int, min_area: int
) -> tuple[np.ndarray, list[Component]]:
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(
        mask, connectivity=connectivity
    )
    kept = np.flatnonzero(stats[1:count, cv2.CC_STAT_AREA] >= min_area) + 1
    components = []
    for label, (left, top, width, height, area), (centroid_x, centroid_y) in zip(
        kept.tolist(), stats[kept].tolist(), centroids[kept].tolist(), strict=True
    ):
        components.append(
            Component(
                label=label,
                area=area,
                top=top,
                left=left,
                bottom=top + height,
                right=left + width,
                centroid=(int(centroid_y), int(centroid_x)),
            )
        )
    return labels, components


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
