"""Evaluation (SPEC §7): VOC instance AP, COCO mask AP and semantic mIoU.

- :mod:`bestie.evaluation.voc`: chainercv-equivalent VOC instance AP (the paper's mAP).
- :mod:`bestie.evaluation.coco`: pycocotools ``segm`` AP of COCO-format files.
- :mod:`bestie.evaluation.semantic`: confusion-matrix mIoU of semantic label maps.
"""

from bestie.evaluation.coco import evaluate as evaluate_coco
from bestie.evaluation.coco import evaluate_voc
from bestie.evaluation.iou import mask_iou, rle_iou
from bestie.evaluation.semantic import confusion, miou
from bestie.evaluation.voc import (
    DEFAULT_IOU_THRESHOLDS,
    VocInstanceEvaluator,
    instance_ap,
    instance_ap_multi,
    summarize,
)

__all__ = [
    "DEFAULT_IOU_THRESHOLDS",
    "VocInstanceEvaluator",
    "confusion",
    "evaluate_coco",
    "evaluate_voc",
    "instance_ap",
    "instance_ap_multi",
    "mask_iou",
    "miou",
    "rle_iou",
    "summarize",
]
