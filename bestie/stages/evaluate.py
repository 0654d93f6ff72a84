"""``python -m bestie evaluate``: score a predictions file against the split's ground truth.

Writes ``eval/{model}_{split}.json``: VOC instance mAP at every configured IoU threshold
(chainercv semantics, SPEC §7) and COCO mask AP/AP50/AP75 (pycocotools), overall and per
class, all in percent; classes without ground truth are null.
"""

from __future__ import annotations

import argparse
import logging
import math

from bestie.artifacts import read_json, write_json
from bestie.config import load_sections
from bestie.evaluation import coco
from bestie.evaluation.voc import summarize

LOG = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="JSON of the 'evaluation' section")
    parser.add_argument("--pred", required=True, help="COCO results JSON (predictions)")
    parser.add_argument("--gt", required=True, help="COCO ground truth of the split")
    parser.add_argument("--out", required=True, help="output metrics JSON")


def _percent(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(100.0 * value, 4)


def evaluate_files(gt_path: str, pred_path: str, iou_thresholds: list[float]) -> dict:
    """All figures of one predictions file, in percent (None where undefined)."""
    gt = read_json(gt_path)
    predictions = read_json(pred_path)
    names = [c["name"] for c in sorted(gt["categories"], key=lambda c: int(c["id"]))]
    voc = summarize(coco.evaluate_voc(gt, predictions, iou_thresholds, len(names)), names)
    figures = {key: _percent(value) for key, value in voc.items() if key != "per_class"}
    per_class = {
        key: {name: _percent(value) for name, value in values.items()}
        for key, values in voc["per_class"].items()
    }
    coco_figures = coco.evaluate(gt, predictions)
    for key in ("AP", "AP50", "AP75"):
        value = coco_figures[key]
        figures[f"COCO_{key}"] = None if math.isnan(value) else round(value, 4)
    per_class["COCO_AP"] = {
        name: None if math.isnan(value) else round(value, 4)
        for name, value in coco_figures["per_class"].items()
    }
    return {
        **figures,
        "images": len(gt["images"]),
        "gt_instances": len(gt["annotations"]),
        "predictions": len(predictions),
        "per_class": per_class,
    }


def run(args: argparse.Namespace) -> None:
    cfg = load_sections(args.config)
    result = evaluate_files(args.gt, args.pred, list(cfg.evaluation.iou_thresholds))
    write_json(args.out, result, indent=1)
    headline = {k: v for k, v in result.items() if k.startswith(("mAP", "COCO"))}
    LOG.info("%s: %s", args.pred, headline)
