"""The embedded default data set: seeded synthetic scenes (DESIGN.md §5).

Each scene holds one to ``max_classes_per_image`` shape classes (disc, square, triangle, ...)
with ``min_instances``..``max_instances`` instances each, on a textured background strewn
with clutter (lines, rings, dots) that belongs to no class. Instances of one class are
often placed so that they touch and partly occlude each other
(``touch_probability``): their semantic masks then merge into one connected component, so
semantic segmentation alone cannot separate them. Every instance has its own colour and a
darker rim, so the instances are separable from the image itself. Instance colours
cluster around a hue per class (``hue_jitter``), as appearance correlates with class in real
data; same-class neighbours therefore look alike and only their rims tell them apart.

With ``marker_size`` > 0 the class hue moves from the whole body to a small disc on it (a
discriminative part, like a face on a person): the body takes any hue, so a classifier finds
the class from the marker and the shape, and a class map that fires on the marker alone
misses the rest of the instance.

The same seed always gives the same images and ground truth.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import cv2
import numpy as np

from bestie.artifacts import atomic_path, instances_to_annotations
from bestie.sections import SyntheticConfig
from bestie.structures import ImageRecord, Instances

SHAPES = ("disc", "square", "triangle", "diamond", "cross", "ring")
MIN_VISIBLE_FRACTION = 0.6
MIN_VISIBLE_PIXELS = 40


@dataclass(frozen=True)
class Scene:
    """One generated image (uint8 RGB [H, W, 3]) with its visible instance masks."""

    image: np.ndarray
    instances: Instances


def shape_mask(kind: str, center: tuple[float, float], size: float, angle: float, shape):
    """bool [H, W] mask of one shape of diameter ``size`` at ``center`` (y, x)."""
    mask = np.zeros(shape, np.uint8)
    cy, cx = center
    radius = size / 2.0
    if kind == "disc":
        cv2.ellipse(
            mask,
            (round(cx), round(cy)),
            (round(radius), round(radius * 0.85)),
            math.degrees(angle),
            0,
            360,
            1,
            -1,
        )
    elif kind == "ring":
        cv2.circle(mask, (round(cx), round(cy)), round(radius), 1, -1)
        cv2.circle(mask, (round(cx), round(cy)), max(1, round(radius * 0.45)), 0, -1)
    else:
        corners = {"square": 4, "triangle": 3, "diamond": 4, "cross": 12}[kind]
        cv2.fillPoly(mask, [_polygon(kind, cx, cy, radius, angle, corners)], 1)
    return mask.astype(bool)


def _polygon(kind: str, cx: float, cy: float, radius: float, angle: float, corners: int):
    if kind == "cross":
        arm = radius / 3.0
        unit = [
            (-1, -3),
            (1, -3),
            (1, -1),
            (3, -1),
            (3, 1),
            (1, 1),
            (1, 3),
            (-1, 3),
            (-1, 1),
            (-3, 1),
            (-3, -1),
            (-1, -1),
        ]
        points = np.array(unit, np.float64) * arm
    else:
        stretch = 0.6 if kind == "diamond" else 1.0
        angles = np.arange(corners) * 2 * math.pi / corners + math.pi / 4 * (kind == "square")
        points = np.stack([np.cos(angles) * radius * stretch, np.sin(angles) * radius], axis=1)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    points = points @ rotation.T + np.array([cx, cy])
    return np.round(points).astype(np.int32)


def _background(rng: np.random.Generator, cfg: SyntheticConfig) -> np.ndarray:
    height, width = cfg.height, cfg.width
    first, second = rng.uniform(40, 215, size=(2, 3))
    direction = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (np.cos(direction) * xx / width + np.sin(direction) * yy / height + 1) / 2
    image = first * (1 - ramp[..., None]) + second * ramp[..., None]
    noise = cv2.GaussianBlur(rng.normal(0, 1, (height, width, 3)).astype(np.float32), (0, 0), 2)
    image += noise * 18 + rng.normal(0, 6, (height, width, 3))
    for _ in range(cfg.clutter):
        _draw_clutter(rng, image, cfg)
    return image


def _draw_clutter(rng: np.random.Generator, image: np.ndarray, cfg: SyntheticConfig) -> None:
    colour = tuple(float(v) for v in rng.uniform(0, 255, 3))
    y, x = int(rng.integers(0, cfg.height)), int(rng.integers(0, cfg.width))
    kind = rng.integers(0, 3)
    if kind == 0:
        end = (x + int(rng.integers(-30, 31)), y + int(rng.integers(-30, 31)))
        cv2.line(image, (x, y), end, colour, int(rng.integers(1, 3)))
    elif kind == 1:
        cv2.circle(image, (x, y), int(rng.integers(4, 10)), colour, 1)
    else:
        cv2.circle(image, (x, y), int(rng.integers(1, 4)), colour, -1)


def _place(rng, cfg: SyntheticConfig, size: float, anchor) -> tuple[float, float]:
    """A centre for a new shape: touching ``anchor`` (centre, size) or anywhere."""
    margin = size * 0.3
    if anchor is not None:
        (ay, ax), anchor_size = anchor
        distance = (size + anchor_size) / 2 * rng.uniform(0.75, 0.95)
        theta = rng.uniform(0, 2 * math.pi)
        y, x = ay + distance * math.sin(theta), ax + distance * math.cos(theta)
        return float(np.clip(y, margin, cfg.height - margin)), float(
            np.clip(x, margin, cfg.width - margin)
        )
    return rng.uniform(margin, cfg.height - margin), rng.uniform(margin, cfg.width - margin)


def instance_colour(rng: np.random.Generator, label: int, cfg: SyntheticConfig) -> np.ndarray:
    """RGB colour of an instance: its class's hue (evenly spaced) give or take ``hue_jitter``
    degrees, random saturation and brightness; any hue when ``hue_jitter`` < 0."""
    if cfg.hue_jitter < 0:
        return rng.uniform(30, 235, 3)
    hue = (360.0 * label / len(cfg.classes) + rng.normal(0, cfg.hue_jitter)) % 360
    hsv = np.array([[[hue / 2, rng.uniform(110, 255), rng.uniform(110, 245)]]], np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64)


def _paint(image: np.ndarray, mask: np.ndarray, colour: np.ndarray, rng: np.random.Generator):
    texture = rng.normal(0, 10, image.shape).astype(np.float32)
    image[mask] = colour + texture[mask]
    rim = mask & ~cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    image[rim] = colour * 0.45


def _paint_instance(image, mask, label: int, rng: np.random.Generator, cfg: SyntheticConfig):
    """Body in the class colour or, with ``marker_size``, any colour plus the class-colour
    marker: a disc at a random pixel whose marker fits inside the body (the pixel deepest
    inside when none does), clipped to the body."""
    if cfg.marker_size <= 0:
        _paint(image, mask, instance_colour(rng, label, cfg), rng)
        return
    _paint(image, mask, rng.uniform(30, 235, 3), rng)
    depth = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    radius = cfg.marker_size / 2.0
    ys, xs = np.nonzero(depth > radius + 1)  # the marker stays off the dark rim
    if len(ys):
        pick = int(rng.integers(len(ys)))
        y, x = int(ys[pick]), int(xs[pick])
    else:
        y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    yy, xx = np.ogrid[: mask.shape[0], : mask.shape[1]]
    marker = mask & ((yy - y) ** 2 + (xx - x) ** 2 <= radius**2)
    texture = rng.normal(0, 10, image.shape).astype(np.float32)
    image[marker] = instance_colour(rng, label, cfg) + texture[marker]


def generate_scene(rng: np.random.Generator, cfg: SyntheticConfig) -> Scene:
    """One scene: image and visible instance masks (occluded parts removed)."""
    shape = (cfg.height, cfg.width)
    image = _background(rng, cfg)
    count = int(rng.integers(1, min(cfg.max_classes_per_image, len(cfg.classes)) + 1))
    classes = sorted(rng.choice(len(cfg.classes), size=count, replace=False).tolist())
    plan = [
        c
        for c in classes
        for _ in range(int(rng.integers(cfg.min_instances, cfg.max_instances + 1)))
    ]
    rng.shuffle(plan)
    masks: list[np.ndarray] = []
    labels: list[int] = []
    placed: dict[int, list] = {}
    for label in plan:
        size = rng.uniform(cfg.min_size, cfg.max_size)
        anchors = placed.get(label, [])
        touch = anchors and rng.random() < cfg.touch_probability
        anchor = anchors[int(rng.integers(len(anchors)))] if touch else None
        for _ in range(20):
            center = _place(rng, cfg, size, anchor)
            mask = shape_mask(cfg.classes[label], center, size, rng.uniform(0, math.pi), shape)
            if _accept(mask, masks, touching=anchor is not None):
                break
        else:
            continue
        masks = [m & ~mask for m in masks]
        masks.append(mask)
        labels.append(label)
        placed.setdefault(label, []).append((center, size))
        _paint_instance(image, mask, label, rng, cfg)
    return _finish(image, masks, labels, shape)


def _accept(mask: np.ndarray, masks: list[np.ndarray], *, touching: bool) -> bool:
    """A new shape may occlude at most 40 % of each earlier one; free shapes must not touch."""
    area = mask.sum()
    if area < MIN_VISIBLE_PIXELS:
        return False
    for other in masks:
        overlap = (other & mask).sum()
        if not touching and overlap:
            return False
        if other.sum() - overlap < MIN_VISIBLE_FRACTION * other.sum():
            return False
    return True


def _finish(image, masks, labels, shape) -> Scene:
    image = np.clip(image, 0, 255).astype(np.uint8)
    keep = [i for i, m in enumerate(masks) if m.sum() >= MIN_VISIBLE_PIXELS]
    if not keep:
        return Scene(image, Instances.empty(*shape))
    stacked = np.stack([masks[i] for i in keep])
    return Scene(image, Instances(stacked, [labels[i] for i in keep]))


def interior_point(mask: np.ndarray) -> tuple[int, int]:
    """The mask pixel nearest to the mask's centroid (the centroid itself when inside)."""
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean(), xs.mean()
    nearest = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
    return int(ys[nearest]), int(xs[nearest])


def split_seed(seed: int, split: str) -> int:
    """Independent, reproducible seeds for the train and val splits."""
    return seed * 1000 + {"train": 1, "val": 2}.get(split, 3)


def generate_split(cfg: SyntheticConfig, split: str, image_dir: str):
    """Generate a split: PNG images in ``image_dir``, records and COCO ground truth.

    Returns:
        (records, categories, gt): list of ImageRecord, class names, COCO GT dict.
    """
    if split not in ("train", "val"):
        raise ValueError(f"synthetic data set: unknown split {split!r} (train or val)")
    unknown = sorted(set(cfg.classes) - set(SHAPES))
    if unknown:
        raise ValueError(
            f"config key 'dataset.synthetic.classes': unknown shape {unknown[0]!r} "
            f"(known: {', '.join(SHAPES)})"
        )
    if cfg.marker_size > 0 and cfg.hue_jitter < 0:
        raise ValueError(
            "config keys 'dataset.synthetic.marker_size' and 'hue_jitter': a marker needs the "
            "class hue (hue_jitter >= 0); with any hue it would carry no class"
        )
    count = cfg.num_train if split == "train" else cfg.num_val
    if count < 1:
        key = "num_train" if split == "train" else "num_val"
        raise ValueError(f"config key 'dataset.synthetic.{key}': the {split} split is empty")
    rng = np.random.default_rng(split_seed(cfg.seed, split))
    records, images, annotations = [], [], []
    for index in range(count):
        scene = generate_scene(rng, cfg)
        image_id, name = index + 1, f"{split}_{index + 1:05d}"
        path = os.path.abspath(os.path.join(image_dir, f"{name}.png"))
        with atomic_path(path) as temporary:
            # cv2.imwrite reports failure by returning False; the empty temporary file must
            # not be renamed into place.
            if not cv2.imwrite(str(temporary), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR)):
                raise ValueError(f"cannot write image {path}")
        instances = scene.instances
        points = tuple(
            (*interior_point(instances.masks[k]), int(instances.labels[k]))
            for k in range(len(instances))
        )
        classes = tuple(sorted({int(label) for label in instances.labels}))
        records.append(ImageRecord(image_id, name, path, cfg.height, cfg.width, classes, points))
        images.append(
            {"id": image_id, "file_name": f"{name}.png", "height": cfg.height, "width": cfg.width}
        )
        annotations += instances_to_annotations(instances, image_id, first_id=len(annotations) + 1)
    categories = [{"id": index, "name": name} for index, name in enumerate(cfg.classes)]
    gt = {"images": images, "annotations": annotations, "categories": categories}
    return records, list(cfg.classes), gt
