"""Image panels of the report: CAM vs PAM class maps (paper Fig. 3) and predictions vs GT.

The class maps are computed here, from the two trained classifiers, with the cue
extractor's own map function (:func:`bestie.cues.classifier_cues`, full resolution), rather
than read from ``cues/train.h5``: that file stores the maps of one classifier only (the one
``cues.classifier`` names). Torch is imported only when maps are drawn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from bestie.config import CuesConfig
from bestie.report.draw import draw_points, overlay_instances
from bestie.structures import Instances

# Predictions below this score are not drawn (decoding keeps low-score instances for AP).
DISPLAY_SCORE = 0.3


@dataclass(frozen=True)
class PanelImage:
    """An image to draw: its name, uint8 RGB [H, W, 3] pixels and image-level class ids."""

    name: str
    pixels: np.ndarray
    classes: tuple[int, ...]


def heat_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a [H, W] map in [0, 1] (jet colours) over an RGB image; returns uint8 RGB."""
    from matplotlib import colormaps

    colours = colormaps["jet"](np.clip(heat, 0.0, 1.0))[..., :3] * 255.0
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours
    return blended.clip(0, 255).astype(np.uint8)


def classifier_maps(model, image: PanelImage, cfg: CuesConfig):
    """Full-resolution class maps and peaks of one image, as cue extraction computes them.

    Args:
        model: a classifier (``bestie.models.classifier.load_classifier``, with
            ``cues.pam_alpha``), on CPU, eval mode.
        image: the image and its label classes.
        cfg: the ``cues`` section (input size, flip, smoothing, peak window, threshold).

    Returns:
        :class:`bestie.artifacts.ImageCues` with maps float16 [K, H, W] (stride 1).
    """
    import torch

    from bestie.cues import classifier_cues
    from bestie.data.classification import EvalTransform

    tensor = EvalTransform(cfg.input_size)(image.pixels)[None]
    with torch.no_grad():
        return classifier_cues(
            model,
            tensor,
            [image.classes],
            [image.pixels.shape[:2]],
            flip=cfg.flip,
            smooth_kernel=cfg.smooth_kernel,
            peak_kernel=cfg.peak_kernel,
            top_k=cfg.top_k,
            threshold=cfg.threshold,
            map_stride=1,
        )[0]


def cam_pam_rows(
    images: Sequence[PanelImage],
    models: Mapping[str, object],
    cfg: CuesConfig,
    categories: Sequence[str],
) -> tuple[list[list[np.ndarray]], list[list[str]]]:
    """Per image: the image, then per classifier its label-class maps (max) and peaks.

    Returns:
        (panels, titles), one list per image; peaks (score >= ``cues.threshold``) in white.
    """
    panels, titles = [], []
    for image in images:
        labels = ", ".join(categories[c] for c in image.classes) or "no label"
        row, row_titles = [image.pixels], [f"{image.name} ({labels})"]
        for variant, model in models.items():
            cues = classifier_maps(model, image, cfg)
            height, width = image.pixels.shape[:2]
            maps = cues.maps.astype(np.float32) if cues.maps is not None else np.zeros((0,))
            heat = maps.max(axis=0) if maps.shape[0] else np.zeros((height, width), np.float32)
            drawn = draw_points(heat_overlay(image.pixels, heat), cues.peaks, (255, 255, 255))
            row.append(drawn)
            row_titles.append(f"{variant.upper()}: {cues.peaks.shape[0]} peaks")
        panels.append(row)
        titles.append(row_titles)
    return panels, titles


def prediction_row(
    image: PanelImage,
    ground_truth: Instances,
    predictions: Mapping[str, Instances],
    *,
    min_score: float = DISPLAY_SCORE,
) -> tuple[list[np.ndarray], list[str]]:
    """The image, its GT instances and each model's predictions scoring >= ``min_score``.

    Masks are drawn over a grey copy of the image so that their colours stand out.
    """
    grey = np.repeat(image.pixels.mean(axis=2, keepdims=True), 3, axis=2).astype(np.uint8)
    row = [image.pixels, overlay_instances(grey, ground_truth)]
    titles = [image.name, f"GT: {len(ground_truth)} instances"]
    for model, instances in predictions.items():
        shown = instances
        if instances.scores is not None:
            shown = instances.select(np.flatnonzero(instances.scores >= min_score))
        row.append(overlay_instances(grey, shown))
        titles.append(f"{model}: {len(shown)} (score >= {min_score:g})")
    return row, titles
