"""Online self-refinement: refined centre/offset/weight targets from the network's outputs.

SPEC §4.1 (image-level supervision) and §4.3 (point supervision), with the fixes of SPEC §12:
the 5-instance limit counts instances (non-empty ids), and point lists carry no zero-padding
sentinel, so points on row 0 or column 0 are kept.

Every WSSS component of an image-label class is split into instances by
``bestie.postprocess.group_component`` on the component's bounding-box crop (results equal
to the official full-image computation, see that module), with the grouping, scoring and
target writes vectorised over the component's instances. Only the connected-component
labelling runs on the host; the rest stays on the inputs' device. The refined centre
Gaussians of the whole batch are drawn by one scatter at the end.

Reference: clovaai/BESTIE utils/utils.py ``refine_label_generation``,
``refine_label_generation_with_point``, ``gaussian``, ``center_map_gen``,
https://github.com/clovaai/BESTIE/blob/85636d98f2b186980af88eeca91d3075baa92189/utils/utils.py
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from bestie.components import Component, label_components
from bestie.postprocess import ClusterParams, group_component, group_pixels, one_cpu_thread
from bestie.sections import RefineConfig


@dataclass
class _Batch:
    """The detached inputs and the refined outputs being written, all on one device."""

    seg_logits: Tensor  # [B, C+1, H, W]
    center: Tensor  # [B, C, H, W]
    offset: Tensor  # [B, 2, H, W]
    image_labels: Tensor  # [B, C]
    refined_offset: Tensor  # [B, 2, H, W]
    refined_weight: Tensor  # [B, H, W]
    cluster: ClusterParams | None = None


@one_cpu_thread
@torch.no_grad()
def refine_targets(
    seg_logits: Tensor,
    center: Tensor,
    offset: Tensor,
    image_labels: Tensor,
    semantic: Tensor,
    cfg: RefineConfig,
    *,
    sigma: float = 6.0,
    points: Sequence[Tensor] | None = None,
) -> dict[str, Tensor | None]:
    """Refined targets from the network's own (detached) outputs (SPEC §4.1, §4.3).

    Image-level supervision (``points is None``): for each image and each class c of its
    label, every 8-connected component of ``semantic == c + 1`` with at least
    ``cfg.min_area`` pixels is split into instances (threshold ``cfg.threshold``, kernel
    ``cfg.nms_kernel``, clustering if ``cfg.cluster``, components without a centre ignored).
    A component with more than ``cfg.max_instances`` instances is skipped. Each instance gets
    its centre at the max of the (cluster-marked) masked heatmap over its mask, with
    ``weight = clamp(center_score * seg_score, 0, 1)``; when ``center_score < cfg.threshold``
    it falls back to the component centroid with ``weight = seg_score``. ``seg_score`` is
    the mean over the mask of ``softmax(seg_logits)[c + 1] * image_labels[c]``.

    Point supervision (``points`` given): for each class of the image label with points, all
    WSSS pixels of the class are grouped to its points (no components, no area filter, no
    instance limit), with weight 1 and offsets to their point. The centre target is not
    refined: ``center`` is None and the trainer reuses the pseudo centre loss (SPEC §4.4).

    Args:
        seg_logits: float [B, C+1, H, W] semantic logits.
        center: float [B, C, H, W] class-wise centre heatmaps.
        offset: float [B, 2, H, W] (dy, dx).
        image_labels: [B, C] multi-hot image-level labels (non-zero = present).
        semantic: int [B, H, W] augmented WSSS map (0 background, c+1 class c, 255 ignore).
        cfg: refinement parameters.
        sigma: std of the refined centre Gaussians (patch radius int(3 sigma + 1)).
        points: point supervision, one int [P, 3] (y, x, class) tensor per image.

    Returns:
        dict with ``center`` float32 [B, C, H, W] (None under point supervision),
        ``offset`` float32 [B, 2, H, W] and ``weight`` float32 [B, H, W] in [0, 1],
        on ``center``'s device. Pixels without a refined label have weight 0.

    Raises:
        ValueError: on inconsistent shapes, a bad kernel or sigma, or bad points.

    Reference: clovaai/BESTIE utils/utils.py ``refine_label_generation``,
    ``refine_label_generation_with_point``.
    """
    _check_inputs(seg_logits, center, offset, image_labels, semantic, points)
    if sigma <= 0:
        raise ValueError(f"refine_targets: sigma must be > 0, got {sigma}")
    if cfg.nms_kernel < 1 or cfg.nms_kernel % 2 == 0:
        raise ValueError(f"refine_targets: nms_kernel must be odd and > 0, got {cfg.nms_kernel}")
    batch_size, _, height, width = center.shape
    device = center.device
    batch = _Batch(
        seg_logits=seg_logits.detach().to(device, torch.float32),
        center=center.detach().float(),
        offset=offset.detach().to(device, torch.float32),
        image_labels=image_labels.detach().to(device, torch.float32),
        refined_offset=torch.zeros((batch_size, 2, height, width), device=device),
        refined_weight=torch.zeros((batch_size, height, width), device=device),
        cluster=_cluster_params(cfg),
    )
    semantic_host = semantic.cpu().numpy()
    label_host = image_labels.detach().cpu().numpy()
    if points is not None:
        _refine_with_points(batch, semantic_host, label_host, points)
        return {"center": None, "offset": batch.refined_offset, "weight": batch.refined_weight}

    peaks = []
    for image in range(batch_size):
        for class_id in np.flatnonzero(label_host[image]).tolist():
            label_map, components = label_components(
                semantic_host[image] == class_id + 1, min_area=cfg.min_area
            )
            if not components:
                continue
            label_tensor = torch.from_numpy(label_map).to(device)
            for component in components:
                peaks.append(
                    _refine_component(batch, image, class_id, component, label_tensor, cfg)
                )
    refined_center = torch.zeros_like(batch.center)
    if peaks:
        table = torch.cat(peaks)
        draw_gaussians(refined_center, table[:, :4], sigma, valid=table[:, 4].bool())
    return {
        "center": refined_center,
        "offset": batch.refined_offset,
        "weight": batch.refined_weight,
    }


def _cluster_params(cfg: RefineConfig) -> ClusterParams | None:
    if not cfg.cluster:
        return None
    return ClusterParams(
        magnitude=cfg.cluster_magnitude,
        area=cfg.cluster_area,
        tolerance=cfg.cluster_tolerance,
        min_center=cfg.cluster_min_center,
        min_distance=cfg.cluster_min_distance,
    )


def _refine_component(
    batch: _Batch,
    image: int,
    class_id: int,
    component: Component,
    label_tensor: Tensor,
    cfg: RefineConfig,
) -> Tensor:
    """Write one component's refined offsets and weights; return its centres.

    Returns:
        int64 [K, 5] rows (image, class, y, x, valid) for the Gaussians to draw; valid is 0
        for empty ids and for every id of a skipped component. Nothing is synchronised with
        the host beyond what ``group_component`` needs.
    """
    rows, cols = component.slices
    foreground = label_tensor[rows, cols] == component.label
    heatmap = batch.center[image, class_id, rows, cols] * foreground
    ids, centers = group_component(
        heatmap,
        foreground,
        batch.offset[image, :, rows, cols],
        threshold=cfg.threshold,
        nms_kernel=cfg.nms_kernel,
        cluster=batch.cluster,
        ignore=True,
        origin=component.origin,
        image_shape=(int(batch.center.shape[2]), int(batch.center.shape[3])),
    )
    count = int(centers.shape[0])
    if count == 0:  # no centre: the component is ignored
        return torch.zeros((0, 5), dtype=torch.long, device=heatmap.device)
    members = ids[None] == torch.arange(1, count + 1, device=ids.device)[:, None, None]
    nonempty = members.flatten(1).any(dim=1)
    keep = nonempty.sum() <= cfg.max_instances  # SPEC §12: count instances, not the top id
    # A contiguous crop: softmax over a strided view is many times slower on CPU.
    logits = batch.seg_logits[image, :, rows, cols].contiguous()
    probability = torch.softmax(logits, dim=0)[class_id + 1] * batch.image_labels[image, class_id]
    peak_y, peak_x, confidence = _score_instances(
        heatmap, members, probability, component, cfg.threshold
    )
    selected = (ids > 0) & keep
    _write_targets(batch, image, component.slices, ids, selected, confidence, peak_y, peak_x)
    columns = (torch.full_like(peak_y, image), torch.full_like(peak_y, class_id), peak_y, peak_x)
    return torch.stack((*columns, (nonempty & keep).long()), dim=1)


def _score_instances(
    heatmap: Tensor, members: Tensor, probability: Tensor, component: Component, threshold: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Centre (image coordinates) and confidence of each instance of a component (SPEC §4.1).

    Args:
        heatmap: float [h, w] masked, cluster-marked centre map of the component crop.
        members: bool [K, h, w] instance masks.
        probability: float [h, w] label-cleaned class probability.
        component: the component (origin and centroid).
        threshold: instances whose centre value is below it fall back to the centroid.

    Returns:
        peak_y, peak_x: int64 [K]; confidence: float32 [K] in [0, 1].
    """
    masked = torch.where(members, heatmap[None], torch.full_like(heatmap, -torch.inf)[None])
    flat = masked.flatten(1)
    argmax = flat.argmax(dim=1, keepdim=True)  # first max in raster order, like torch.where
    center_score = flat.gather(1, argmax)[:, 0]
    sizes = members.flatten(1).sum(dim=1)
    seg_score = (probability[None] * members).flatten(1).sum(dim=1) / sizes.clamp(min=1)
    fallback = center_score < threshold
    width = heatmap.shape[1]
    peak_y = torch.where(fallback, component.centroid[0], argmax[:, 0] // width + component.top)
    peak_x = torch.where(fallback, component.centroid[1], argmax[:, 0] % width + component.left)
    # The official code multiplies Python floats: do it in double, then round once.
    confidence = torch.where(fallback, seg_score.double(), center_score.double() * seg_score)
    return peak_y, peak_x, confidence.clamp(0.0, 1.0).float()


def _write_targets(
    batch: _Batch,
    image: int,
    slices: tuple[slice, slice],
    ids: Tensor,
    selected: Tensor,
    confidence: Tensor,
    peak_y: Tensor,
    peak_x: Tensor,
) -> None:
    """Weight and offsets to the instance centre on the selected pixels of a crop.

    ``ids`` [h, w] (1..K) index ``confidence``, ``peak_y`` and ``peak_x`` [K]; pixels where
    ``selected`` [h, w] is False keep their values.
    """
    rows, cols = slices
    device = ids.device
    y_grid = torch.arange(rows.start, rows.stop, dtype=torch.float32, device=device)[:, None]
    x_grid = torch.arange(cols.start, cols.stop, dtype=torch.float32, device=device)[None, :]
    weight = batch.refined_weight[image, rows, cols]
    weight.copy_(torch.where(selected, _lookup(confidence, ids), weight))
    offset = batch.refined_offset[image, :, rows, cols]
    offset[0].copy_(torch.where(selected, _lookup(peak_y.float(), ids) - y_grid, offset[0]))
    offset[1].copy_(torch.where(selected, _lookup(peak_x.float(), ids) - x_grid, offset[1]))


def _lookup(values: Tensor, ids: Tensor) -> Tensor:
    """``values[id - 1]`` for every id > 0, 0 where id = 0; values [K], ids int [h, w]."""
    table = torch.cat((values.new_zeros(1), values))
    # index_select: advanced indexing is orders of magnitude slower here on CPU.
    return table.index_select(0, ids.flatten()).view(ids.shape)


def _refine_with_points(
    batch: _Batch, semantic: np.ndarray, labels: np.ndarray, points: Sequence[Tensor]
) -> None:
    """Point supervision (SPEC §4.3): group each class's WSSS pixels to its points."""
    device = batch.offset.device
    for image, image_points in enumerate(points):
        image_points = image_points.to(device=device, dtype=torch.long)
        point_classes = image_points[:, 2].cpu().numpy()
        for class_id in np.flatnonzero(labels[image]).tolist():
            selected = np.flatnonzero(point_classes == class_id)
            foreground_host = semantic[image] == class_id + 1
            if selected.size == 0 or not foreground_host.any():
                continue
            class_points = image_points[torch.from_numpy(selected).to(device), :2]
            rows, cols = _bounding_box(foreground_host)
            foreground = torch.from_numpy(foreground_host[rows, cols]).to(device)
            ids = group_pixels(
                class_points, batch.offset[image, :, rows, cols], origin=(rows.start, cols.start)
            )
            ids = ids * foreground
            weights = torch.ones(len(class_points), device=device)
            _write_targets(
                batch, image, (rows, cols), ids, foreground, weights, *class_points.unbind(1)
            )


def _bounding_box(mask: np.ndarray) -> tuple[slice, slice]:
    """Row and column slices of the bounding box of a non-empty bool [H, W] mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def draw_gaussians(
    heatmaps: Tensor, centers: Tensor, sigma: float, *, valid: Tensor | None = None
) -> Tensor:
    """Max-combine one Gaussian per centre into class heatmaps, in place (SPEC §2.3).

    The Gaussian is exp(-(dy^2 + dx^2) / (2 sigma^2)) on the integer offsets
    |dy|, |dx| <= int(3 sigma + 1) (the official 39 x 39 patch for sigma = 6), peak 1.0,
    clipped at the borders. Centres outside the image are skipped.

    Args:
        heatmaps: contiguous float [B, C, H, W], updated in place by element-wise max.
        centers: int [N, 4] rows (image, class, y, x).
        sigma: the Gaussian's std in pixels (> 0).
        valid: optional bool [N]; rows where it is False draw nothing.

    Returns:
        ``heatmaps``.

    Reference: clovaai/BESTIE utils/utils.py ``gaussian``, ``center_map_gen``.
    """
    if heatmaps.dim() != 4 or not heatmaps.is_contiguous():
        raise ValueError("draw_gaussians: heatmaps must be a contiguous [B, C, H, W] tensor")
    if centers.dim() != 2 or centers.shape[1] != 4:
        raise ValueError(f"draw_gaussians: centers must be [N, 4], got {tuple(centers.shape)}")
    _, classes, height, width = heatmaps.shape
    device = heatmaps.device
    radius = int(3 * sigma + 1)
    steps = torch.arange(-radius, radius + 1, device=device)
    squared = (steps[:, None].square() + steps[None, :].square()).double()
    patch = torch.exp(-squared / (2 * sigma**2)).to(heatmaps.dtype)  # float64 like numpy
    image, class_id, center_y, center_x = centers.to(device, torch.long).unbind(1)
    drawn = (center_y >= 0) & (center_y < height) & (center_x >= 0) & (center_x < width)
    if valid is not None:
        drawn &= valid.to(device)
    rows = center_y[:, None, None] + steps[None, :, None]  # [N, P, 1]
    cols = center_x[:, None, None] + steps[None, None, :]  # [N, 1, P]
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width) & drawn[:, None, None]
    channel = (image * classes + class_id)[:, None, None]
    index = (channel * height + rows.clamp(0, height - 1)) * width + cols.clamp(0, width - 1)
    values = torch.where(inside, patch, torch.full_like(patch, -math.inf))  # -inf: no-op
    heatmaps.view(-1).scatter_reduce_(0, index.flatten(), values.flatten(), reduce="amax")
    return heatmaps


def _check_inputs(
    seg_logits: Tensor,
    center: Tensor,
    offset: Tensor,
    image_labels: Tensor,
    semantic: Tensor,
    points: Sequence[Tensor] | None,
) -> None:
    if center.dim() != 4:
        raise ValueError(f"refine_targets: center must be [B, C, H, W], got {tuple(center.shape)}")
    batch_size, classes, height, width = center.shape
    expected = {
        "seg_logits": (seg_logits, (batch_size, classes + 1, height, width)),
        "offset": (offset, (batch_size, 2, height, width)),
        "image_labels": (image_labels, (batch_size, classes)),
        "semantic": (semantic, (batch_size, height, width)),
    }
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(
                f"refine_targets: {name} must have shape {shape} (from center "
                f"{tuple(center.shape)}), got {tuple(tensor.shape)}"
            )
    if points is None:
        return
    if len(points) != batch_size:
        raise ValueError(f"refine_targets: {len(points)} point tensors for {batch_size} images")
    for image_points in points:
        if image_points.dim() != 2 or image_points.shape[1] != 3:
            raise ValueError(
                f"refine_targets: points must be [P, 3] (y, x, class), got "
                f"{tuple(image_points.shape)}"
            )
        if image_points.dtype.is_floating_point:
            raise ValueError("refine_targets: points must be an integer tensor")
        if image_points.numel() and not (int(image_points[:, 2].min()) >= 0):
            raise ValueError("refine_targets: point classes must be >= 0")
        if image_points.numel() and int(image_points[:, 2].max()) >= classes:
            raise ValueError(f"refine_targets: point classes must be < {classes}")
