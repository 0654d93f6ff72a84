"""COCO mask AP (pycocotools) and VOC AP of COCO-format files, on tiny JSON files."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from bestie.artifacts import encode_mask, write_json
from bestie.evaluation.coco import evaluate, evaluate_voc, evaluate_voc_blocks

HEIGHT, WIDTH = 20, 30
CATEGORIES = [{"id": 0, "name": "cat"}, {"id": 1, "name": "dog"}, {"id": 2, "name": "cow"}]


def box(top: int, left: int, bottom: int, right: int) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[top:bottom, left:right] = True
    return mask


# Image 1: a cat (category id 0) and a dog. Image 2: a cat. Image 3: nothing. No cow.
GT_OBJECTS = [(1, 0, box(0, 0, 10, 10)), (1, 1, box(10, 10, 20, 25)), (2, 0, box(2, 2, 12, 20))]


def ground_truth() -> dict:
    annotations = [
        {
            "id": number + 1,
            "image_id": image_id,
            "category_id": category_id,
            "segmentation": encode_mask(mask),  # utf-8 string counts, as our artifacts
            "area": int(mask.sum()),
            "bbox": [0.0, 0.0, 1.0, 1.0],  # deliberately unused by segm evaluation
            "iscrowd": 0,
        }
        for number, (image_id, category_id, mask) in enumerate(GT_OBJECTS)
    ]
    images = [
        {"id": image_id, "file_name": f"{image_id}.jpg", "height": HEIGHT, "width": WIDTH}
        for image_id in (1, 2, 3)
    ]
    return {"images": images, "annotations": annotations, "categories": CATEGORIES}


def predictions(shift: int = 0) -> list[dict]:
    """Each GT object predicted (shifted right by ``shift``), plus a false cat on image 3."""
    results = [
        {
            "image_id": image_id,
            "category_id": category_id,
            "segmentation": encode_mask(np.roll(mask, shift, axis=1)),
            "score": 0.9 - 0.1 * number,
        }
        for number, (image_id, category_id, mask) in enumerate(GT_OBJECTS)
    ]
    results.append(
        {"image_id": 3, "category_id": 0, "segmentation": encode_mask(box(0, 0, 5, 5)),
         "score": 0.95}
    )  # fmt: skip
    return results


def pycocotools_direct(gt_path, pred_path) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(str(pred_path)), iouType="segm")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


@pytest.fixture
def files(tmp_path):
    gt_path, pred_path = tmp_path / "gt.json", tmp_path / "pred.json"
    write_json(gt_path, ground_truth())
    write_json(pred_path, predictions(shift=2))
    return gt_path, pred_path


def test_equals_pycocotools_called_directly(files):
    gt_path, pred_path = files
    result = evaluate(gt_path, pred_path)
    direct = pycocotools_direct(gt_path, pred_path)
    assert result["AP"] == pytest.approx(direct.stats[0] * 100)
    assert result["AP50"] == pytest.approx(direct.stats[1] * 100)
    assert result["AP75"] == pytest.approx(direct.stats[2] * 100)
    precision = direct.eval["precision"][:, :, :, 0, -1]
    for column, name in enumerate(["cat", "dog"]):
        values = precision[:, :, column]
        assert result["per_class"][name] == pytest.approx(values[values > -1].mean() * 100)
    assert np.isnan(result["per_class"]["cow"])  # no ground truth: pycocotools' -1
    assert 0 < result["AP"] < 100


def test_category_id_zero_is_evaluated(files):
    gt_path, _ = files
    only_cats = [entry for entry in predictions() if entry["category_id"] == 0]
    result = evaluate(gt_path, only_cats)
    assert result["per_class"]["cat"] > 0
    assert result["per_class"]["dog"] == 0.0


def test_perfect_then_perturbed_predictions():
    gt = ground_truth()
    perfect = [entry for entry in predictions() if entry["image_id"] != 3]
    assert evaluate(gt, perfect)["AP"] == pytest.approx(100.0)
    perturbed = evaluate(gt, predictions(shift=3))
    assert perturbed["AP"] < evaluate(gt, predictions(shift=1))["AP"] < 100.0


def test_empty_predictions_give_zeros(files, tmp_path):
    gt_path, _ = files
    empty_path = tmp_path / "empty.json"
    empty_path.write_text("[]\n")
    result = evaluate(gt_path, empty_path)
    assert result["AP"] == result["AP50"] == result["AP75"] == 0.0
    assert result["per_class"]["cat"] == 0.0 and np.isnan(result["per_class"]["cow"])
    voc = evaluate_voc(gt_path, [])
    np.testing.assert_array_equal(voc[0.5]["ap"], [0.0, 0.0, np.nan])


def test_inputs_are_not_modified():
    gt, preds = ground_truth(), predictions()
    gt_before, preds_before = copy.deepcopy(gt), copy.deepcopy(preds)
    evaluate(gt, preds)
    evaluate_voc(gt, preds)
    assert gt == gt_before and preds == preds_before


def test_pycocotools_output_is_silenced_unless_asked(capsys):
    evaluate(ground_truth(), predictions())
    assert capsys.readouterr().out == ""
    evaluate(ground_truth(), predictions(), verbose=True)
    assert "Average Precision" in capsys.readouterr().out


def test_bbox_in_predictions_does_not_redefine_area():
    # A box area of 10000 would make every prediction "large" while the masks are small.
    with_boxes = [dict(entry, bbox=[0, 0, 100, 100]) for entry in predictions(shift=1)]
    # json.dumps so that NaN compares equal to NaN.
    expected = json.dumps(evaluate(ground_truth(), predictions(shift=1)))
    assert json.dumps(evaluate(ground_truth(), with_boxes)) == expected


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image_id": 99}, "not in the ground truth"),
        ({"category_id": 7}, "unknown category"),
        ({"segmentation": encode_mask(np.zeros((5, 5), bool))}, "mask size"),
    ],
)
def test_bad_predictions_raise(change, message):
    bad = predictions()
    bad[0] = dict(bad[0], **change)
    with pytest.raises(ValueError, match=message):
        evaluate(ground_truth(), bad)


def test_malformed_files_raise(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        evaluate(path, [])
    with pytest.raises(ValueError, match="COCO dict"):
        evaluate({"images": []}, [])
    with pytest.raises(ValueError, match="list of COCO results"):
        evaluate(ground_truth(), {"image_id": 1})


# ----------------------------------------------------------------------------- VOC from files
def test_voc_of_files_ground_truth_as_predictions(tmp_path):
    gt = ground_truth()
    as_predictions = [
        {key: annotation[key] for key in ("image_id", "category_id", "segmentation")}
        | {"score": 1.0}
        for annotation in gt["annotations"]
    ]
    path = tmp_path / "pred.json"
    path.write_text(json.dumps(as_predictions))
    results = evaluate_voc(gt, path, iou_thresholds=(0.5, 0.75))
    for result in results.values():
        np.testing.assert_array_equal(result["ap"], [1.0, 1.0, np.nan])
        assert result["map"] == 1.0


def test_voc_of_files_hand_computed():
    # Shift 2 columns: cat (image 1) IoU 80/120, dog IoU 130/170, cat (image 2) IoU
    # 160/200 -- all >= 0.5; only the first is < 0.7. The false cat on image 3 has the
    # top score. cat ranking at 0.5: FP (0.95), TP (0.9), TP (0.7) with 2 GT ->
    # recall 0 .5 1, precision 0 .5 .667 -> AP = .5 * 2/3 + .5 * 2/3 = 2/3. dog: 1.0.
    results = evaluate_voc(ground_truth(), predictions(shift=2), iou_thresholds=(0.5, 0.7))
    np.testing.assert_allclose(results[0.5]["ap"][:2], [2 / 3, 1.0])
    # At 0.7 the image-1 cat fails: FP, FP, TP -> precision 1/3 at recall 1/2 -> AP 1/6.
    np.testing.assert_allclose(results[0.7]["ap"][:2], [1 / 6, 1.0])
    assert np.isnan(results[0.5]["ap"][2])


def test_voc_blocks_hand_computed():
    # Images in file order 3, 1, 2 and blocks of 2: one block (3, 1); image 2 is a partial
    # run, left out. At 0.5 the block's cats rank FP (0.95, image 3), TP (0.9) with one GT:
    # precision 1/2 at recall 1 -> AP 1/2; dog 1.0; no cow -> mAP 3/4.
    gt = ground_truth()
    gt["images"] = [gt["images"][i] for i in (2, 0, 1)]
    assert evaluate_voc_blocks(gt, predictions(shift=2), block=2) == pytest.approx([0.75])
    # Blocks of 1: image 3 has no GT (mAP nan), images 1 and 2 are found perfectly.
    maps = evaluate_voc_blocks(gt, predictions(shift=2), block=1)
    assert np.isnan(maps[0]) and maps[1:] == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError, match="block of 4 images: the ground truth has 3"):
        evaluate_voc_blocks(gt, predictions(), block=4)
