"""PASCAL VOC instance-segmentation AP with chainercv's semantics (SPEC §7).

Per image and class, predictions are sorted by descending score; each takes its argmax-IoU
ground truth of the class and is a true positive only if that IoU is >= the threshold and
no earlier (higher-scored) prediction took the same ground truth. Precision and recall run
over each class's global score ranking, with every ground-truth instance counted (there is
no difficult flag, and void pixels are not ignored). AP is the VOC2010+ all-point
interpolated area; a class without ground truth gives NaN and is left out of the mean.

Reference: https://github.com/chainer/chainercv/blob/9b1b71e9a40eef040a12384f97860f2564db3ea8/chainercv/evaluations/eval_instance_segmentation_voc.py

The IoU matrix of an image and class is computed once (``bestie.evaluation.iou``) and reused
for every threshold; only scores and match flags are kept between images.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from bestie.evaluation.iou import pack_masks, packed_iou, rle_iou
from bestie.structures import Instances

DEFAULT_IOU_THRESHOLDS = (0.25, 0.5, 0.7, 0.75)

# pairwise_iou(pred_index [P], gt_index [G]) -> float32 [P, G], indices into one image.
PairwiseIou = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _greedy_matches(iou: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """True positives of score-sorted predictions against one class's ground truth.

    Args:
        iou: float32 [P, G], rows in descending score order, G >= 1.
        thresholds: T IoU thresholds.

    Returns:
        int8 [T, P]: 1 for a true positive, 0 for a false positive.
    """
    best = iou.argmax(axis=1)
    best_iou = iou[np.arange(iou.shape[0]), best]
    matches = np.zeros((len(thresholds), iou.shape[0]), np.int8)
    for row, threshold in enumerate(thresholds):
        # "not below" rather than ">=": chainercv keeps NaN IoUs (empty vs empty) as matches.
        candidates = np.flatnonzero(~(best_iou < np.float32(threshold)))
        # The first (highest-scored) prediction to take a ground truth wins it; later ones are
        # false positives even when another ground truth would have matched them.
        _, first = np.unique(best[candidates], return_index=True)
        matches[row, candidates[first]] = 1
    return matches


def _average_precision(scores: np.ndarray, matches: np.ndarray, num_positives: int) -> np.ndarray:
    """VOC2010+ all-point interpolated AP of one class at T thresholds.

    Args:
        scores: float [P], every prediction of the class over the data set.
        matches: int8 [T, P], 1 where the prediction is a true positive.
        num_positives: ground-truth instances of the class (> 0).

    Returns:
        float64 [T].
    """
    order = scores.argsort()[::-1]  # chainercv's call, so score ties break the same way
    result = np.empty(matches.shape[0])
    for row, match in enumerate(matches[:, order]):
        true_positives = np.cumsum(match == 1)
        false_positives = np.cumsum(match == 0)
        precision = true_positives / (true_positives + false_positives)
        recall = true_positives / num_positives
        padded_precision = np.concatenate(([0.0], np.nan_to_num(precision), [0.0]))
        padded_recall = np.concatenate(([0.0], recall, [1.0]))
        envelope = np.maximum.accumulate(padded_precision[::-1])[::-1]
        steps = np.flatnonzero(padded_recall[1:] != padded_recall[:-1])
        result[row] = np.sum(
            (padded_recall[steps + 1] - padded_recall[steps]) * envelope[steps + 1]
        )
    return result


def _check_labels(labels: Any, what: str, index: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"image {index}: {what} labels must be 1-D, got shape {labels.shape}")
    if labels.size and not np.array_equal(labels, np.round(labels)):
        raise ValueError(f"image {index}: {what} labels must be integers")
    labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise ValueError(f"image {index}: {what} labels must be >= 0, got {labels.min()}")
    return labels


def _check_masks(masks: Any, count: int, what: str, index: int) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.size == 0 and count == 0 and masks.ndim != 3:
        return np.zeros((0, 0, 0), bool)  # an empty stand-in of unknown size
    if masks.ndim != 3:
        raise ValueError(f"image {index}: {what} masks must be [N, H, W], got {masks.shape}")
    if masks.shape[0] != count:
        raise ValueError(f"image {index}: {masks.shape[0]} {what} masks but {count} labels")
    return masks if masks.dtype == bool else masks != 0


def _check_rles(
    rles: Sequence[dict[str, Any]], count: int, what: str, index: int
) -> set[tuple[int, ...]]:
    """The set of RLE sizes, as (H, W) tuples."""
    if len(rles) != count:
        raise ValueError(f"image {index}: {len(rles)} {what} RLEs but {count} labels")
    return {tuple(int(side) for side in rle["size"]) for rle in rles}


def _packed_pairwise_iou(
    pred_masks: np.ndarray, pred_labels: np.ndarray, gt_masks: np.ndarray, gt_labels: np.ndarray
) -> PairwiseIou:
    """IoU lookup for one image; only masks of classes on both sides are ever packed."""
    shared = np.intersect1d(pred_labels, gt_labels)
    pred_rows = np.flatnonzero(np.isin(pred_labels, shared))
    gt_rows = np.flatnonzero(np.isin(gt_labels, shared))
    pred_words, pred_areas = pack_masks(pred_masks, pred_rows)
    gt_words, gt_areas = pack_masks(gt_masks, gt_rows)
    pred_position = np.zeros(pred_labels.size, np.int64)
    pred_position[pred_rows] = np.arange(pred_rows.size)
    gt_position = np.zeros(gt_labels.size, np.int64)
    gt_position[gt_rows] = np.arange(gt_rows.size)

    def pairwise_iou(pred_index: np.ndarray, gt_index: np.ndarray) -> np.ndarray:
        pred_at, gt_at = pred_position[pred_index], gt_position[gt_index]
        return packed_iou(
            pred_words[pred_at], pred_areas[pred_at], gt_words[gt_at], gt_areas[gt_at]
        )

    return pairwise_iou


class VocInstanceEvaluator:
    """Streaming VOC instance AP (detectron2 DatasetEvaluator style: reset/process/evaluate).

    Only per-prediction scores and match flags are kept between images, so a split of any
    size is evaluated without holding its masks in memory.

    Args:
        iou_thresholds: the IoU thresholds evaluated at once.
        num_classes: length of the per-class AP arrays; by default the largest class id
            seen in either predictions or ground truth, plus one (as chainercv).
    """

    def __init__(
        self, iou_thresholds: Sequence[float] = (0.5,), num_classes: int | None = None
    ) -> None:
        self.iou_thresholds = tuple(float(threshold) for threshold in iou_thresholds)
        if not self.iou_thresholds or not all(0.0 <= t <= 1.0 for t in self.iou_thresholds):
            raise ValueError(f"iou_thresholds must be in [0, 1], got {iou_thresholds}")
        if num_classes is not None and num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        """Forget every processed image."""
        self.num_images = 0
        self._num_positives: dict[int, int] = defaultdict(int)
        self._scores: dict[int, list[np.ndarray]] = defaultdict(list)
        self._matches: dict[int, list[np.ndarray]] = defaultdict(list)

    def process(self, gt: Instances, pred: Instances) -> None:
        """Add one image: ground-truth instances and scored predicted instances."""
        if pred.scores is None:
            raise ValueError(f"image {self.num_images}: predictions need scores")
        self.add(pred.masks, pred.labels, pred.scores, gt.masks, gt.labels)

    def add(
        self,
        pred_masks: np.ndarray,
        pred_labels: np.ndarray,
        pred_scores: np.ndarray,
        gt_masks: np.ndarray,
        gt_labels: np.ndarray,
    ) -> None:
        """Add one image given as arrays.

        Args:
            pred_masks: bool [P, H, W].
            pred_labels: int [P], 0-based class ids.
            pred_scores: float [P]; the dtype is kept, so ties rank as in chainercv.
            gt_masks: bool [G, H, W].
            gt_labels: int [G].

        Raises:
            ValueError: on inconsistent counts, sizes or labels, naming the image index.
        """
        index = self.num_images
        pred_labels, pred_scores, gt_labels = self._check_labels(
            pred_labels, pred_scores, gt_labels
        )
        pred_masks = _check_masks(pred_masks, pred_labels.size, "prediction", index)
        gt_masks = _check_masks(gt_masks, gt_labels.size, "ground-truth", index)
        if pred_labels.size and gt_labels.size and pred_masks.shape[1:] != gt_masks.shape[1:]:
            raise ValueError(
                f"image {index}: prediction mask size {pred_masks.shape[1:]} != "
                f"ground-truth mask size {gt_masks.shape[1:]}"
            )
        pairwise_iou = _packed_pairwise_iou(pred_masks, pred_labels, gt_masks, gt_labels)
        self._accumulate(pred_labels, pred_scores, gt_labels, pairwise_iou)

    def add_rle(
        self,
        pred_rles: Sequence[dict[str, Any]],
        pred_labels: np.ndarray,
        pred_scores: np.ndarray,
        gt_rles: Sequence[dict[str, Any]],
        gt_labels: np.ndarray,
    ) -> None:
        """Add one image given as compressed COCO RLEs (never decoded; same results as add).

        Args:
            pred_rles: P RLE dicts (``size`` [H, W], ``counts`` str or bytes).
            pred_labels: int [P].
            pred_scores: float [P].
            gt_rles: G RLE dicts of the same size.
            gt_labels: int [G].

        Raises:
            ValueError: on inconsistent counts, sizes or labels, naming the image index.
        """
        index = self.num_images
        pred_labels, pred_scores, gt_labels = self._check_labels(
            pred_labels, pred_scores, gt_labels
        )
        sizes = _check_rles(pred_rles, pred_labels.size, "prediction", index)
        sizes |= _check_rles(gt_rles, gt_labels.size, "ground-truth", index)
        if len(sizes) > 1:
            raise ValueError(f"image {index}: RLEs of different sizes {sorted(sizes)}")

        def pairwise_iou(pred_index: np.ndarray, gt_index: np.ndarray) -> np.ndarray:
            return rle_iou([pred_rles[i] for i in pred_index], [gt_rles[i] for i in gt_index])

        self._accumulate(pred_labels, pred_scores, gt_labels, pairwise_iou)

    def _check_labels(
        self, pred_labels: Any, pred_scores: Any, gt_labels: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        index = self.num_images
        pred_labels = _check_labels(pred_labels, "prediction", index)
        gt_labels = _check_labels(gt_labels, "ground-truth", index)
        pred_scores = np.asarray(pred_scores)
        if pred_scores.shape != pred_labels.shape:
            raise ValueError(
                f"image {index}: prediction scores of shape {pred_scores.shape} for "
                f"{pred_labels.size} labels"
            )
        for labels in (pred_labels, gt_labels):
            if self.num_classes is not None and labels.size and labels.max() >= self.num_classes:
                raise ValueError(
                    f"image {index}: class id {labels.max()} >= num_classes {self.num_classes}"
                )
        return pred_labels, pred_scores, gt_labels

    def _accumulate(
        self,
        pred_labels: np.ndarray,
        pred_scores: np.ndarray,
        gt_labels: np.ndarray,
        pairwise_iou: PairwiseIou,
    ) -> None:
        """Record one checked image's scores and match flags, class by class."""
        for label in np.unique(np.concatenate((pred_labels, gt_labels))).tolist():
            keep = pred_labels == label
            order = pred_scores[keep].argsort()[::-1]  # chainercv's call: same tie order
            gt_index = np.flatnonzero(gt_labels == label)
            self._num_positives[label] += gt_index.size
            if order.size == 0:
                continue
            self._scores[label].append(pred_scores[keep][order])
            if gt_index.size == 0:
                matches = np.zeros((len(self.iou_thresholds), order.size), np.int8)
            else:
                iou = pairwise_iou(np.flatnonzero(keep)[order], gt_index)
                matches = _greedy_matches(iou, self.iou_thresholds)
            self._matches[label].append(matches)
        self.num_images += 1

    def evaluate(self) -> dict[float, dict[str, Any]]:
        """Per-class AP and mAP at every threshold.

        Returns:
            ``{threshold: {"ap": float64 [C], "map": float}}``; ``ap`` is NaN for classes
            without ground truth and ``map`` is their nanmean (NaN if every AP is NaN).
        """
        seen = max(self._num_positives, default=-1) + 1
        num_classes = seen if self.num_classes is None else self.num_classes
        ap = np.full((len(self.iou_thresholds), num_classes), np.nan)
        for label, num_positives in self._num_positives.items():
            if num_positives == 0:
                continue
            if self._scores[label]:
                scores = np.concatenate(self._scores[label])
                matches = np.concatenate(self._matches[label], axis=1)
                ap[:, label] = _average_precision(scores, matches, num_positives)
            else:
                ap[:, label] = 0.0
        results = {}
        for row, threshold in enumerate(self.iou_thresholds):
            defined = not np.all(np.isnan(ap[row]))  # nanmean of all-NaN would warn
            mean = float(np.nanmean(ap[row])) if defined else float("nan")
            results[threshold] = {"ap": ap[row], "map": mean}
        return results


def instance_ap_multi(
    pred_masks: Iterable[np.ndarray],
    pred_labels: Iterable[np.ndarray],
    pred_scores: Iterable[np.ndarray],
    gt_masks: Iterable[np.ndarray],
    gt_labels: Iterable[np.ndarray],
    iou_thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS,
    num_classes: int | None = None,
) -> dict[float, dict[str, Any]]:
    """VOC instance AP at several IoU thresholds, each IoU matrix computed once.

    Args are as for :func:`instance_ap`; ``iou_thresholds`` lists the thresholds.

    Returns:
        ``{threshold: {"ap": float64 [C], "map": float}}``.
    """
    evaluator = VocInstanceEvaluator(iou_thresholds, num_classes)
    columns = (pred_masks, pred_labels, pred_scores, gt_masks, gt_labels)
    lengths = {len(column) for column in columns if hasattr(column, "__len__")}
    if len(lengths) > 1:
        names = "pred_masks, pred_labels, pred_scores, gt_masks, gt_labels"
        sizes = [len(c) if hasattr(c, "__len__") else "?" for c in columns]
        raise ValueError(f"per-image lists differ in length: {names} = {sizes}")
    try:
        for image in zip(*columns, strict=True):
            evaluator.add(*image)
    except ValueError as error:
        if "zip()" in str(error):
            raise ValueError(f"per-image iterables differ in length ({error})") from error
        raise
    return evaluator.evaluate()


def instance_ap(
    pred_masks: Iterable[np.ndarray],
    pred_labels: Iterable[np.ndarray],
    pred_scores: Iterable[np.ndarray],
    gt_masks: Iterable[np.ndarray],
    gt_labels: Iterable[np.ndarray],
    iou_thresh: float = 0.5,
    num_classes: int | None = None,
) -> dict[str, Any]:
    """VOC instance AP; the call and the results of chainercv's eval_instance_segmentation_voc.

    Args:
        pred_masks: per image, bool [P_i, H_i, W_i].
        pred_labels: per image, int [P_i], 0-based class ids.
        pred_scores: per image, float [P_i].
        gt_masks: per image, bool [G_i, H_i, W_i].
        gt_labels: per image, int [G_i].
        iou_thresh: a prediction matches a ground truth with IoU >= this (compared in
            float32, as chainercv does).
        num_classes: length of ``ap``; by default the largest class id seen, plus one.

    Returns:
        ``{"ap": float64 [C], "map": float}``: per-class AP (NaN without ground truth) and
        their nanmean, as fractions in [0, 1].

    Raises:
        ValueError: on lists of different lengths, or an inconsistent image (named by index).
    """
    results = instance_ap_multi(
        pred_masks, pred_labels, pred_scores, gt_masks, gt_labels, (iou_thresh,), num_classes
    )
    return results[float(iou_thresh)]


def summarize(
    results: dict[float, dict[str, Any]], class_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """JSON-ready figures: ``mAP{100*t}`` fractions and per-class AP; NaN becomes None.

    Args:
        results: the output of :func:`instance_ap_multi` or an evaluator.
        class_names: names indexed by class id; by default the ids as strings.

    Returns:
        ``{"mAP50": 0.42, ..., "per_class": {"mAP50": {"aeroplane": 0.6, ...}, ...}}``.
    """

    def plain(value: float) -> float | None:
        return None if np.isnan(value) else float(value)

    summary: dict[str, Any] = {}
    per_class: dict[str, dict[str, float | None]] = {}
    for threshold, result in results.items():
        key = f"mAP{round(threshold * 100)}"
        summary[key] = plain(result["map"])
        names = (
            class_names if class_names is not None else [str(i) for i in range(len(result["ap"]))]
        )
        if len(names) != len(result["ap"]):
            raise ValueError(f"{len(names)} class names for {len(result['ap'])} classes")
        per_class[key] = {name: plain(ap) for name, ap in zip(names, result["ap"], strict=True)}
    summary["per_class"] = per_class
    return summary
