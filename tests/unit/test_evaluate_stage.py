"""The evaluate stage on ground truth used as predictions, and on perturbed ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bestie.artifacts import decode_mask, encode_mask, read_json, write_json
from bestie.data.synthetic import generate_split
from bestie.sections import SyntheticConfig
from bestie.stages.evaluate import evaluate_files

THRESHOLDS = [0.25, 0.5, 0.7, 0.75]


@pytest.fixture(scope="module")
def ground_truth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("gt")
    config = SyntheticConfig(num_val=6, height=64, width=64, min_size=14, max_size=22)
    gt = generate_split(config, "val", str(folder))[2]
    write_json(folder / "val_gt.json", gt)
    return folder / "val_gt.json"


def as_predictions(gt: dict, erode: int = 0) -> list[dict]:
    predictions = []
    for annotation in gt["annotations"]:
        mask = decode_mask(annotation["segmentation"])
        if erode:
            ys, xs = np.nonzero(mask)
            mask[ys[xs < xs.min() + erode], xs[xs < xs.min() + erode]] = False
        predictions.append(
            {
                "image_id": annotation["image_id"],
                "score": 0.9,
                "category_id": annotation["category_id"],
                "segmentation": encode_mask(mask),
            }
        )
    return predictions


def test_ground_truth_as_predictions_scores_100(ground_truth: Path, tmp_path: Path) -> None:
    write_json(tmp_path / "pred.json", as_predictions(read_json(ground_truth)))
    result = evaluate_files(str(ground_truth), str(tmp_path / "pred.json"), THRESHOLDS)
    for key in ("mAP25", "mAP50", "mAP70", "mAP75", "COCO_AP", "COCO_AP50", "COCO_AP75"):
        assert result[key] == pytest.approx(100.0), key
    assert result["per_class"]["mAP50"]["disc"] == pytest.approx(100.0)


def test_perturbed_and_missing_predictions_lower_the_scores(ground_truth: Path, tmp_path: Path):
    gt = read_json(ground_truth)
    eroded = as_predictions(gt, erode=6)
    write_json(tmp_path / "pred.json", eroded)
    result = evaluate_files(str(ground_truth), str(tmp_path / "pred.json"), THRESHOLDS)
    assert result["mAP25"] >= result["mAP50"] >= result["mAP75"]
    assert result["mAP75"] < 100.0 and result["COCO_AP"] < 100.0
    write_json(tmp_path / "empty.json", [])
    empty = evaluate_files(str(ground_truth), str(tmp_path / "empty.json"), THRESHOLDS)
    assert empty["mAP50"] == 0.0 and empty["predictions"] == 0
