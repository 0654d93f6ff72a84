"""VOC instance AP (SPEC §7) against hand-computed values and a naive reference.

Most masks are intervals on a 1 x 60 strip, so every IoU is a ratio of interval lengths
that can be checked by eye.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from bestie.artifacts import encode_mask
from bestie.evaluation.iou import mask_iou, rle_iou
from bestie.evaluation.voc import VocInstanceEvaluator, instance_ap, instance_ap_multi, summarize
from bestie.structures import Instances

WIDTH = 60


def strips(*intervals: tuple[int, int]) -> np.ndarray:
    """bool [N, 1, WIDTH] masks, one per half-open interval [start, stop)."""
    masks = np.zeros((len(intervals), 1, WIDTH), bool)
    for row, (start, stop) in enumerate(intervals):
        masks[row, 0, start:stop] = True
    return masks


def one_image(pred_intervals, pred_labels, pred_scores, gt_intervals, gt_labels):
    """The five per-image lists of instance_ap for a single image."""
    return (
        [strips(*pred_intervals)],
        [np.asarray(pred_labels, np.int64)],
        [np.asarray(pred_scores, np.float32)],
        [strips(*gt_intervals)],
        [np.asarray(gt_labels, np.int64)],
    )


# ----------------------------------------------------------------------------- empty cases
def test_no_images_gives_nan():
    result = instance_ap([], [], [], [], [], num_classes=3)
    assert result["ap"].shape == (3,)
    assert np.isnan(result["ap"]).all() and np.isnan(result["map"])
    assert instance_ap([], [], [], [], [])["ap"].shape == (0,)


def test_image_without_predictions_counts_its_ground_truth():
    # Image 0: one perfect prediction. Image 1: a ground truth and no prediction at all.
    # n_pos = 2, one TP -> recall 1/2 at precision 1 -> AP 0.5.
    empty = np.zeros((0, 1, WIDTH), bool)
    result = instance_ap(
        [strips((0, 10)), empty],
        [np.array([0]), np.zeros(0, np.int64)],
        [np.array([0.9], np.float32), np.zeros(0, np.float32)],
        [strips((0, 10)), strips((5, 20))],
        [np.array([0]), np.array([0])],
    )
    assert result["ap"][0] == pytest.approx(0.5)


def test_image_without_anything_is_accepted():
    # chainercv-style empty arrays of any shape stand for "no instances".
    result = instance_ap(
        [strips((0, 10)), np.zeros((0,))],
        [np.array([0]), np.array([])],
        [np.array([0.9]), np.array([])],
        [strips((0, 10)), np.zeros((0,))],
        [np.array([0]), np.array([])],
    )
    assert result["map"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- matching
def test_ground_truth_as_predictions_gives_ap_one():
    gt = [strips((0, 10), (10, 20), (30, 45)), strips((2, 50))]
    labels = [np.array([0, 1, 0]), np.array([2])]
    scores = [np.array([0.3, 0.2, 0.1], np.float32), np.array([0.5], np.float32)]
    result = instance_ap(gt, labels, scores, gt, labels)
    np.testing.assert_array_equal(result["ap"], [1.0, 1.0, 1.0])
    assert result["map"] == 1.0


def test_duplicate_prediction_is_a_false_positive():
    # Two GT; predictions A (0.9), duplicate of A (0.8), B (0.7) -> TP, FP, TP.
    # recall .5 .5 1, precision 1 .5 .667 -> AP = .5 * 1 + .5 * 2/3.
    result = instance_ap(
        *one_image([(0, 10), (0, 10), (20, 30)], [0, 0, 0], [0.9, 0.8, 0.7],
                   [(0, 10), (20, 30)], [0, 0])
    )  # fmt: skip
    assert result["ap"][0] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_prediction_takes_argmax_ground_truth_even_when_taken():
    # GT1 = [0,10), GT2 = [10,20). Prediction a = GT1 (0.9) takes GT1. Prediction b =
    # [2,16) (0.8) has IoU 8/16 = .5 with GT1 and 6/14 = .43 with GT2: it takes its argmax
    # GT1, already taken, so it is a FP although GT2 would match at 0.3.
    # TP, FP with n_pos 2 -> AP = 0.5 (it would be 1.0 with "best free" matching).
    result = instance_ap(
        *one_image([(0, 10), (2, 16)], [0, 0], [0.9, 0.8], [(0, 10), (10, 20)], [0, 0]),
        iou_thresh=0.3,
    )
    assert result["ap"][0] == pytest.approx(0.5)


def test_higher_score_wins_the_ground_truth_regardless_of_input_order():
    # GT [0,10). a = [0,6) (IoU 0.6, score 0.9), b = [0,10) (IoU 1, score 0.8).
    # At 0.5: a takes the GT, b is a FP -> TP, FP -> AP 1.0.
    # At 0.7: a is below the threshold, so it is a FP and takes nothing; b is a TP ->
    # FP, TP -> precision 1/2 at recall 1 -> AP 0.5.
    lists = one_image([(0, 6), (0, 10)], [0, 0], [0.9, 0.8], [(0, 10)], [0])
    results = instance_ap_multi(*lists, iou_thresholds=(0.5, 0.7))
    assert results[0.5]["ap"][0] == pytest.approx(1.0)
    assert results[0.7]["ap"][0] == pytest.approx(0.5)
    reversed_lists = one_image([(0, 10), (0, 6)], [0, 0], [0.8, 0.9], [(0, 10)], [0])
    assert instance_ap(*reversed_lists, iou_thresh=0.7)["ap"][0] == pytest.approx(0.5)


def test_exact_ap_of_a_small_ranking():
    # Three GT; ranking TP (0.9), FP (0.8, no overlap), TP (0.7).
    # recall 1/3 1/3 2/3, precision 1 1/2 2/3 -> AP = 1/3 * 1 + 1/3 * 2/3 = 0.5556.
    result = instance_ap(
        *one_image([(0, 10), (50, 60), (10, 20)], [0, 0, 0], [0.9, 0.8, 0.7],
                   [(0, 10), (10, 20), (20, 30)], [0, 0, 0])
    )  # fmt: skip
    assert result["ap"][0] == pytest.approx(1 / 3 + 1 / 3 * 2 / 3)
    assert result["ap"][0] == pytest.approx(0.5556, abs=1e-4)


def test_ranking_is_global_across_images():
    # Image 0: a TP at 0.5. Image 1: a FP at 0.9 (no GT of the class there).
    # Global ranking FP, TP with n_pos 1 -> precision 0, 1/2 at recall 0, 1 -> AP 0.5.
    result = instance_ap(
        [strips((0, 10)), strips((0, 10))],
        [np.array([0]), np.array([0])],
        [np.array([0.5], np.float32), np.array([0.9], np.float32)],
        [strips((0, 10)), np.zeros((0, 1, WIDTH), bool)],
        [np.array([0]), np.zeros(0, np.int64)],
    )
    assert result["ap"][0] == pytest.approx(0.5)


# ----------------------------------------------------------------------------- classes
def test_class_with_ground_truth_but_no_prediction_has_ap_zero():
    result = instance_ap(*one_image([(0, 10)], [0], [0.9], [(0, 10), (20, 30)], [0, 1]))
    np.testing.assert_array_equal(result["ap"], [1.0, 0.0])
    assert result["map"] == pytest.approx(0.5)


def test_class_without_ground_truth_is_nan_and_left_out():
    # Class 2 has only a prediction, class 1 nothing at all (num_classes = 4 pads class 3).
    result = instance_ap(
        *one_image([(0, 10), (30, 40)], [0, 2], [0.9, 0.8], [(0, 10)], [0]), num_classes=4
    )
    assert result["ap"][0] == 1.0
    assert np.isnan(result["ap"][1:]).all()
    assert result["map"] == 1.0


def test_default_class_count_is_largest_label_seen_plus_one():
    result = instance_ap(*one_image([(0, 10)], [4], [0.9], [(0, 10)], [1]))
    assert result["ap"].shape == (5,)
    assert result["ap"][1] == 0.0 and np.isnan(result["ap"][4])


# ----------------------------------------------------------------------------- thresholds
def test_thresholds_change_the_result():
    # IoU 0.6 ([0,6) vs [0,10)) and IoU exactly 0.7 ([0,7) vs [0,10)), one image each.
    # At 0.7 the second still matches: chainercv compares float32(0.7) with 0.7 in float32.
    results = instance_ap_multi(
        [strips((0, 6)), strips((20, 27))],
        [np.array([0]), np.array([0])],
        [np.array([0.9], np.float32), np.array([0.8], np.float32)],
        [strips((0, 10)), strips((20, 30))],
        [np.array([0]), np.array([0])],
    )
    assert sorted(results) == [0.25, 0.5, 0.7, 0.75]
    assert results[0.25]["ap"][0] == pytest.approx(1.0)
    assert results[0.5]["ap"][0] == pytest.approx(1.0)
    # 0.7: FP (0.9) then TP (0.8) -> precision 1/2 at recall 1/2 -> AP 0.25.
    assert results[0.7]["ap"][0] == pytest.approx(0.25)
    assert results[0.75]["ap"][0] == 0.0


def test_multi_equals_single_threshold_calls():
    lists = one_image(
        [(0, 8), (5, 18), (20, 26), (40, 55)], [0, 0, 1, 1], [0.4, 0.9, 0.6, 0.3],
        [(0, 10), (10, 20), (20, 30), (40, 50)], [0, 0, 1, 1],
    )  # fmt: skip
    results = instance_ap_multi(*lists)
    for threshold, result in results.items():
        single = instance_ap(*lists, iou_thresh=threshold)
        np.testing.assert_array_equal(result["ap"], single["ap"])


def test_void_pixels_are_not_ignored():
    # GT [0,10) with void [10,16) beside it: a prediction [0,16) covering the void has
    # IoU 10/16 = 0.625, not 1, so it fails at 0.7.
    results = instance_ap_multi(
        *one_image([(0, 16)], [0], [0.9], [(0, 10)], [0]), iou_thresholds=(0.5, 0.7)
    )
    assert results[0.5]["ap"][0] == 1.0
    assert results[0.7]["ap"][0] == 0.0


# ----------------------------------------------------------------------------- reference
def naive_voc_ap(pred_masks, pred_labels, pred_scores, gt_masks, gt_labels, threshold):
    """The SPEC §7 procedure written as plainly as possible (loops, per-pair sums)."""
    positives, scores, flags = defaultdict(int), defaultdict(list), defaultdict(list)
    for masks, labels, image_scores, truths, truth_labels in zip(
        pred_masks, pred_labels, pred_scores, gt_masks, gt_labels, strict=True
    ):
        for label in set(labels.tolist()) | set(truth_labels.tolist()):
            mine = np.flatnonzero(labels == label)
            mine = mine[image_scores[mine].argsort()[::-1]]
            theirs = np.flatnonzero(truth_labels == label)
            positives[label] += len(theirs)
            taken = set()
            for index in mine:
                scores[label].append(image_scores[index])
                ious = np.array(
                    [(masks[index] & truths[t]).sum() / (masks[index] | truths[t]).sum()
                     for t in theirs],
                    np.float32,
                )  # fmt: skip
                best = int(ious.argmax()) if len(theirs) else -1
                hit = best >= 0 and ious[best] >= np.float32(threshold) and best not in taken
                if best >= 0 and ious[best] >= np.float32(threshold):
                    taken.add(best)
                flags[label].append(1 if hit else 0)
    ap = np.full(max(positives) + 1, np.nan)
    for label, count in positives.items():
        if count == 0:
            continue
        order = np.array(scores[label]).argsort()[::-1]
        hits = np.array(flags[label], int)[order]
        recall = np.cumsum(hits) / count
        precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        total, previous = 0.0, 0.0
        for position in range(len(hits)):
            if recall[position] > previous:
                total += (recall[position] - previous) * precision[position:].max()
                previous = recall[position]
        ap[label] = total
    return ap


def random_split(seed: int, images: int = 6):
    rng = np.random.default_rng(seed)
    columns = ([], [], [], [], [])
    for _ in range(images):
        truths = [tuple(sorted(rng.choice(WIDTH, 2, replace=False))) for _ in range(4)]
        preds = [
            (max(0, a + rng.integers(-3, 4)), b + rng.integers(0, 3))
            if rng.random() < 0.7
            else tuple(sorted(rng.choice(WIDTH, 2, replace=False)))
            for a, b in (truths[rng.integers(4)] for _ in range(7))
        ]
        columns[0].append(strips(*preds))
        columns[1].append(rng.integers(0, 3, 7))
        columns[2].append((rng.integers(0, 5, 7) / 5).astype(np.float32))  # many ties
        columns[3].append(strips(*truths))
        columns[4].append(rng.integers(0, 3, 4))
    return columns


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("threshold", [0.25, 0.5, 0.75])
def test_matches_naive_reference(seed, threshold):
    columns = random_split(seed)
    expected = naive_voc_ap(*columns, threshold)
    result = instance_ap(*columns, iou_thresh=threshold, num_classes=len(expected))
    np.testing.assert_allclose(result["ap"], expected, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- streaming
def test_streaming_evaluator_equals_batch_and_resets():
    columns = random_split(3)
    evaluator = VocInstanceEvaluator((0.5, 0.75), num_classes=3)
    evaluator.add(*(column[0] for column in columns))  # an image that reset() must forget
    evaluator.reset()
    for masks, labels, scores, truths, truth_labels in zip(*columns, strict=True):
        evaluator.process(Instances(truths, truth_labels), Instances(masks, labels, scores))
    assert evaluator.num_images == len(columns[0])
    streamed = evaluator.evaluate()
    batch = instance_ap_multi(*columns, iou_thresholds=(0.5, 0.75), num_classes=3)
    for threshold in (0.5, 0.75):
        np.testing.assert_array_equal(streamed[threshold]["ap"], batch[threshold]["ap"])


def test_rle_path_equals_mask_path():
    columns = random_split(5)
    by_masks, by_rles = VocInstanceEvaluator((0.5, 0.7)), VocInstanceEvaluator((0.5, 0.7))
    for masks, labels, scores, truths, truth_labels in zip(*columns, strict=True):
        by_masks.add(masks, labels, scores, truths, truth_labels)
        by_rles.add_rle(
            [encode_mask(m) for m in masks], labels, scores,
            [encode_mask(m) for m in truths], truth_labels,
        )  # fmt: skip
    for threshold, result in by_masks.evaluate().items():
        np.testing.assert_array_equal(result["ap"], by_rles.evaluate()[threshold]["ap"])


def test_generators_are_accepted():
    columns = random_split(1)
    expected = instance_ap(*columns)["ap"]
    np.testing.assert_array_equal(instance_ap(*(iter(c) for c in columns))["ap"], expected)


# ----------------------------------------------------------------------------- IoU
def test_mask_iou_values_and_empty_masks():
    iou = mask_iou(strips((0, 10), (0, 0)), strips((0, 5), (5, 20), (0, 0)))
    assert iou.dtype == np.float32
    np.testing.assert_allclose(iou[0, :2], [0.5, 0.25])
    assert iou[0, 2] == 0.0 and iou[1, 0] == 0.0
    assert np.isnan(iou[1, 2])  # 0 / 0, as in chainercv
    rles = [encode_mask(m) for m in strips((0, 10), (0, 0))]
    others = [encode_mask(m) for m in strips((0, 5), (5, 20), (0, 0))]
    np.testing.assert_array_equal(rle_iou(rles, others), iou)
    assert mask_iou(strips(), strips((0, 3))).shape == (0, 1)
    assert rle_iou([], others).shape == (0, 3)


def test_mask_iou_rejects_size_mismatch():
    with pytest.raises(ValueError, match="one size"):
        mask_iou(np.zeros((1, 2, 3), bool), np.zeros((1, 3, 2), bool))


def test_large_image_intersections_are_exact():
    rng = np.random.default_rng(0)
    masks = rng.random((3, 375, 500)) < 0.4
    expected = np.array(
        [[(a & b).sum() / (a | b).sum() for b in masks[1:]] for a in masks], np.float32
    )
    np.testing.assert_array_equal(mask_iou(masks, masks[1:]), expected)


# ----------------------------------------------------------------------------- errors
def test_mismatched_list_lengths():
    columns = list(one_image([(0, 10)], [0], [0.9], [(0, 10)], [0]))
    columns[3] = columns[3] * 2
    with pytest.raises(ValueError, match="differ in length"):
        instance_ap(*columns)
    with pytest.raises(ValueError, match="differ in length"):
        instance_ap(*(iter(column) for column in columns))


def test_mask_size_mismatch_names_the_image():
    good = one_image([(0, 10)], [0], [0.9], [(0, 10)], [0])
    columns = [good[0] * 2, good[1] * 2, good[2] * 2, good[3] * 2, good[4] * 2]
    columns[3] = [columns[3][0], np.zeros((1, 2, WIDTH), bool)]
    with pytest.raises(ValueError, match="image 1: prediction mask size"):
        instance_ap(*columns)


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        ([0, 0], [0.9], "prediction scores"),
        ([-1], [0.9], ">= 0"),
        ([0.5], [0.9], "integers"),
        ([7], [0.9], "num_classes"),
    ],
)
def test_bad_labels_and_scores(labels, scores, message):
    masks = strips(*([(0, 10)] * len(labels)))
    with pytest.raises(ValueError, match=message):
        instance_ap([masks], [np.array(labels)], [np.array(scores)], [strips((0, 10))],
                    [np.array([0])], num_classes=3)  # fmt: skip


def test_mask_count_mismatch_and_missing_scores():
    with pytest.raises(ValueError, match="2 prediction masks but 1 labels"):
        instance_ap([strips((0, 1), (1, 2))], [np.array([0])], [np.array([0.5])],
                    [strips((0, 1))], [np.array([0])])  # fmt: skip
    with pytest.raises(ValueError, match="need scores"):
        VocInstanceEvaluator().process(Instances(strips((0, 1)), [0]), Instances(strips(), []))
    with pytest.raises(ValueError, match="iou_thresholds"):
        VocInstanceEvaluator((1.5,))


# ----------------------------------------------------------------------------- summary
def test_summarize_names_thresholds_and_drops_nan():
    results = instance_ap_multi(
        *one_image([(0, 10)], [0], [0.9], [(0, 10)], [0]), iou_thresholds=(0.5, 0.75),
        num_classes=2,
    )  # fmt: skip
    summary = summarize(results, ["cat", "dog"])
    assert summary["mAP50"] == 1.0 and summary["mAP75"] == 1.0
    assert summary["per_class"]["mAP50"] == {"cat": 1.0, "dog": None}
    with pytest.raises(ValueError, match="class names"):
        summarize(results, ["cat"])
