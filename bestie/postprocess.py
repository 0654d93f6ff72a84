"""Instance post-processing: centre NMS, centre clustering, pixel grouping, decoding.

SPEC §4.2 (the instance grouping of one semantic component, shared by online refinement and
inference) and §6.5 (decoding network outputs into scored instances). One implementation of
each step serves both ``bestie.refine`` and ``decode``.

Pure tensor functions that run on the inputs' device (CPU or CUDA); connected components run
on the host through cv2 (``bestie.components``). Unlike the official code, every component
is processed on its bounding-box crop instead of the full image, with identical results:

- NMS: the heatmap is masked to the component, so every pixel outside it is <= 0 after
  thresholding and can neither be a centre nor suppress one; the crop needs no margin.
- Grouping: only the component's pixels keep their id, and the distances are computed in
  image coordinates, so each pixel's id is bit-identical to the full-image computation.
- Clustering: see ``bestie.components.region_centroids`` (label 0 keeps full-image
  semantics).

The max-pool of the NMS is separable (a k x k window max is a k x 1 max of a 1 x k max), which
is exactly equal and about 40x cheaper than one 2-D pool with a 41 x 41 kernel.

Reference: clovaai/BESTIE utils/utils.py ``find_instance_center``, ``cluster_peaks``,
``group_pixels``, ``get_instance_segmentation``, ``get_ins_map``,
https://github.com/clovaai/BESTIE/blob/85636d98f2b186980af88eeca91d3075baa92189/utils/utils.py
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bestie.components import Component, label_components, region_centroids
from bestie.sections import DecodeConfig
from bestie.structures import Instances

Result = TypeVar("Result")


def one_cpu_thread(function: Callable[..., Result]) -> Callable[..., Result]:
    """Run ``function`` on one OpenCV thread, and one torch thread when its tensors lie on the
    CPU.

    Grouping is thousands of small ops: a connected-components call per class and per image,
    tensor ops per component. With several threads each op large enough to be split wakes
    the idle workers, which then spin until the next one: on 2 cores that cost
    ``refine_targets`` 60 % more CPU time and 20 % more wall time for nothing
    (benchmarks/bench_train_step.py ``refine_only``). The thread counts are restored after.
    """

    @functools.wraps(function)
    def wrapper(*args, **kwargs) -> Result:
        threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
        tensors = [value for value in (*args, *kwargs.values()) if isinstance(value, Tensor)]
        on_cpu = all(tensor.device.type == "cpu" for tensor in tensors)
        cv2.setNumThreads(1)
        if on_cpu:
            torch.set_num_threads(1)
        try:
            return function(*args, **kwargs)
        finally:
            cv2.setNumThreads(cv_threads)
            torch.set_num_threads(threads)

    return wrapper


@dataclass(frozen=True)
class ClusterParams:
    """Centre clustering and its two gates (SPEC §4.2.2-3); defaults are the official values.

    Attributes:
        magnitude: pixels with |offset| < magnitude form the clustering region.
        area: expected cluster area (21 integer pixels lie within 2.5 of an integer centre).
        tolerance: a cluster is kept when ``area - tolerance < its area < area + tolerance``.
        min_center: a cluster centre is kept only if the masked heatmap there is > this.
        min_distance: with NMS centres present, a cluster centre is appended only if it is
            farther than this from every NMS centre.
    """

    magnitude: float = 2.5
    area: int = 21
    tolerance: int = 3
    min_center: float = 0.05
    min_distance: float = 100.0


def find_centers(
    heatmap: Tensor, threshold: float, nms_kernel: int, *, top_k: int | None = None
) -> Tensor:
    """Centre NMS on one heatmap (SPEC §4.2.1).

    Values ``<= threshold`` become -1; a pixel is a centre when it equals the max over the
    ``nms_kernel`` x ``nms_kernel`` window around it (stride 1, the window clipped at the
    borders) and is > 0. Plateaus give several centres.

    Args:
        heatmap: float [H, W], the (component-masked) centre heatmap.
        threshold: values must be strictly above it.
        nms_kernel: odd window size (41 in BESTIE).
        top_k: if given, keep the ``top_k`` centres with the highest *scores* (the official
            branch sorted coordinates), ties broken by row-major order.

    Returns:
        int64 [K, 2] centres as (y, x), in row-major order.

    Raises:
        ValueError: on a non-2-D heatmap, an even or non-positive kernel, or ``top_k < 1``.

    Reference: clovaai/BESTIE utils/utils.py ``find_instance_center``.
    """
    if heatmap.dim() != 2:
        raise ValueError(f"find_centers: heatmap must be [H, W], got {tuple(heatmap.shape)}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"find_centers: top_k must be >= 1 or None, got {top_k}")
    heatmap = heatmap.float()
    scores = torch.where(heatmap > threshold, heatmap, torch.full_like(heatmap, -1.0))
    keep = (scores == _window_max(scores, nms_kernel)) & (scores > 0)
    centers = keep.nonzero()
    if top_k is not None and centers.shape[0] > top_k:
        order = torch.sort(scores[keep], descending=True, stable=True).indices[:top_k]
        centers = centers[order.sort().values]
    return centers


def _window_max(values: Tensor, kernel: int) -> Tensor:
    """Max over the kernel x kernel window of every pixel of [H, W], windows clipped."""
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"nms_kernel must be a positive odd integer, got {kernel}")
    padding = (kernel - 1) // 2
    columns = F.max_pool1d(values.t().unsqueeze(0), kernel, stride=1, padding=padding)
    return F.max_pool1d(columns[0].t().unsqueeze(0), kernel, stride=1, padding=padding)[0]


def cluster_region(offset: Tensor, magnitude: float) -> Tensor:
    """Pixels whose offset is shorter than ``magnitude`` (SPEC §4.2.2 step 1-2, before fg).

    Args:
        offset: float [..., 2, H, W] as (dy, dx).
        magnitude: the strict bound on sqrt(dy^2 + dx^2).

    Returns:
        bool [..., H, W].
    """
    offset = offset.float()
    return torch.sqrt(offset[..., 1, :, :].square() + offset[..., 0, :, :].square()) < magnitude


def cluster_centers(
    offset: Tensor,
    foreground: Tensor,
    *,
    magnitude: float = 2.5,
    area: int = 21,
    tolerance: int = 3,
) -> Tensor:
    """Centre clustering (SPEC §4.2.2): centroids of small converged-offset regions.

    The region is ``|offset| < magnitude`` AND ``foreground``; its 4-connected components,
    and label 0 (every non-region pixel of the image), are kept when their area is strictly
    inside (area - tolerance, area + tolerance).

    Args:
        offset: float [2, H, W] as (dy, dx).
        foreground: bool [H, W].
        magnitude, area, tolerance: see ``ClusterParams``.

    Returns:
        int64 [K, 2] truncated centroids (y, x), label 0 first, on ``offset``'s device.

    Reference: clovaai/BESTIE utils/utils.py ``cluster_peaks``.
    """
    if offset.dim() != 3 or offset.shape[0] != 2:
        raise ValueError(f"cluster_centers: offset must be [2, H, W], got {tuple(offset.shape)}")
    if foreground.shape != offset.shape[1:]:
        raise ValueError(
            f"cluster_centers: foreground {tuple(foreground.shape)} does not match offset "
            f"{tuple(offset.shape)}"
        )
    region = (cluster_region(offset, magnitude) & foreground.bool()).cpu().numpy()
    shape = (int(offset.shape[1]), int(offset.shape[2]))
    centers = region_centroids(
        region, origin=(0, 0), image_shape=shape, area=area, tolerance=tolerance
    )
    return torch.from_numpy(centers).to(offset.device)


def group_pixels(centers: Tensor, offset: Tensor, *, origin: tuple[int, int] = (0, 0)) -> Tensor:
    """Assign every pixel to the centre nearest to its predicted centre (SPEC §4.2.5, eq. 1).

    A pixel (y, x) predicts the centre (y + dy, x + dx); its id is 1 + the index of the
    centre at the smallest L2 distance, ties going to the lowest index.

    Args:
        centers: int or float [K, 2] (y, x) in image coordinates.
        offset: float [2, h, w] (dy, dx), the whole image or a crop of it.
        origin: (y, x) of the crop's top-left pixel in the image. Distances are computed in
            image coordinates, so a crop gives exactly the ids of the full image.

    Returns:
        int64 [h, w] ids in 1..K; all zero when K = 0.

    Reference: clovaai/BESTIE utils/utils.py ``group_pixels``.
    """
    if centers.dim() != 2 or centers.shape[1] != 2:
        raise ValueError(f"group_pixels: centers must be [K, 2], got {tuple(centers.shape)}")
    if offset.dim() != 3 or offset.shape[0] != 2:
        raise ValueError(f"group_pixels: offset must be [2, H, W], got {tuple(offset.shape)}")
    height, width = offset.shape[1:]
    if centers.shape[0] == 0:
        return torch.zeros((height, width), dtype=torch.long, device=offset.device)
    offset = offset.float()
    rows = torch.arange(origin[0], origin[0] + height, dtype=torch.float32, device=offset.device)
    cols = torch.arange(origin[1], origin[1] + width, dtype=torch.float32, device=offset.device)
    predicted = torch.stack((rows[:, None] + offset[0], cols[None, :] + offset[1]), dim=-1)
    difference = centers.to(offset.device, torch.float32)[:, None, :] - predicted.view(1, -1, 2)
    distance = torch.linalg.vector_norm(difference, dim=-1)  # [K, h*w]
    return distance.argmin(dim=0).view(height, width) + 1


def group_component(
    heatmap: Tensor,
    foreground: Tensor,
    offset: Tensor,
    *,
    threshold: float,
    nms_kernel: int,
    cluster: ClusterParams | None,
    ignore: bool,
    origin: tuple[int, int] = (0, 0),
    image_shape: tuple[int, int] | None = None,
) -> tuple[Tensor, Tensor]:
    """Instance ids inside one semantic component (SPEC §4.2, ``get_instance_segmentation``).

    NMS centres, then (if ``cluster``) gated cluster centres: kept where the heatmap is
    > ``min_center``; all of them if NMS found none, otherwise only those farther than
    ``min_distance`` from every NMS centre. Appended cluster centres are written as 1.0 into
    ``heatmap`` **in place**, which the callers' scoring relies on. Pixels are then grouped
    to the centres and ids are kept on the component only.

    Args:
        heatmap: float32 [h, w], the class centre map times the component mask (crop).
        foreground: bool [h, w], the component mask (crop).
        offset: float [2, h, w] (dy, dx) (crop).
        threshold, nms_kernel: of the NMS (``find_centers``).
        cluster: clustering parameters, or None to skip clustering.
        ignore: with no centre at all, return all zeros (True) or the whole component as
            id 1 (False).
        origin: (y, x) of the crop in the image.
        image_shape: (H, W) of the full image; defaults to the crop's own shape.

    Returns:
        ids: int64 [h, w], 0 off the component, else 1..max(K, 1).
        centers: int64 [K, 2] (y, x) image coordinates of the centres, NMS ones first.

    Reference: clovaai/BESTIE utils/utils.py ``get_instance_segmentation`` (without its bare
    ``except``: nothing in the clustering can fail here).
    """
    centers = find_centers(heatmap, threshold, nms_kernel)
    centers = centers + torch.tensor(origin, device=centers.device)
    if cluster is not None:
        region = (cluster_region(offset, cluster.magnitude) & foreground).cpu().numpy()
        shape = image_shape or (int(heatmap.shape[0]), int(heatmap.shape[1]))
        centers = _append_cluster_centers(centers, heatmap, region, cluster, origin, shape)
    if centers.shape[0] == 0:
        ids = torch.zeros_like(foreground, dtype=torch.long) if ignore else foreground.long()
        return ids, centers
    return group_pixels(centers, offset, origin=origin) * foreground, centers


def _append_cluster_centers(
    centers: Tensor,
    heatmap: Tensor,
    region: np.ndarray,
    cluster: ClusterParams,
    origin: tuple[int, int],
    image_shape: tuple[int, int],
) -> Tensor:
    """The NMS centres followed by the cluster centres that pass both gates (marks heatmap)."""
    candidates = region_centroids(
        region,
        origin=origin,
        image_shape=image_shape,
        area=cluster.area,
        tolerance=cluster.tolerance,
    )
    if candidates.shape[0] == 0:
        return centers
    local = candidates - np.asarray(origin)
    height, width = heatmap.shape
    inside = (local[:, 0] >= 0) & (local[:, 0] < height) & (local[:, 1] >= 0)
    inside &= local[:, 1] < width
    # Off the crop is off the component, where the masked heatmap is 0.
    values = torch.zeros(len(local), dtype=torch.float32)
    if inside.any():
        rows, cols = torch.from_numpy(local[inside]).to(heatmap.device).unbind(1)
        values[torch.from_numpy(inside)] = heatmap[rows, cols].float().cpu()
    passed = (values > cluster.min_center).numpy()
    candidates, inside = candidates[passed], inside[passed]
    accepted = torch.from_numpy(candidates).to(centers.device)
    if centers.shape[0] > 0 and accepted.shape[0] > 0:
        distance = torch.linalg.vector_norm(
            centers.float()[None, :, :] - accepted.float()[:, None, :], dim=-1
        )
        far = (distance.amin(dim=1) > cluster.min_distance).cpu().numpy()
        accepted, inside = accepted[torch.from_numpy(far).to(accepted.device)], inside[far]
    marks = accepted[torch.from_numpy(inside).to(accepted.device)] - accepted.new_tensor(origin)
    heatmap[marks[:, 0], marks[:, 1]] = 1.0
    return torch.cat((centers, accepted), dim=0)


@one_cpu_thread
def decode(semantic_prob: Tensor, center: Tensor, offset: Tensor, cfg: DecodeConfig) -> Instances:
    """Network outputs of one image to scored instances (SPEC §6.5).

    The semantic map is the argmax of ``semantic_prob``. For each class present, each
    8-connected component of at least ``cfg.min_area`` pixels is split by ``group_component``
    (threshold ``cfg.threshold``, kernel ``cfg.nms_kernel``, clustering if ``cfg.cluster``,
    ``ignore=cfg.ignore_no_center``). Each non-empty id becomes an instance with
    ``score = center_score * seg_score``, where ``seg_score`` is the mean class probability
    over the mask and ``center_score`` the max of the masked, cluster-marked heatmap over it,
    replaced by ``seg_score`` when >= 1. Flip averaging and offset rescaling are the caller's.

    Args:
        semantic_prob: float [C+1, H, W] probabilities (channel 0 = background).
        center: float [C, H, W] class-wise centre heatmaps.
        offset: float [2, H, W] (dy, dx) in pixels of this image.
        cfg: decoding parameters.

    Returns:
        Instances with masks bool [N, H, W], labels int64 [N] (0-based), scores float32 [N],
        ordered by class, then component (cv2 order), then id. N may be 0.

    Raises:
        ValueError: on mismatched shapes or a NaN/infinite value in any input.

    Reference: clovaai/BESTIE utils/utils.py ``get_ins_map``.
    """
    _check_decode_inputs(semantic_prob, center, offset)
    height, width = (int(size) for size in center.shape[1:])
    if cfg.nms_kernel < 1 or cfg.nms_kernel % 2 == 0:
        raise ValueError(f"decode: nms_kernel must be odd and > 0, got {cfg.nms_kernel}")
    # max(dim=0) returns the first max like argmax, and is several times faster on CPU.
    semantic = semantic_prob.max(dim=0).indices.cpu().numpy()
    # A class with fewer than min_area pixels has no component to decode.
    pixels = np.bincount(semantic.ravel(), minlength=semantic_prob.shape[0])
    present = np.flatnonzero(pixels[1:] >= max(cfg.min_area, 1)) + 1
    cluster = ClusterParams() if cfg.cluster else None
    masks, labels, scores = [], [], []
    for value in present.tolist():
        label_map, components = label_components(semantic == value, min_area=cfg.min_area)
        label_tensor = torch.from_numpy(label_map).to(center.device)
        for component in components:
            crop_masks, crop_scores = _decode_component(
                component,
                label_tensor,
                (semantic_prob[value], center[value - 1], offset),
                cluster,
                cfg,
            )
            full = np.zeros((len(crop_masks), height, width), dtype=bool)
            full[(slice(None), *component.slices)] = crop_masks
            masks.append(full)
            labels.extend([int(value) - 1] * len(crop_masks))
            scores.append(crop_scores)
    if not labels:
        return Instances.empty(height, width, with_scores=True)
    return Instances(np.concatenate(masks), np.asarray(labels), np.concatenate(scores))


def _decode_component(
    component: Component,
    label_tensor: Tensor,
    maps: tuple[Tensor, Tensor, Tensor],
    cluster: ClusterParams | None,
    cfg: DecodeConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Masks (bool [n, h, w] on the crop) and float32 scores [n] of one component."""
    probability, heat_full, offset = maps
    rows, cols = component.slices
    foreground = label_tensor[rows, cols] == component.label
    heatmap = heat_full[rows, cols].float() * foreground
    ids, centers = group_component(
        heatmap,
        foreground,
        offset[:, rows, cols],
        threshold=cfg.threshold,
        nms_kernel=cfg.nms_kernel,
        cluster=cluster,
        ignore=cfg.ignore_no_center,
        origin=component.origin,
        image_shape=(int(label_tensor.shape[0]), int(label_tensor.shape[1])),
    )
    count = max(int(centers.shape[0]), 1)
    members = ids[None] == torch.arange(1, count + 1, device=ids.device)[:, None, None]
    sizes = members.flatten(1).sum(dim=1)
    masked = torch.where(members, heatmap[None], torch.full_like(heatmap, -torch.inf)[None])
    center_score = masked.flatten(1).amax(dim=1).double()
    seg_sum = (probability[rows, cols].float()[None] * members).flatten(1).sum(dim=1)
    seg_score = (seg_sum / sizes.clamp(min=1)).double()
    center_score = torch.where(center_score >= 1, seg_score, center_score)
    nonempty = (sizes > 0).cpu().numpy()
    score = (center_score * seg_score).float().cpu().numpy()
    return members.cpu().numpy()[nonempty], score[nonempty]


def _check_decode_inputs(semantic_prob: Tensor, center: Tensor, offset: Tensor) -> None:
    if center.dim() != 3:
        raise ValueError(f"decode: center must be [C, H, W], got {tuple(center.shape)}")
    classes, height, width = center.shape
    if tuple(semantic_prob.shape) != (classes + 1, height, width):
        raise ValueError(
            f"decode: semantic_prob must be [C+1, H, W] = {(classes + 1, height, width)}, "
            f"got {tuple(semantic_prob.shape)}"
        )
    if tuple(offset.shape) != (2, height, width):
        raise ValueError(
            f"decode: offset must be [2, H, W] = {(2, height, width)}, got {tuple(offset.shape)}"
        )
    # NaN would otherwise pass silently into the argmax and the scores (a diverged model).
    for name, values in (("semantic_prob", semantic_prob), ("center", center), ("offset", offset)):
        if not bool(torch.isfinite(values).all()):
            raise ValueError(f"decode: {name} holds NaN or infinite values (a diverged model?)")
