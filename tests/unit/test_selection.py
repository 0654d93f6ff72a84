"""Opt-in selection on held-out train images (instance.holdout): which images, which model."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from bestie import cli
from bestie.config import ConfigError
from bestie.engine.checkpoint import load_model
from bestie.experiments import Experiments
from bestie.selection import holdout_ids, select_best, subset_gt
from bestie.stages import train_instance as stage
from bestie.structures import ImageRecord
from tests.unit.test_kill_resume import CONFIG, make_inputs


def records(ids) -> list[ImageRecord]:
    return [ImageRecord(id=i, name=str(i), file="", height=8, width=8) for i in ids]


# sha1 of the decimal ids, in order: "4" 1b64..., "1" 356a..., "3" 77de..., "5" ac34...,
# "6" c1df..., "2" da4b...: the images are held out in the order 4, 1, 3, 5, 6, 2.


def test_holdout_takes_the_first_ids_by_hash_among_images_with_gt() -> None:
    assert holdout_ids(records(range(1, 7)), range(1, 7), 0.34) == {4, 1}  # round(2.04)
    assert holdout_ids(records(range(1, 7)), [2, 3, 5, 6], 0.5) == {3, 5}
    assert holdout_ids(records([6, 5, 4, 3, 2, 1]), range(1, 7), 0.34) == {4, 1}  # any order
    assert holdout_ids(records(range(1, 7)), range(1, 7), 0.01) == {4}  # at least one
    assert holdout_ids(records(range(1, 7)), range(1, 7), 0.0) == set()


def test_holdout_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match="instance.holdout.*ground truth"):
        holdout_ids(records(range(1, 4)), [], 0.2)
    with pytest.raises(ValueError, match=r"instance.holdout.*\[0, 1\)"):
        holdout_ids(records(range(1, 4)), range(1, 4), 1.0)
    with pytest.raises(ValueError, match="leaves none to train on"):
        holdout_ids(records([1, 2]), [1, 2], 0.9)


def test_select_best_takes_the_highest_and_the_later_of_equals() -> None:
    scores = [{"mAP50": 10.0}, {"mAP50": 30.0}, {"mAP50": None}, {"mAP50": 30.0}, {"mAP50": 5.0}]
    assert select_best(scores) == 3
    assert select_best([{"mAP50": None}, {"mAP50": None}]) == 1
    with pytest.raises(ValueError):
        select_best([])


def test_subset_gt_keeps_only_the_named_images() -> None:
    gt = {
        "images": [{"id": 1}, {"id": 2}],
        "annotations": [{"id": 1, "image_id": 1}, {"id": 2, "image_id": 2}],
        "categories": [{"id": 0, "name": "a"}],
    }
    subset = subset_gt(gt, {2})
    assert subset["images"] == [{"id": 2}]
    assert subset["annotations"] == [{"id": 2, "image_id": 2}]
    assert subset["categories"] == gt["categories"]


def test_config_checks_and_the_instance_key() -> None:
    with pytest.raises(ConfigError, match="instance.holdout.*snapshot_every"):
        Experiments({"instance": {"holdout": 0.1}})
    with pytest.raises(ConfigError, match="instance.holdout"):
        Experiments({"instance": {"holdout": 1.5, "snapshot_every": 10}})
    # Decoding concerns the instance network only when it selects on held-out images.
    grid = Experiments(
        {
            "instance": {"snapshot_every": 10},
            "experiments": {
                "a": {},
                "b": {"decode": {"threshold": 0.2}},
                "c": {"instance": {"holdout": 0.1}},
                "d": {"instance": {"holdout": 0.1}, "decode": {"threshold": 0.2}},
            },
        }
    )
    assert grid.key("a", "instance") == grid.key("b", "instance")
    assert "decode" not in json.loads(grid.stage_json("a", "instance"))
    assert grid.key("c", "instance") != grid.key("a", "instance")
    assert grid.key("c", "instance") != grid.key("d", "instance")


def test_training_leaves_the_holdout_out_and_keeps_the_best_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = make_inputs(tmp_path / "data")  # 6 synthetic images, ids 1..6, all with GT
    config = copy.deepcopy(CONFIG)
    config["instance"].update(iterations=6, snapshot_every=2, checkpoint_every=6, holdout=0.34)
    config["decode"] = {}
    trained_on: list[int] = []
    dataset_class = stage.InstanceDataset

    def spy(records, *args, **kwargs):
        trained_on.extend(record.id for record in records)
        return dataset_class(records, *args, **kwargs)

    monkeypatch.setattr(stage, "InstanceDataset", spy)
    torch.set_num_threads(1)
    out = tmp_path / "instance" / "model.pt"
    argv = ["train-instance", "--device", "cpu", "--config", json.dumps(config)]
    for option in ("records", "pseudo", "wsss", "gt"):
        argv += [f"--{option}", inputs[option]]
    assert cli.main([*argv, "--out", str(out)]) in (None, 0)

    assert sorted(trained_on) == [2, 3, 5, 6]
    state, metadata = load_model(out)
    selection = metadata["selection"]
    assert selection["holdout_images"] == [1, 4]
    assert [entry["iteration"] for entry in selection["scores"]] == [2, 4, 6]
    values = [entry["mAP50"] for entry in selection["scores"]]
    best = max(range(3), key=lambda i: (-1.0 if values[i] is None else values[i], i))
    assert selection["selected_iteration"] == 2 * (best + 1)
    # model.pt holds the selected weights: those of its snapshot file.
    snapshot, _ = load_model(out.parent / "snapshots" / f"iter_{2 * (best + 1):07d}.pt")
    for name, value in snapshot.items():
        assert torch.equal(value, state[name]), name
