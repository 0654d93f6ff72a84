"""Drawing helpers: label maps, instance masks and points over an image (numpy, RGB uint8).

Pure functions returning new RGB arrays; ``save_panels`` lays several of them out in one PNG
with matplotlib (Agg backend, no display needed).
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
    path: str | os.PathLike[str], panels: Sequence[np.ndarray], titles: Sequence[str]
) -> None:
    """Save RGB panels side by side with titles as one PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bestie.artifacts import atomic_path

    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for axis, panel, title in zip(axes[0], panels, titles, strict=True):
        axis.imshow(panel, interpolation="nearest")
        axis.set_title(title, fontsize=9)
        axis.axis("off")
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    plt.close(figure)
