"""Bad input past ``prepare-dataset``: each stops with an error naming the culprit.

(Input checks of ``prepare-dataset`` itself, duplicate ids, unknown categories, empty
segmentations, malformed RLE, are in test_data_coco.py and test_data_voc.py; config keys in
test_config.py.) The split here has 4 images of 32x32 with classes [0], [1], [0, 1] and
none, so an image without labels goes through every stage.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bestie import cli
from bestie.artifacts import (
    ImageCues,
    annotations_by_image,
    encode_mask,
    gather_cues,
    read_cues,
    read_json,
    read_records,
    write_cues,
    write_json,
)
from bestie.config import Config, from_dict
from bestie.data.classification import ClassificationDataset, EvalTransform
from bestie.data.instance_dataset import InstanceDataset
from bestie.data.io import read_label_map, write_label_map
from bestie.data.transforms import TrainAugmentation
from bestie.engine.distributed import Process
from bestie.engine.instance_trainer import train_instance
from bestie.evaluation.coco import evaluate_voc
from bestie.models.instance_net import build_instance_net
from bestie.postprocess import decode
from bestie.sections import DecodeConfig
from tests.unit.tiny_split import make_split

SIZE = 32
STAGE = {
    "seed": 0,
    "supervision": "image",
    "instance": {
        "backbone": "small",
        "crop": SIZE,
        "batch_size": 2,
        "iterations": 2,
        "warmup_iterations": 1,
        "checkpoint_every": 2,
        "log_every": 1,
        "workers": 0,
    },
    "refine": {"nms_kernel": 9},
    "loss": {},
    "pseudo": {"min_area": 4},
}


def _main(*argv: str | Path) -> int:
    return cli.main([str(arg) for arg in argv])


def _synthesize(split: dict[str, Path], out: Path, *extra: str) -> int:
    return _main(
        "synthesize-pseudo-labels", "--config", json.dumps({"pseudo": STAGE["pseudo"]}),
        "--records", split["records"], "--cues", split["cues"], "--wsss", split["wsss"],
        "--out", out, *extra,
    )  # fmt: skip


def _train(split: dict[str, Path], out: Path, **inputs: Path) -> int:
    split = {**split, **inputs}
    return _main(
        "train-instance", "--config", json.dumps(STAGE), "--device", "cpu",
        "--records", split["records"], "--pseudo", split["pseudo"],
        "--wsss", split["wsss"], "--out", out,
    )  # fmt: skip


@pytest.fixture
def split(tmp_path: Path) -> dict[str, Path]:
    """Records, point cues, WSSS maps and pseudo labels made by the stages themselves."""
    records_path, records = make_split(tmp_path, [(SIZE, SIZE)] * 4)
    for record in records:
        semantic = np.zeros((SIZE, SIZE), np.uint8)
        if 0 in record.classes:
            semantic[4:14, 4:14] = 1
        if 1 in record.classes:
            semantic[SIZE - 8 : SIZE - 4, 6 : SIZE - 6] = 2
        write_label_map(tmp_path / "wsss" / f"{record.name}.png", semantic)
    paths = {"records": records_path, "cues": tmp_path / "cues.h5", "wsss": tmp_path / "wsss"}
    config = json.dumps({"cues": {"source": "gt_points"}, "supervision": "image", "shards": 1})
    assert _main("extract-cues", "--config", config, "--records", records_path,
                 "--output", paths["cues"]) == 0  # fmt: skip
    assert _synthesize(paths, tmp_path / "shard.json") == 0
    paths["pseudo"] = tmp_path / "pseudo.json"
    assert _main(
        "gather-pseudo-labels", "--shards", tmp_path / "shard.json", "--records", records_path,
        "--cues", paths["cues"], "--wsss", paths["wsss"], "--out", paths["pseudo"],
        "--stats", tmp_path / "stats.json",
    ) == 0  # fmt: skip
    return paths


# ----------------------------------------------------------------------------- images
def test_corrupt_image_is_named_by_both_training_datasets(split) -> None:
    records, categories = read_records(split["records"])
    broken = Path(records[1].file)
    broken.write_bytes(broken.read_bytes()[:60])  # truncated PNG
    classifier_data = ClassificationDataset(records, len(categories), EvalTransform(SIZE))
    with pytest.raises(ValueError, match=rf"cannot decode image .*{broken.name}"):
        classifier_data[1]
    pseudo = annotations_by_image(read_json(split["pseudo"])["annotations"], records)
    instance_data = InstanceDataset(
        records,
        pseudo,
        lambda record: read_label_map(split["wsss"] / f"{record.name}.png"),
        len(categories),
        TrainAugmentation(SIZE, 1.0, 1.0),
    )
    instance_data[0]
    with pytest.raises(ValueError, match=rf"cannot decode image .*{broken.name}"):
        instance_data[1]


# ----------------------------------------------------------------------------- cues
def test_truncated_cues_file_is_a_value_error_naming_it(split, tmp_path, caplog) -> None:
    data = split["cues"].read_bytes()
    split["cues"].write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cues\.h5: unreadable cues file"):
        read_cues(split["cues"])
    with pytest.raises(ValueError, match=r"cues\.h5: unreadable HDF5 file"):
        gather_cues([split["cues"]], tmp_path / "gathered.h5")
    assert not (tmp_path / "gathered.h5").exists()
    assert _synthesize(split, tmp_path / "again.json") == 1
    assert "cues.h5: unreadable cues file" in caplog.text


def test_cue_outside_the_image_names_the_image(split, tmp_path, caplog) -> None:
    peaks = np.array([[9, 9, 0, 1.0], [SIZE + 3, 2, 0, 1.0]], np.float32)
    cues = {1: ImageCues(peaks, SIZE, SIZE)}
    cues.update({image_id: ImageCues(np.zeros((0, 4)), SIZE, SIZE) for image_id in (2, 3, 4)})
    write_cues(split["cues"], cues, attrs={"source": "gt_points"})
    assert _synthesize(split, tmp_path / "again.json") == 1
    assert "image image_0 (id 1): cue 1 (y=35, x=2, class=0) lies outside the 32x32" in caplog.text


# ----------------------------------------------------------------------------- WSSS maps
@pytest.mark.parametrize(
    ("semantic", "at_synthesis", "at_training"),
    [
        (np.zeros((SIZE - 1, SIZE), np.uint8), "is 31x32, the image is 32x32", r"is \(31, 32\)"),
        (np.full((SIZE, SIZE), 7, np.uint8), "holds value 7; allowed are 0..2", r"values \[7\]"),
    ],
)
def test_bad_wsss_map_stops_synthesis_and_training(
    split, tmp_path, caplog, semantic, at_synthesis, at_training
) -> None:
    write_label_map(split["wsss"] / "image_2.png", semantic)
    assert _synthesize(split, tmp_path / "again.json") == 1
    assert "image image_2 (id 3)" in caplog.text and at_synthesis in caplog.text
    caplog.clear()
    # 4 images, batches of 2: the first epoch's 2 iterations load every image
    assert _train(split, tmp_path / "instance/model.pt") == 1
    assert "image 3 (image_2): WSSS map" in caplog.text
    assert re.search(at_training, caplog.text)
    assert not (tmp_path / "instance/model.pt").exists()


# ----------------------------------------------------------------------------- no labels
def test_image_without_labels_goes_through_every_stage(split, tmp_path) -> None:
    records, _ = read_records(split["records"])
    assert records[3].classes == () and len(read_cues(split["cues"])[4]) == 0
    assert all(a["image_id"] != 4 for a in read_json(split["pseudo"])["annotations"])
    assert _train(split, tmp_path / "instance/model.pt") == 0
    assert _main("predict-instance", "--config", json.dumps({"decode": {}}), "--device", "cpu",
                 "--model", tmp_path / "instance/model.pt", "--records", split["records"],
                 "--out", tmp_path / "pred.json") == 0  # fmt: skip
    assert isinstance(read_json(tmp_path / "pred.json"), list)


def test_empty_shard_and_empty_split(split, tmp_path, caplog) -> None:
    assert _synthesize(split, tmp_path / "empty.json", "--shard", "5", "--num-shards", "6") == 0
    assert read_json(tmp_path / "empty.json")["annotations"] == []
    data = read_json(split["records"])
    write_json(tmp_path / "none.json", {**data, "images": []})
    write_json(tmp_path / "no_pseudo.json", {"annotations": []})
    empty = {"records": tmp_path / "none.json", "pseudo": tmp_path / "no_pseudo.json"}
    assert _train(split, tmp_path / "instance/model.pt", **empty) == 1
    assert "0 training images are fewer than one batch of 2" in caplog.text


def test_shards_of_different_cue_thresholds_are_not_merged(split, tmp_path, caplog) -> None:
    assert read_json(split["pseudo"])["info"]["cue_threshold"] == 0.7  # recorded for `show`
    shard = read_json(tmp_path / "shard.json")
    write_json(tmp_path / "other.json", {**shard, "images": [], "cue_threshold": 0.5})
    gather = ["gather-pseudo-labels", "--shards", tmp_path / "shard.json", tmp_path / "other.json"]
    gather += ["--records", split["records"], "--cues", split["cues"], "--wsss", split["wsss"]]
    assert _main(*gather, "--out", tmp_path / "p.json", "--stats", tmp_path / "s.json") == 1
    assert "different cue thresholds" in caplog.text and not (tmp_path / "p.json").exists()


def test_config_of_the_wrong_type_names_the_key(split, tmp_path, caplog) -> None:
    for config, key in (
        ({"pseudo": {"min_area": "big"}}, "pseudo.min_area"),
        ({"pseudo": 3}, "pseudo"),
    ):
        assert _main(
            "synthesize-pseudo-labels", "--config", json.dumps(config), "--records",
            split["records"], "--cues", split["cues"], "--wsss", split["wsss"], "--out",
            tmp_path / "x.json",
        ) == 1  # fmt: skip
        assert f"'{key}'" in caplog.text
        caplog.clear()


# ----------------------------------------------------------------------------- NaN
class NanNet(nn.Module):
    """The small instance network with every output multiplied by NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.net = build_instance_net("small", 2)

    def forward(self, image: torch.Tensor, **kwargs) -> dict[str, torch.Tensor]:
        return {key: value * float("nan") for key, value in self.net(image, **kwargs).items()}


def test_nan_outputs_stop_training_naming_the_iterations(split, tmp_path) -> None:
    records, categories = read_records(split["records"])
    pseudo = annotations_by_image(read_json(split["pseudo"])["annotations"], records)
    dataset = InstanceDataset(
        records,
        pseudo,
        lambda record: read_label_map(split["wsss"] / f"{record.name}.png"),
        len(categories),
        TrainAugmentation(SIZE, 1.0, 1.0),
    )
    cfg = from_dict(Config, {**STAGE, "instance": {**STAGE["instance"], "log_every": 2}})
    process = Process(0, 1, torch.device("cpu"))
    with pytest.raises(
        FloatingPointError, match=r"non-finite loss in iterations 1\.\.2: total=nan"
    ):
        train_instance(cfg, NanNet(), dataset, tmp_path, process, key="nan")


def test_nan_through_the_cli_is_one_error_line_and_exit_1(
    split, tmp_path, caplog, monkeypatch
) -> None:
    from bestie.stages import train_instance as stage

    monkeypatch.setattr(stage, "build_instance_net", lambda *args, **kwargs: NanNet())
    assert _train(split, tmp_path / "run" / "model.pt") == 1
    assert re.search(r"non-finite loss in iterations 1\.\.1: total=nan", caplog.text)
    assert not (tmp_path / "run" / "model.pt").exists()


def test_decode_rejects_nan_and_infinite_outputs() -> None:
    probability = torch.full((3, 8, 8), 1 / 3)
    center, offset = torch.zeros(2, 8, 8), torch.zeros(2, 8, 8)
    assert len(decode(probability, center, offset, DecodeConfig(min_area=1))) == 0
    probability[1, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="semantic_prob holds NaN or infinite values"):
        decode(probability, center, offset, DecodeConfig())
    offset[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="offset holds NaN or infinite values"):
        decode(torch.full((3, 8, 8), 1 / 3), center, offset, DecodeConfig())


def test_more_than_255_predictions_in_one_image_are_evaluated() -> None:
    # pycocotools' area() overflows a uint8 for more than 255 RLEs (an untrained network)
    mask = np.zeros((8, 8), bool)
    mask[2:5, 2:5] = True
    gt = {
        "images": [{"id": 1, "height": 8, "width": 8}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 0, "segmentation":
                         encode_mask(mask), "area": 9, "bbox": [2, 2, 3, 3], "iscrowd": 0}],
        "categories": [{"id": 0, "name": "a"}],
    }  # fmt: skip
    rle = encode_mask(mask)
    predictions = [
        {"image_id": 1, "category_id": 0, "segmentation": rle, "score": 0.9 - 0.001 * index}
        for index in range(300)
    ]  # the best is right, the other 299 are duplicates: AP 1
    assert evaluate_voc(gt, predictions, [0.5])[0.5]["map"] == pytest.approx(1.0)
