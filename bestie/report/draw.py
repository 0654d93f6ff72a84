"""Drawing helpers: label maps, instance masks and points over an image (numpy, RGB uint8).

Pure functions returning new RGB arrays; ``save_panels`` lays several of them out in one PNG
with matplotlib (Agg backend, no display needed). Heatmaps, offset fields and class-coloured
points serve ``python -m bestie show``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from bestie.data.io import voc_palette
from bestie.structures import IGNORE_LABEL, Instances


def _colours(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(60, 256, size=(max(count, 1), 3)).astype(np.float32)


def overlay_label_map(image: np.ndarray, semantic: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a label map (VOC palette; background transparent) over an RGB image."""
    palette = np.asarray(voc_palette(), np.float32).reshape(256, 3)
    blended = image.astype(np.float32)
    shown = (semantic > 0) & (semantic != IGNORE_LABEL)
    blended[shown] = (1 - alpha) * blended[shown] + alpha * palette[semantic[shown]]
    blended[semantic == IGNORE_LABEL] = palette[IGNORE_LABEL]
    return blended.clip(0, 255).astype(np.uint8)


def overlay_instances(image: np.ndarray, instances: Instances, alpha: float = 0.55) -> np.ndarray:
    """Each instance in its own colour, with a white dot at its centre when known."""
    blended = image.astype(np.float32)
    colours = _colours(len(instances))
    for index, mask in enumerate(instances.masks):
        blended[mask] = (1 - alpha) * blended[mask] + alpha * colours[index]
    result = blended.clip(0, 255).astype(np.uint8)
    if instances.centers is not None:
        result = draw_points(result, instances.centers, colour=(255, 255, 255))
    return result


def draw_points(
    image: np.ndarray, points: np.ndarray, colour: tuple[int, int, int] = (255, 0, 0), size=1
) -> np.ndarray:
    """Square dots of half-width ``size`` at (y, x) points (rows [y, x, ...]); a copy."""
    result = image.copy()
    height, width = image.shape[:2]
    rows = np.asarray(points)
    rows = rows.reshape(len(rows), -1) if rows.size else np.zeros((0, 2))
    for y, x in rows[:, :2].astype(int):
        top, left = max(y - size, 0), max(x - size, 0)
        result[top : min(y + size + 1, height), left : min(x + size + 1, width)] = colour
    return result


def save_panels(
    path: str | os.PathLike[str],
    panels: Sequence[np.ndarray],
    titles: Sequence[str],
    *,
    columns: int | None = None,
) -> None:
    """Save RGB panels with titles as one PNG (written atomically).

    Panels go side by side, wrapped after ``columns`` panels when given.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bestie.artifacts import atomic_path

    if len(panels) != len(titles):
        raise ValueError(f"save_panels: {len(panels)} panels but {len(titles)} titles")
    across = min(columns or len(panels), len(panels))
    down = -(-len(panels) // across)
    figure, axes = plt.subplots(down, across, figsize=(3.2 * across, 3.4 * down), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, panel, title in zip(axes.ravel(), panels, titles, strict=False):
        axis.imshow(panel, interpolation="nearest")
        axis.set_title(title, fontsize=9)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    plt.close(figure)


def class_colour(class_id: int) -> tuple[int, int, int]:
    """The VOC palette colour of a 0-based class (that of its label-map index c + 1)."""
    palette = voc_palette()
    index = (int(class_id) + 1) % 255
    return palette[3 * index], palette[3 * index + 1], palette[3 * index + 2]


def draw_class_points(image: np.ndarray, points: np.ndarray, size: int = 1) -> np.ndarray:
    """Dots at (y, x, class, ...) rows in their class colour, outlined in black; a copy."""
    rows = np.asarray(points, np.float64)
    rows = rows.reshape(len(rows), -1) if rows.size else np.zeros((0, 3))
    result = draw_points(image, rows, colour=(0, 0, 0), size=size + 1)
    for row in rows:
        result = draw_points(result, row[None, :2], colour=class_colour(int(row[2])), size=size)
    return result


def colour_map(values: np.ndarray, vmax: float | None = None, name: str = "jet") -> np.ndarray:
    """A float [H, W] map as RGB uint8 through a matplotlib colour map, 0..vmax (default max)."""
    import matplotlib

    values = np.nan_to_num(np.asarray(values, np.float64))
    top = float(values.max(initial=0.0)) if vmax is None else float(vmax)
    scaled = np.clip(values / top, 0.0, 1.0) if top > 0 else np.zeros_like(values)
    rgba = matplotlib.colormaps[name](scaled)
    return (rgba[..., :3] * 255).round().astype(np.uint8)


def overlay_heatmap(
    image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5, vmax: float | None = 1.0
) -> np.ndarray:
    """Blend a [H, W] heatmap (jet, 0..vmax) over an RGB image."""
    coloured = colour_map(heatmap, vmax).astype(np.float32)
    blended = (1 - alpha) * image.astype(np.float32) + alpha * coloured
    return blended.clip(0, 255).astype(np.uint8)


def offset_direction(offset: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """(dy, dx) [2, H, W] as RGB: hue = direction, brightness = magnitude (black where 0).

    The hue wheel: pointing right (dx > 0) is red, down is yellow-green, left cyan, up blue.
    """
    import matplotlib.colors

    dy, dx = offset[0].astype(np.float64), offset[1].astype(np.float64)
    magnitude = np.hypot(dy, dx)
    hue = (np.arctan2(dy, dx) / (2 * np.pi)) % 1.0
    top = magnitude.max() if magnitude.size else 0.0
    value = magnitude / top if top > 0 else magnitude
    if weight is not None:
        value = value * (weight > 0)
    hsv = np.stack([hue, np.ones_like(hue), np.sqrt(value)], axis=-1)
    return (matplotlib.colors.hsv_to_rgb(hsv) * 255).round().astype(np.uint8)


def label_map_colours(semantic: np.ndarray) -> np.ndarray:
    """A label map alone in the VOC palette colours, RGB uint8 [H, W, 3]."""
    palette = np.asarray(voc_palette(), np.uint8).reshape(256, 3)
    return palette[semantic]
