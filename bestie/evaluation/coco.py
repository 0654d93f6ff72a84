"""COCO-style mask AP through pycocotools (SPEC §7 reports VOC AP; this is the extra view).

Inputs are the pipeline's artifacts (``bestie.artifacts``): ground truth in COCO instances
format with 0-based category ids (id 0 included, which pycocotools handles) and compressed
RLE masks with utf-8 string ``counts``; predictions as a COCO results list.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from bestie.artifacts import read_json
from bestie.evaluation.voc import DEFAULT_IOU_THRESHOLDS, VocInstanceEvaluator

# The summary rows of COCOeval.stats that we report, by key; percent like the COCO tables.
_STAT_KEYS = {"AP": 0, "AP50": 1, "AP75": 2, "APs": 3, "APm": 4, "APl": 5}


def load_coco_json(gt_json: str | os.PathLike[str] | dict[str, Any]) -> dict[str, Any]:
    """Ground truth as a dict, loaded from a path or copied from a loaded dict.

    The copy is one level deep for the annotation dicts, because pycocotools writes keys
    (``ignore``) into them and the caller's objects should stay as they were.

    Raises:
        ValueError: if a file is missing, malformed or lacks images/annotations/categories.
    """
    data = read_json(gt_json) if isinstance(gt_json, str | os.PathLike) else gt_json
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= set(data):
        raise ValueError("ground truth must be a COCO dict with images, annotations, categories")
    return {**data, "annotations": [dict(annotation) for annotation in data["annotations"]]}


def load_results_json(
    pred_json: str | os.PathLike[str] | list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Predictions (COCO results list) loaded from a path or copied from a loaded list.

    Raises:
        ValueError: if a file is missing or malformed, or the content is not a list.
    """
    data = read_json(pred_json) if isinstance(pred_json, str | os.PathLike) else pred_json
    if not isinstance(data, list):
        raise ValueError(f"predictions must be a list of COCO results, got {type(data).__name__}")
    return [dict(entry) for entry in data]


def _check_predictions(gt: dict[str, Any], predictions: list[dict[str, Any]]) -> None:
    """Raise ValueError on predictions pycocotools would reject with a bare assert or crash."""
    sizes = {
        int(image["id"]): [int(image["height"]), int(image["width"])] for image in gt["images"]
    }
    category_ids = {int(category["id"]) for category in gt["categories"]}
    for number, entry in enumerate(predictions):
        missing = {"image_id", "category_id", "segmentation", "score"} - set(entry)
        if missing:
            raise ValueError(f"prediction {number}: missing {sorted(missing)}")
        image_id = int(entry["image_id"])
        if image_id not in sizes:
            raise ValueError(f"prediction {number}: image {image_id} is not in the ground truth")
        if int(entry["category_id"]) not in category_ids:
            raise ValueError(f"prediction {number}: unknown category {entry['category_id']}")
        if list(entry["segmentation"].get("size", [])) != sizes[image_id]:
            raise ValueError(
                f"prediction {number}: mask size {entry['segmentation'].get('size')}"
                f" != image {image_id} size {sizes[image_id]}"
            )


def _empty_result(gt: dict[str, Any]) -> dict[str, Any]:
    """Figures for no predictions: 0 where ground truth exists, NaN where none does."""
    with_gt = {int(annotation["category_id"]) for annotation in gt["annotations"]}
    per_class = {
        str(category["name"]): 0.0 if int(category["id"]) in with_gt else float("nan")
        for category in sorted(gt["categories"], key=lambda category: int(category["id"]))
    }
    overall = 0.0 if with_gt else float("nan")
    result: dict[str, Any] = {key: overall for key in _STAT_KEYS}
    result["per_class"] = per_class
    return result


def evaluate(
    gt_json: str | os.PathLike[str] | dict[str, Any],
    pred_json: str | os.PathLike[str] | list[dict[str, Any]],
    *,
    verbose: bool = False,
) -> dict[str, Any]:
    """COCO mask AP (``COCOeval(iouType="segm")``, default parameters, maxDets 100).

    Args:
        gt_json: ground truth (``dataset/{split}_gt.json``), a path or the loaded dict.
        pred_json: predictions (``pred_{split}.json``), a path or the loaded list; may be
            empty (pycocotools cannot load an empty list; the figures are then zeros).
        verbose: let pycocotools print its progress and summary table.

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl": float, "per_class": {name: float}}``
        in percent. pycocotools' "-1" (nothing to evaluate, e.g. a class without ground
        truth or an area range without objects) is reported as NaN.

    Raises:
        ValueError: on malformed inputs or predictions for unknown images/categories.
    """
    gt = load_coco_json(gt_json)
    predictions = load_results_json(pred_json)
    _check_predictions(gt, predictions)
    if not predictions:
        return _empty_result(gt)
    for entry in predictions:
        # With a "bbox" key, loadRes would take the box area as the instance area and so
        # redefine small/medium/large; mask AP should use the mask area (as detectron2 does).
        entry.pop("bbox", None)
    output = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with output:
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(predictions), iouType="segm")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    result: dict[str, Any] = {
        key: _percent(coco_eval.stats[index]) for key, index in _STAT_KEYS.items()
    }
    result["per_class"] = _per_class_ap(coco_eval, gt)
    return result


def _percent(value: float) -> float:
    return float("nan") if value < 0 else float(value) * 100.0


def _per_class_ap(coco_eval: COCOeval, gt: dict[str, Any]) -> dict[str, float]:
    """AP (percent) per category name, IoU 0.50:0.95, all areas, the largest maxDets."""
    names = {int(category["id"]): str(category["name"]) for category in gt["categories"]}
    # precision: [T IoUs, R recall points, K categories, A areas, M maxDets]; -1 = undefined.
    precision = coco_eval.eval["precision"]
    per_class = {}
    for column, category_id in enumerate(coco_eval.params.catIds):
        values = precision[:, :, column, 0, -1]
        values = values[values > -1]
        per_class[names[int(category_id)]] = (
            float(np.mean(values)) * 100.0 if values.size else float("nan")
        )
    return per_class


def evaluate_voc(
    gt_json: str | os.PathLike[str] | dict[str, Any],
    pred_json: str | os.PathLike[str] | list[dict[str, Any]],
    iou_thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS,
    num_classes: int | None = None,
) -> dict[float, dict[str, Any]]:
    """VOC instance AP (``bestie.evaluation.voc``, SPEC §7) of COCO-format files.

    IoUs are computed on the RLEs themselves, one image at a time, so no mask is decoded
    and memory stays small. Images without predictions count; the ``void`` RLE of an
    image is not used (void pixels are not ignored).

    Args:
        gt_json: ground truth (``dataset/{split}_gt.json``), a path or the loaded dict.
        pred_json: predictions (COCO results list), a path or the loaded list.
        iou_thresholds: the thresholds.
        num_classes: length of ``ap``; by default the largest GT category id plus one.

    Returns:
        ``{threshold: {"ap": float64 [C], "map": float}}``, fractions in [0, 1].

    Raises:
        ValueError: on malformed inputs or predictions for unknown images/categories.
    """
    gt = load_coco_json(gt_json)
    predictions = load_results_json(pred_json)
    _check_predictions(gt, predictions)
    if num_classes is None:
        num_classes = _num_classes(gt)
    return _voc_of_images(
        gt["images"],
        _by_image(gt["annotations"]),
        _by_image(predictions),
        iou_thresholds,
        num_classes,
    )


def _num_classes(gt: dict[str, Any]) -> int:
    """The largest GT category id plus one: the length of the per-class AP array."""
    return max((int(category["id"]) for category in gt["categories"]), default=-1) + 1


def _by_image(entries: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """GT annotations or predictions grouped by their ``image_id``."""
    grouped: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for entry in entries:
        grouped[int(entry["image_id"])].append(entry)
    return grouped


def _voc_of_images(
    images: list[dict[str, Any]],
    gt_by_image: dict[int, list[dict[str, Any]]],
    pred_by_image: dict[int, list[dict[str, Any]]],
    iou_thresholds: Sequence[float],
    num_classes: int,
) -> dict[float, dict[str, Any]]:
    """VOC AP over ``images`` of checked, grouped GT and predictions (see ``evaluate_voc``)."""
    evaluator = VocInstanceEvaluator(iou_thresholds, num_classes)
    for image in images:
        size = [int(image["height"]), int(image["width"])]
        gts, preds = gt_by_image[int(image["id"])], pred_by_image[int(image["id"])]
        evaluator.add_rle(
            [_compressed_rle(entry["segmentation"], size) for entry in preds],
            np.array([int(entry["category_id"]) for entry in preds], np.int64),
            # Scores as float32, the dtype the model wrote them from (ties rank alike).
            np.array([float(entry["score"]) for entry in preds], np.float32),
            [_compressed_rle(entry["segmentation"], size) for entry in gts],
            np.array([int(entry["category_id"]) for entry in gts], np.int64),
        )
    return evaluator.evaluate()


def evaluate_voc_blocks(
    gt_json: str | os.PathLike[str] | dict[str, Any],
    pred_json: str | os.PathLike[str] | list[dict[str, Any]],
    block: int,
    iou_threshold: float = 0.5,
) -> list[float]:
    """VOC mAP (a fraction) on each run of ``block`` consecutive images of the ground truth.

    The images are taken in file order; a last run shorter than ``block`` is left out. The
    spread over the runs is how far one draw of a val split of ``block`` images moves the
    figure (``scripts/val_blocks.py``).

    Raises:
        ValueError: when ``block`` is not positive or exceeds the number of images.
    """
    gt = load_coco_json(gt_json)
    predictions = load_results_json(pred_json)
    _check_predictions(gt, predictions)
    images = gt["images"]
    if not 0 < block <= len(images):
        raise ValueError(f"block of {block} images: the ground truth has {len(images)}")
    gt_by_image, pred_by_image = _by_image(gt["annotations"]), _by_image(predictions)
    num_classes = _num_classes(gt)
    return [
        _voc_of_images(
            images[start : start + block],
            gt_by_image,
            pred_by_image,
            [iou_threshold],
            num_classes,
        )[iou_threshold]["map"]
        for start in range(0, len(images) - block + 1, block)
    ]


def _compressed_rle(segmentation: dict[str, Any], size: list[int]) -> dict[str, Any]:
    """A compressed RLE of the image's size (uncompressed list counts are converted)."""
    if not isinstance(segmentation, dict) or "counts" not in segmentation:
        raise ValueError("segmentations must be RLE dicts (polygons are not supported)")
    if [int(side) for side in segmentation.get("size", ())] != size:
        raise ValueError(f"mask size {segmentation.get('size')} != image size {size}")
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, *size)
    return segmentation
