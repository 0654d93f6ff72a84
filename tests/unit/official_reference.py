"""A straightforward full-image re-implementation of the official post-processing (test oracle).

Written from SPEC §2.3, §4 and §6.5 in the shape of the official code: per component, a
full-image 2-D max-pool NMS, full-image cv2 clustering (label 0 included), a full-image
distance matrix, and per-instance loops with ``torch.where``. Only the SPEC §12 fixes
differ from the official code (``n_ins`` counts instances; no zero-padding sentinel).
It is slow on purpose and only used to check the cropped, vectorised library code.

Reference: clovaai/BESTIE utils/utils.py ``find_instance_center``, ``cluster_peaks``,
``group_pixels``, ``get_instance_segmentation``, ``refine_label_generation``,
``refine_label_generation_with_point``, ``get_ins_map``, ``gaussian``, ``center_map_gen``.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def find_centers(heatmap, threshold, kernel):
    scores = F.threshold(heatmap[None, None].clone(), threshold, -1.0)
    pooled = F.max_pool2d(scores, kernel, stride=1, padding=(kernel - 1) // 2)
    scores[scores != pooled] = -1
    return torch.nonzero(scores[0, 0] > 0)


def cluster_peaks(offset, foreground, magnitude=2.5, beta=3):
    length = np.sqrt(offset[1] ** 2 + offset[0] ** 2)
    region = ((length < magnitude) & foreground).astype(np.uint8)
    count, _, stats, centroids = cv2.connectedComponentsWithStats(region, connectivity=4)
    peaks = [
        centroids[k][::-1]
        for k in range(count)
        if 21 - beta < stats[k, cv2.CC_STAT_AREA] < 21 + beta
    ]
    return np.int64(peaks).reshape(-1, 2)


def group_pixels(centers, offset):
    height, width = offset.shape[1:]
    rows = torch.arange(height, dtype=offset.dtype)[:, None].expand(height, width)
    cols = torch.arange(width, dtype=offset.dtype)[None, :].expand(height, width)
    located = (torch.stack((rows, cols)) + offset).reshape(2, -1).t()
    distance = torch.norm(centers[:, None, :] - located[None], dim=-1)
    return torch.argmin(distance, dim=0).reshape(height, width) + 1


def instance_segmentation(
    foreground, heatmap, offset, threshold, kernel, ignore, cluster=True, stats=None
):
    """Ids [H, W]; ``heatmap`` gets the cluster marks in place; ``stats`` counts branches."""
    stats = {} if stats is None else stats
    centers = find_centers(heatmap, threshold, kernel)
    if cluster:
        peaks = cluster_peaks(offset.numpy(), foreground.numpy())
        peaks = [(y, x) for y, x in peaks.tolist() if heatmap[y, x] > 0.05]
        if centers.shape[0] == 0:
            new_centers = torch.tensor(peaks, dtype=torch.long).reshape(-1, 2)
            stats["cluster_only"] = stats.get("cluster_only", 0) + len(peaks)
            for y, x in peaks:
                heatmap[y, x] = 1.0
        else:
            new_centers = centers.clone()
            for y, x in peaks:
                peak = torch.tensor([y, x])
                if torch.norm(centers.float() - peak.float(), dim=-1).min() > 100:
                    stats["cluster_far"] = stats.get("cluster_far", 0) + 1
                    new_centers = torch.cat((new_centers, peak[None]))
                    heatmap[y, x] = 1.0
        centers = new_centers
    if centers.shape[0] == 0:
        return torch.zeros_like(foreground, dtype=torch.long) if ignore else foreground.long()
    return foreground * group_pixels(centers, offset)


def gaussian_patch(sigma=6):
    size = 6 * sigma + 3
    x = np.arange(0, size, 1, float)
    y = x[:, None]
    return np.exp(-((x - 3 * sigma - 1) ** 2 + (y - 3 * sigma - 1) ** 2) / (2 * sigma**2))


def draw(center_map, x, y, label, sigma, patch):
    _, height, width = center_map.shape
    if x < 0 or y < 0 or x >= width or y >= height:
        return
    left, top = x - 3 * sigma - 1, y - 3 * sigma - 1
    right, bottom = x + 3 * sigma + 2, y + 3 * sigma + 2
    c, d = max(0, -left), min(right, width) - left
    a, b = max(0, -top), min(bottom, height) - top
    view = center_map[label, max(0, top) : min(bottom, height), max(0, left) : min(right, width)]
    np.maximum(view, patch[a:b, c:d], out=view)


def refine(
    seg,
    center,
    offset,
    label,
    semantic,
    *,
    threshold=0.3,
    kernel=41,
    cluster=True,
    min_area=50,
    max_instances=5,
    sigma=6,
    stats=None,
):
    stats = {} if stats is None else stats
    batch, classes, height, width = center.shape
    prob = F.softmax(seg, dim=1)
    prob[:, 1:] *= label[:, :, None, None]
    refined_offset = torch.zeros((batch, 2, height, width))
    refined_weight = torch.zeros((batch, height, width))
    refined_center = np.zeros((batch, classes, height, width), np.float32)
    rows = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
    cols = torch.arange(width, dtype=torch.float32)[None, :].expand(height, width)
    patch = gaussian_patch(sigma)
    for b in range(batch):
        for c in np.nonzero(label[b].numpy())[0]:
            mask = (semantic[b] == c + 1).numpy().astype(np.uint8)
            count, labels, cc_stats, centroids = cv2.connectedComponentsWithStats(
                mask, connectivity=8
            )
            for k in range(1, count):
                cx, cy = (int(v) for v in centroids[k])
                if cc_stats[k, cv2.CC_STAT_AREA] < min_area:
                    continue
                component = torch.from_numpy(labels == k)
                heatmap = center[b, c] * component
                ids = instance_segmentation(
                    component, heatmap, offset[b], threshold, kernel, True, cluster, stats
                )
                n_ins = sum(bool((ids == i).any()) for i in range(1, int(ids.max()) + 1))
                if n_ins > max_instances:
                    stats["skipped"] = stats.get("skipped", 0) + 1
                    continue
                for i in range(1, int(ids.max()) + 1):
                    index = torch.where(ids == i)
                    if index[0].numel() == 0:
                        continue
                    pmax = heatmap[index].argmax()
                    seg_score = prob[b, c + 1][index].mean().item()
                    py, px = index[0][pmax].item(), index[1][pmax].item()
                    center_score = heatmap[py, px].item()
                    if center_score < threshold:
                        stats["fallback"] = stats.get("fallback", 0) + 1
                        py, px, conf = cy, cx, seg_score
                    else:
                        conf = center_score * seg_score
                    conf = max(0, min(conf, 1))
                    draw(refined_center[b], px, py, c, sigma, patch)
                    refined_weight[b][index] = conf
                    refined_offset[b, 0][index] = py - rows[index]
                    refined_offset[b, 1][index] = px - cols[index]
    return {
        "center": torch.from_numpy(refined_center),
        "offset": refined_offset,
        "weight": refined_weight,
    }


def refine_with_points(offset, label, semantic, points):
    batch, _, height, width = offset.shape
    refined_offset = torch.zeros((batch, 2, height, width))
    refined_weight = torch.zeros((batch, height, width))
    rows = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
    cols = torch.arange(width, dtype=torch.float32)[None, :].expand(height, width)
    for b in range(batch):
        for c in np.nonzero(label[b].numpy())[0]:
            class_points = points[b][points[b][:, 2] == c][:, :2]
            if class_points.shape[0] == 0:
                continue
            ids = (semantic[b] == c + 1) * group_pixels(class_points, offset[b])
            for i in range(1, int(ids.max()) + 1):
                index = torch.where(ids == i)
                if index[0].numel() == 0:
                    continue
                cy, cx = class_points[i - 1].tolist()
                refined_weight[b][index] = 1
                refined_offset[b, 0][index] = cy - rows[index]
                refined_offset[b, 1][index] = cx - cols[index]
    return {"offset": refined_offset, "weight": refined_weight}


def decode(
    prob, center, offset, *, threshold=0.1, kernel=41, cluster=True, min_area=50, ignore=False
):
    semantic = torch.argmax(prob, 0)
    labels, masks, scores = [], [], []
    for value in torch.unique(semantic).tolist():
        if value == 0:
            continue
        mask = (semantic == value).numpy().astype(np.uint8)
        count, components, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        for k in range(1, count):
            if stats[k, cv2.CC_STAT_AREA] < min_area:
                continue
            component = torch.from_numpy(components == k)
            heatmap = center[value - 1] * component
            ids = instance_segmentation(
                component, heatmap, offset, threshold, kernel, ignore, cluster
            )
            for i in range(1, int(ids.max()) + 1):
                index = torch.where(ids == i)
                if index[0].numel() == 0:
                    continue
                center_score = heatmap[index].max().item()
                seg_score = prob[value][index].mean().item()
                if center_score >= 1:
                    center_score = seg_score
                labels.append(value - 1)
                masks.append((ids == i).numpy())
                scores.append(center_score * seg_score)
    return labels, masks, scores


def random_scene(seed, height=120, width=160, num_classes=5, row=None):
    """A random scene and network-like outputs: (seg, center, offset, label, semantic).

    3-8 ellipses of 1-3 classes, many touching; centre Gaussians (sigma 6) of amplitude
    U(0, 1) plus noise; offsets to the instance centre with a per-instance noise level, so
    that NMS, clustering, centroid fallbacks and the instance limit all occur. ``row`` adds
    a row of 7-9 touching discs of one class (one long component): "strong" discs (many NMS
    centres: the instance limit) or "weak" ones (two strong discs, then weak discs with
    clean offsets: cluster centres farther than 100 px from every NMS centre).
    """
    rng = np.random.default_rng(seed)
    present = rng.choice(num_classes, size=int(rng.integers(1, 4)), replace=False)
    semantic = np.zeros((height, width), np.uint8)
    instance = np.zeros((height, width), np.int32)
    centers = []  # (y, x, class, amplitude, offset noise)
    for index in range(int(rng.integers(3, 9))):
        class_id = int(rng.choice(present))
        center_y, center_x = int(rng.integers(height)), int(rng.integers(width))
        if centers and rng.random() < 0.5:  # touch an earlier instance of its class
            near_y, near_x, class_id = centers[int(rng.integers(len(centers)))][:3]
            center_y = int(np.clip(near_y + rng.integers(-25, 26), 0, height - 1))
            center_x = int(np.clip(near_x + rng.integers(-25, 26), 0, width - 1))
        axes = (int(rng.integers(5, 30)), int(rng.integers(5, 30)))
        if rng.random() < 0.2:  # long and thin
            axes = (int(rng.integers(50, 80)), int(rng.integers(8, 16)))
        blob = np.zeros((height, width), np.uint8)
        cv2.ellipse(blob, (center_x, center_y), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        semantic[blob > 0] = class_id + 1
        instance[blob > 0] = index + 1
        centers.append((center_y, center_x, class_id, rng.uniform(0, 1), rng.uniform(0, 1)))
    first = len(centers)
    for index in range(first, first + (0 if row is None else int(rng.integers(7, 10)))):
        center_y, center_x = height // 2 + int(rng.integers(-3, 4)), 14 + 30 * (index - first)
        blob = cv2.circle(np.zeros((height, width), np.uint8), (center_x, center_y), 16, 1, -1)
        semantic[blob > 0] = present[0] + 1  # drawn last: the row stays one component
        instance[blob > 0] = index + 1
        strong = row == "strong" or index - first < 2
        amplitude = rng.uniform(0.3, 1) if strong else rng.uniform(0.1, 0.25)
        noise = rng.uniform(0, 1) if row == "strong" else 0.0
        centers.append((center_y, center_x, int(present[0]), amplitude, noise))
    outputs = _outputs(rng, semantic, instance, centers, present, num_classes, row == "weak")
    if row == "weak":  # disc 1 points at disc 0, the top of disc 2 at disc 1: a fallback
        offset = outputs[2]
        rows, cols = np.mgrid[0:height, 0:width]
        for disc, target, band in ((1, 0, 99), (2, 1, 6)):
            center_y, center_x = centers[first + target][:2]
            top = centers[first + disc][0] - 16
            mask = torch.from_numpy((instance == first + disc + 1) & (rows < top + band))
            offset[0][mask] = torch.from_numpy((center_y - rows)[mask.numpy()]).float()
            offset[1][mask] = torch.from_numpy((center_x - cols)[mask.numpy()]).float()
    return outputs


def _outputs(rng, semantic, instance, centers, present, num_classes, quiet):
    height, width = semantic.shape
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    seg = rng.standard_normal((num_classes + 1, height, width)).astype(np.float32)
    np.put_along_axis(seg, semantic[None].astype(np.int64), 3.0, axis=0)
    noise_level = 0.02 if quiet else rng.choice([0.02, 0.02, 0.3])  # 0.3: fallbacks
    center = noise_level * rng.standard_normal((num_classes, height, width)).astype(np.float32)
    offset = np.zeros((2, height, width), np.float32)
    for index, (center_y, center_x, class_id, amplitude, noise) in enumerate(centers):
        gaussian = amplitude * np.exp(-((rows - center_y) ** 2 + (cols - center_x) ** 2) / 72.0)
        center[class_id] = np.maximum(center[class_id], gaussian.astype(np.float32))
        mask = instance == index + 1
        jitter = noise * rng.standard_normal((2, int(mask.sum())))
        offset[0][mask] = center_y - rows[mask] + jitter[0]
        offset[1][mask] = center_x - cols[mask] + jitter[1]
    label = np.zeros(num_classes, np.float32)
    label[present] = 1
    if rng.random() < 0.3:  # a class in the label but absent, or present but not labelled
        label[int(rng.integers(num_classes))] = 1 - label[int(rng.integers(num_classes))]
    return tuple(torch.from_numpy(array) for array in (seg, center, offset, label, semantic))
