"""Timing of the evaluation library on synthetic VOC-sized data (prints one JSON object).

Each image is 375x500 with 5 ground-truth instances (ellipses of 2-3 classes among 20) and
20 predictions: jittered copies of the ground truth, mislabelled copies and random blobs,
as a trained model produces. Times are milliseconds per image over ``--repeats`` runs
(``min_ms``: the best run's wall time; ``median_cpu_ms``: the process CPU time), on one
process. Prints one JSON object (``common.py`` shape). Target: VOC AP (one threshold, masks
in memory, as chainercv's ``eval_instance_segmentation_voc``, 3.3 ms/image in SPEC §11)
< 2 ms/image. ``coco_evaluate_from_files`` is the COCO AP/AP50/AP75 figure (pycocotools).

Usage: python benchmarks/bench_evaluation.py [--images 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from common import check, emit, result, summary, timed

from bestie.artifacts import instances_to_annotations, instances_to_results, write_json
from bestie.evaluation import coco, voc
from bestie.structures import Instances

HEIGHT, WIDTH = 375, 500
NUM_GT, NUM_PRED, NUM_CLASSES = 5, 20, 20


def _ellipse(rng: np.random.Generator) -> np.ndarray:
    rows, cols = np.ogrid[:HEIGHT, :WIDTH]
    center_y, center_x = rng.integers(0, HEIGHT), rng.integers(0, WIDTH)
    radius_y, radius_x = rng.integers(15, 120, size=2)
    return ((rows - center_y) / radius_y) ** 2 + ((cols - center_x) / radius_x) ** 2 < 1


def _make_image(rng: np.random.Generator) -> tuple[Instances, Instances]:
    """One image's ground truth and predictions."""
    classes = rng.choice(NUM_CLASSES, size=rng.integers(2, 4), replace=False)
    gt_masks = np.stack([_ellipse(rng) for _ in range(NUM_GT)])
    gt_labels = rng.choice(classes, size=NUM_GT)
    pred_masks, pred_labels = [], []
    for _ in range(NUM_PRED):
        kind = rng.random()
        source = rng.integers(NUM_GT)
        if kind < 0.6:  # a jittered copy of a ground truth
            shift = rng.integers(-15, 16, size=2)
            pred_masks.append(np.roll(gt_masks[source], tuple(shift), axis=(0, 1)))
            pred_labels.append(gt_labels[source])
        elif kind < 0.8:  # the right shape with a wrong class of the image
            pred_masks.append(gt_masks[source])
            pred_labels.append(rng.choice(classes))
        else:  # background clutter
            pred_masks.append(_ellipse(rng))
            pred_labels.append(rng.integers(NUM_CLASSES))
    scores = rng.random(NUM_PRED).astype(np.float32)
    return Instances(gt_masks, gt_labels), Instances(np.stack(pred_masks), pred_labels, scores)


def _best_ms(function: Callable[[], object], repeats: int, images: int) -> dict[str, float]:
    return summary(timed(function, repeats, warmup=0), per=images)


def _write_files(pairs: list, gt_path: Path, pred_path: Path) -> None:
    """The pairs as a COCO ground-truth file and a COCO results file."""
    annotations, results = [], []
    for image_id, (gt, pred) in enumerate(pairs):
        annotations += instances_to_annotations(gt, image_id, first_id=len(annotations) + 1)
        results += instances_to_results(pred, image_id)
    images = [
        {"id": i, "file_name": f"{i}.jpg", "height": HEIGHT, "width": WIDTH}
        for i in range(len(pairs))
    ]
    categories = [{"id": c, "name": f"class{c}"} for c in range(NUM_CLASSES)]
    write_json(gt_path, {"images": images, "annotations": annotations, "categories": categories})
    write_json(pred_path, results)


def _time_all(pairs: list, columns: tuple, repeats: int) -> dict[str, dict[str, float]]:
    """ms per image of each evaluation entry point."""
    images = len(pairs)
    with tempfile.TemporaryDirectory() as directory:
        gt_path, pred_path = Path(directory, "gt.json"), Path(directory, "pred.json")
        _write_files(pairs, gt_path, pred_path)
        functions = {
            "instance_ap_iou50": lambda: voc.instance_ap(*columns),
            "instance_ap_multi_4_thresholds": lambda: voc.instance_ap_multi(*columns),
            "coco_evaluate_from_files": lambda: coco.evaluate(gt_path, pred_path),
            "evaluate_voc_from_files_4_thresholds": lambda: coco.evaluate_voc(gt_path, pred_path),
        }
        return {name: _best_ms(f, repeats, images) for name, f in functions.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    pairs = [_make_image(rng) for _ in range(args.images)]
    gts, preds = [gt for gt, _ in pairs], [pred for _, pred in pairs]
    columns = (
        [p.masks for p in preds],
        [p.labels for p in preds],
        [p.scores for p in preds],
        [g.masks for g in gts],
        [g.labels for g in gts],
    )
    figures = _time_all(pairs, columns, args.repeats)
    inputs = {
        "height": HEIGHT,
        "width": WIDTH,
        "gt_per_image": NUM_GT,
        "predictions_per_image": NUM_PRED,
        "images": args.images,
        "classes": NUM_CLASSES,
        "repeats": args.repeats,
        "iou_thresholds_multi": list(voc.DEFAULT_IOU_THRESHOLDS),
    }
    voc_ap = figures["instance_ap_iou50"]["median_cpu_ms"]
    targets = [check("instance_ap_iou50.median_cpu_ms", voc_ap, 2.0)]
    notes = (
        "ms per image; instance_ap* take decoded bool masks in memory; *_from_files include "
        "reading the GT and prediction JSON; evaluate_voc computes IoU on the RLEs"
    )
    reference = {"chainercv_eval_instance_segmentation_voc_ms": 3.3}
    emit(result("evaluation", inputs, figures, targets=targets, reference=reference, notes=notes))


if __name__ == "__main__":
    main()
