"""Model selection without the evaluation split: a held-out part of train (opt-in).

The default pipeline selects nothing: the instance network's final weights are the model,
and every threshold is a config value (SPEC §12: the official code picks checkpoints on val).
With ``instance.holdout: f`` (0 < f < 1) a fixed fraction of the train images that have
instance ground truth is left out of instance-network training; every snapshot
(``instance.snapshot_every``) and the final weights predict those images and are scored
with VOC mAP50 against the train ground truth; the best becomes ``instance/model.pt``. The
val split is never read. The held-out images are chosen by a hash of their id, so every
seed and every rerun holds out the same images.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from bestie.artifacts import instances_to_results
from bestie.evaluation.coco import evaluate_voc
from bestie.inference import predict_image
from bestie.sections import DecodeConfig
from bestie.structures import ImageRecord

SELECTION_METRIC = "mAP50"


def holdout_ids(
    records: Sequence[ImageRecord], gt_image_ids: Iterable[int], fraction: float
) -> set[int]:
    """The ids of the train images held out for selection.

    Args:
        records: the train records.
        gt_image_ids: ids of the images that have instance ground truth (``images`` of
            ``dataset/train_gt.json``); only those can be scored.
        fraction: ``instance.holdout``: round(fraction x candidates) images, at least one.

    Returns:
        the held-out image ids (empty when ``fraction`` is 0).

    Raises:
        ValueError: ``fraction`` outside [0, 1), no train image has ground truth, or no
            image would be left to train on.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"config key 'instance.holdout' must lie in [0, 1), got {fraction}")
    if fraction == 0.0:
        return set()
    with_gt = set(gt_image_ids)
    candidates = [record.id for record in records if record.id in with_gt]
    if not candidates:
        raise ValueError(
            "config key 'instance.holdout' needs instance ground truth on some train images; "
            "dataset/train_gt.json has none"
        )
    count = max(1, round(fraction * len(candidates)))
    if count >= len(records):
        raise ValueError(
            f"config key 'instance.holdout': holding out {count} of {len(records)} train "
            "images leaves none to train on"
        )
    ranked = sorted(candidates, key=lambda image_id: hashlib.sha1(str(image_id).encode()).digest())
    return set(ranked[:count])


def score_model(
    model: nn.Module,
    records: Sequence[ImageRecord],
    images: dict[int, np.ndarray],
    gt: dict[str, Any],
    decode_cfg: DecodeConfig,
    thresholds: Sequence[float],
    num_classes: int,
    device: torch.device,
) -> dict[str, Any]:
    """VOC mAP (percent; None where no class has GT) of a model's predictions on ``records``.

    Returns:
        ``{"predictions": n, "mAP{t}": value per threshold t}``.
    """
    predictions = []
    for record in records:
        instances = predict_image(model, images[record.id], device, decode_cfg)
        predictions += instances_to_results(instances, record.id)
    scores = evaluate_voc(gt, predictions, thresholds, num_classes)
    entry: dict[str, Any] = {"predictions": len(predictions)}
    for threshold, result in scores.items():
        value = result["map"]
        entry[f"mAP{round(threshold * 100)}"] = None if math.isnan(value) else 100 * value
    return entry


def select_best(scores: Sequence[dict[str, Any]], metric: str = SELECTION_METRIC) -> int:
    """Index of the entry with the highest ``metric``; ties go to the later entry (more
    training). Entries whose metric is None rank lowest.

    Raises:
        ValueError: ``scores`` is empty.
    """
    if not scores:
        raise ValueError("no model to select from")

    def rank(index: int) -> tuple[float, int]:
        value = scores[index].get(metric)
        return (-math.inf if value is None else float(value), index)

    return max(range(len(scores)), key=rank)


def subset_gt(gt: dict[str, Any], image_ids: set[int]) -> dict[str, Any]:
    """The COCO ground truth restricted to ``image_ids``."""
    return {
        **gt,
        "images": [image for image in gt["images"] if image["id"] in image_ids],
        "annotations": [a for a in gt["annotations"] if a["image_id"] in image_ids],
    }
