"""Mask R-CNN stage: pseudo-GT export, empty-image policies, training, resume, prediction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bestie import cli
from bestie.artifacts import (
    annotations_by_image,
    decode_mask,
    instances_to_results,
    mask_to_bbox,
    write_json,
    write_records,
)
from bestie.config import from_dict
from bestie.data.maskrcnn_dataset import (
    MaskRcnnDataset,
    ground_truth_instances,
    predictions_to_ground_truth,
    target_from_instances,
    training_records,
)
from bestie.data.synthetic import generate_split
from bestie.engine.distributed import Process, cleanup
from bestie.engine.maskrcnn_trainer import TERMS, train_maskrcnn, warmup_step_factor
from bestie.experiments import Experiments
from bestie.models.maskrcnn import build_maskrcnn
from bestie.sections import MaskRcnnConfig, SyntheticConfig
from bestie.structures import ImageRecord, Instances
from tests.unit.training_helpers import (
    assert_replicas_equal,
    crashing,
    join_cpu_group,
    run_two_processes,
)

CPU = Process(0, 1, torch.device("cpu"))
TINY = {  # 48x64 images: no resize
    "min_size": 48,
    "max_size": 64,
    "anchor_sizes": [8, 16, 32, 64, 128],
    "roi_batch_size": 32,
    "batch_size": 2,
    "iterations": 4,
    "lr": 0.002,
    "warmup_iterations": 2,
    "lr_steps": [3],
    "clip_grad_norm": 10.0,
    "checkpoint_every": 2,
    "log_every": 2,
    "workers": 0,
}


def _record(image_id: int, height: int = 20, width: int = 30) -> ImageRecord:
    return ImageRecord(image_id, f"img_{image_id}", f"/none/{image_id}.png", height, width, (0,))


def _mask(rows: slice, cols: slice, shape=(20, 30)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[rows, cols] = True
    return mask


# ----------------------------------------------------------------------------- pseudo GT
def test_pseudo_gt_keeps_confident_nonempty_predictions_with_boxes_from_masks() -> None:
    records = [_record(1), _record(2), _record(3)]  # image 3 has no prediction at all
    masks = [_mask(slice(2, 8), slice(3, 10)), _mask(slice(10, 19), slice(0, 5))]
    predictions = instances_to_results(Instances(np.stack(masks), [0, 2], [0.9, 0.5]), 1)
    predictions += instances_to_results(Instances(np.stack(masks), [1, 1], [0.49, 0.1]), 2)
    empty = np.zeros((1, 20, 30), bool)
    predictions += instances_to_results(Instances(empty, [0], [0.95]), 2)
    coco, counts = predictions_to_ground_truth(
        predictions, records, ["a", "b", "c"], score_threshold=0.5
    )
    assert counts == {
        "predictions": 5,
        "kept": 2,
        "below_threshold": 2,
        "empty": 1,
        "images_without_instances": 2,
    }
    annotations = coco["annotations"]
    assert [a["id"] for a in annotations] == [1, 2]
    assert [a["category_id"] for a in annotations] == [0, 2]
    for annotation, mask in zip(annotations, masks, strict=True):
        assert np.array_equal(decode_mask(annotation["segmentation"]), mask)
        assert annotation["bbox"] == mask_to_bbox(mask)
        assert annotation["area"] == int(mask.sum()) and annotation["iscrowd"] == 0
        assert "score" not in annotation
    assert annotations[0]["bbox"] == [3.0, 2.0, 7.0, 6.0]
    assert [image["id"] for image in coco["images"]] == [1, 2, 3]
    assert [c["name"] for c in coco["categories"]] == ["a", "b", "c"]
    # round trip through JSON and back into per-image instances
    loaded = ground_truth_instances(json.loads(json.dumps(coco)), records)
    assert [len(loaded[i]) for i in (1, 2, 3)] == [2, 0, 0]


def test_export_stage_writes_the_pseudo_gt_file(tmp_path: Path) -> None:
    records = [_record(1)]
    write_records(tmp_path / "train.json", records, ["a"], dataset="synthetic", split="train")
    masks = np.stack([_mask(slice(2, 8), slice(3, 10))] * 2)
    write_json(
        tmp_path / "pred.json", instances_to_results(Instances(masks, [0, 0], [0.8, 0.2]), 1)
    )
    config = json.dumps({"maskrcnn": {"pseudo_score_threshold": 0.3}, "seed": 0})
    argv = ["export-pseudo-gt", "--config", config, "--records", str(tmp_path / "train.json")]
    argv += ["--predictions", str(tmp_path / "pred.json"), "--out", str(tmp_path / "gt.json")]
    assert cli.main(argv) == 0
    gt = json.loads((tmp_path / "gt.json").read_text())
    assert len(gt["annotations"]) == 1 and gt["annotations"][0]["bbox"] == [3.0, 2.0, 7.0, 6.0]


def test_empty_images_are_skipped_or_kept_as_negatives() -> None:
    records = [_record(1), _record(2)]
    instances = {
        1: Instances(_mask(slice(2, 8), slice(3, 10))[None], [0]),
        2: Instances.empty(20, 30),
    }
    assert training_records(records, instances, "skip") == records[:1]
    assert training_records(records, instances, "negative") == records
    nothing = {1: Instances.empty(20, 30), 2: Instances.empty(20, 30)}
    for policy in ("skip", "negative"):
        with pytest.raises(ValueError, match="no training image has an instance"):
            training_records(records, nothing, policy)
    target = target_from_instances(instances[2])
    assert target["boxes"].shape == (0, 4) and target["masks"].shape == (0, 20, 30)
    box = target_from_instances(instances[1])["boxes"]
    assert box.tolist() == [[3.0, 2.0, 10.0, 8.0]]  # (x1, y1, x2, y2), x2 exclusive


def test_flip_moves_image_boxes_and_masks_together() -> None:
    record = _record(1)
    image = np.zeros((20, 30, 3), np.uint8)
    image[2:8, 3:10] = 255
    instances = {1: Instances(_mask(slice(2, 8), slice(3, 10))[None], [1])}
    dataset = MaskRcnnDataset([record], instances, flip=True, image_loader=lambda _: image)
    flipped = [dataset[(0, epoch)] for epoch in range(8)]
    boxes = {tuple(target["boxes"][0].tolist()) for _, target in flipped}
    assert boxes == {(3.0, 2.0, 10.0, 8.0), (20.0, 2.0, 27.0, 8.0)}
    for tensor, target in flipped:
        assert torch.equal(tensor[0] > 0.5, target["masks"][0].bool())
        assert target["labels"].tolist() == [2]  # class 1 -> label 2 (0 is background)
    assert torch.equal(dataset[(0, 3)][0], dataset[(0, 3)][0])  # deterministic per key


def test_warmup_then_steps() -> None:
    factor = dict(warmup=4, warmup_factor=0.001, milestones=[6, 8], gamma=0.1)
    assert warmup_step_factor(0, **factor) == pytest.approx(0.001)
    assert warmup_step_factor(2, **factor) == pytest.approx(0.5005)
    assert [warmup_step_factor(k, **factor) for k in (4, 5)] == [1.0, 1.0]
    assert warmup_step_factor(6, **factor) == pytest.approx(0.1)
    assert warmup_step_factor(9, **factor) == pytest.approx(0.01)


def test_only_the_oracle_reads_ground_truth_and_it_skips_the_instance_network() -> None:
    experiments = Experiments(
        {
            "experiments": {
                "bestie": {},
                "low_decode": {"decode": {"threshold": 0.2}},
                "oracle": {"maskrcnn": {"source": "gt"}},
                "oracle_low_decode": {"maskrcnn": {"source": "gt"}, "decode": {"threshold": 0.2}},
            }
        }
    )
    assert experiments.inputs("bestie", "maskrcnn") == ["dataset", "instance", "predict"]
    assert experiments.inputs("oracle", "maskrcnn") == ["dataset"]
    # the pseudo GT follows the instance predictions; the oracle does not
    assert experiments.owner("low_decode", "maskrcnn") == "low_decode"
    assert experiments.owner("oracle", "maskrcnn") == "oracle"
    assert experiments.owner("oracle_low_decode", "maskrcnn") == "oracle"


# ----------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("maskrcnn")
    config = SyntheticConfig(num_train=4, height=48, width=64, min_size=14, max_size=20)
    records, categories, gt = generate_split(config, "train", str(folder))
    return folder, records, categories, gt


def _train(
    tiny_data, output: Path, fail_at: int | None = None, process: Process = CPU, **overrides
) -> nn.Module:
    _, records, categories, gt = tiny_data
    cfg = from_dict(MaskRcnnConfig, {**TINY, **overrides})
    instances = annotations_by_image(gt["annotations"], records)
    instances[records[0].id] = Instances.empty(48, 64)  # an image without pseudo GT
    chosen = training_records(records, instances, cfg.empty_policy)

    Crashing = crashing(MaskRcnnDataset, fail_at)
    torch.manual_seed(0)
    model = build_maskrcnn(
        len(categories),
        min_size=cfg.min_size,
        max_size=cfg.max_size,
        anchor_sizes=cfg.anchor_sizes,
        roi_batch_size=cfg.roi_batch_size,
    )
    dataset = Crashing(chosen, instances, seed=1)
    return train_maskrcnn(cfg, model, dataset, output, process, seed=1, key="k")


def test_resumed_training_equals_uninterrupted(tiny_data, tmp_path: Path) -> None:
    reference = {k: v.clone() for k, v in _train(tiny_data, tmp_path / "a").state_dict().items()}
    # batches of 2: the 7th item load is iteration 4, after the checkpoint at iteration 2
    with pytest.raises(RuntimeError, match="simulated kill"):
        _train(tiny_data, tmp_path / "b", fail_at=7)
    assert (tmp_path / "b/checkpoints/last.pt").is_file()
    resumed = _train(tiny_data, tmp_path / "b").state_dict()
    for name, value in reference.items():
        assert torch.equal(value, resumed[name]), name
    log = (tmp_path / "b/train_log.csv").read_text().splitlines()
    assert log[0] == "iteration,epoch,lr," + ",".join(TERMS) + ",seconds_per_iteration"
    assert [row.split(",")[0] for row in log[1:]] == ["2", "4"]


def test_negative_policy_trains_on_an_image_without_instances(tiny_data, tmp_path: Path) -> None:
    # 4 images in batches of 2: the 2 iterations see every image, the empty one included
    model = _train(tiny_data, tmp_path, empty_policy="negative", iterations=2, flip=False)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    rows = (tmp_path / "train_log.csv").read_text().splitlines()
    assert len(rows) == 2 and all(np.isfinite(float(v)) for v in rows[1].split(",")[3:])


class _NanLosses(nn.Module):
    """A stand-in detector whose mask loss turns NaN at the second call."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))
        self.calls = 0

    def forward(self, images, targets):
        self.calls += 1
        losses = {name: self.weight * 1.0 for name in TERMS[1:]}
        if self.calls == 2:
            losses["loss_mask"] = self.weight * float("nan")
        return losses


def test_non_finite_loss_is_a_clear_error(tmp_path: Path) -> None:
    cfg = from_dict(MaskRcnnConfig, {**TINY, "batch_size": 1})
    item = (torch.zeros(3, 4, 4), {"boxes": torch.zeros(0, 4)})
    dataset = {(index, epoch): item for index in range(2) for epoch in range(2)}
    dataset = type("Items", (), {"__getitem__": dataset.__getitem__, "__len__": lambda _: 2})()
    with pytest.raises(FloatingPointError, match=r"iterations 1\.\.2: .*loss_mask=nan"):
        train_maskrcnn(cfg, _NanLosses(), dataset, tmp_path, CPU, seed=0, key="k")


# ----------------------------------------------------------------------------- stages
def test_stages_train_and_predict_masks_at_the_original_size(tiny_data, tmp_path: Path) -> None:
    folder, records, categories, gt = tiny_data
    records_path = tmp_path / "train.json"
    write_records(records_path, records, categories, dataset="synthetic", split="train")
    write_json(tmp_path / "gt.json", gt)
    config = json.dumps({"maskrcnn": {**TINY, "iterations": 2, "source": "gt"}, "seed": 0})
    model = tmp_path / "maskrcnn" / "model.pt"
    train = ["train-maskrcnn", "--config", config, "--records", str(records_path)]
    train += ["--annotations", str(tmp_path / "gt.json"), "--out", str(model), "--device", "cpu"]
    assert cli.main(train) == 0
    assert (tmp_path / "maskrcnn/train_log.csv").is_file()
    predictions = tmp_path / "pred.json"
    predict = ["predict-maskrcnn", "--model", str(model), "--records", str(records_path)]
    predict += ["--out", str(predictions), "--device", "cpu", "--shard", "1", "--num-shards", "2"]
    assert cli.main(predict) == 0
    results = json.loads(predictions.read_text())
    assert isinstance(results, list) and results
    for entry in results:
        assert entry["image_id"] in (records[1].id, records[3].id)
        assert 0 <= entry["category_id"] < len(categories) and 0.0 <= entry["score"] <= 1.0
        assert decode_mask(entry["segmentation"]).shape == (48, 64)


# ----------------------------------------------------------------------------- devices
def _ddp_worker(rank: int, port: int, tiny_data, output: str) -> None:
    process = join_cpu_group(rank, port)
    try:
        model = _train(tiny_data, Path(output), process=process, iterations=2)
        torch.save(model.state_dict(), Path(output) / f"rank{rank}.pt")
    finally:
        cleanup(process)


@pytest.mark.slow
def test_two_process_ddp_on_cpu_keeps_replicas_equal(tiny_data, tmp_path: Path) -> None:
    run_two_processes(_ddp_worker, (tiny_data,), tmp_path, timeout=600)
    assert_replicas_equal(tmp_path)


@pytest.mark.gpu
def test_cuda_training_with_amp(tiny_data, tmp_path: Path) -> None:
    process = Process(0, 1, torch.device("cuda"))
    model = _train(tiny_data, tmp_path, process=process, iterations=2, amp=True)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert next(model.parameters()).is_cuda
