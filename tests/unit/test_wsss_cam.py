"""The cam WSSS method: CAM label maps, multi-scale/flip CAMs, segnet retraining and resume."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bestie.cues import EPSILON, merge_flip, normalize_cams
from bestie.data.io import label_map_loader, read_label_map, write_label_map
from bestie.data.transforms import normalize_image
from bestie.engine.checkpoint import save_model
from bestie.engine.distributed import Process
from bestie.engine.segnet_trainer import (
    SegnetAugmentation,
    SegnetDataset,
    build_optimizer,
    segmentation_loss,
    train_segnet,
)
from bestie.models.classifier import Classifier, classifier_metadata
from bestie.models.semantic_net import build_semantic_net
from bestie.sections import WsssConfig
from bestie.stages import make_wsss
from bestie.stages import train_segnet as train_segnet_stage
from bestie.wsss_cam import (
    cam_label_map,
    cam_map_source,
    grabcut_refine,
    load_segnet,
    mark_boundaries,
    multiscale_cams,
    segnet_label_map,
)
from tests.unit.tiny_split import make_split
from tests.unit.training_helpers import crashing

CPU = Process(rank=0, world_size=1, device=torch.device("cpu"))

# --------------------------------------------------------------------------- label maps


def test_cam_label_map_threshold_is_inclusive_for_foreground() -> None:
    scores = np.array([[[0.25, 0.2499, 0.9, 0.0]]], np.float32)  # one class, 1x4
    assert cam_label_map(scores, [2], 0.25).tolist() == [[3, 0, 3, 0]]


def test_cam_label_map_argmax_over_label_classes_and_ties_to_the_lower_id() -> None:
    scores = np.zeros((2, 2, 3), np.float32)  # classes 1 and 4
    scores[0] = [[0.9, 0.3, 0.5], [0.1, 0.0, 0.2]]
    scores[1] = [[0.2, 0.8, 0.5], [0.1, 0.3, 0.24]]
    semantic = cam_label_map(scores, [1, 4], 0.25)
    # (0,2) ties at 0.5: class 1 wins; (1,0),(1,2) every score < 0.25: background
    assert semantic.tolist() == [[2, 5, 2], [0, 5, 0]]
    assert semantic.dtype == np.uint8


def test_cam_label_map_without_classes_is_background_and_checks_shapes() -> None:
    assert cam_label_map(np.zeros((0, 2, 3)), [], 0.25).tolist() == [[0, 0, 0]] * 2
    with pytest.raises(ValueError, match=r"\[2, H, W\] score maps"):
        cam_label_map(np.zeros((1, 2, 3)), [0, 1], 0.25)


def test_segnet_label_map_keeps_background_and_label_classes_only() -> None:
    probabilities = torch.zeros(4, 1, 3)  # background + classes 0, 1, 2
    probabilities[:, 0, 0] = torch.tensor([0.1, 0.2, 0.6, 0.1])  # absent class 1 wins overall
    probabilities[:, 0, 1] = torch.tensor([0.5, 0.1, 0.1, 0.3])
    probabilities[:, 0, 2] = torch.tensor([0.2, 0.1, 0.3, 0.4])
    assert segnet_label_map(probabilities, [0, 2]).tolist() == [[1, 0, 3]]
    assert segnet_label_map(probabilities, []).tolist() == [[0, 0, 0]]
    with pytest.raises(ValueError, match="exceed the net's 3 classes"):
        segnet_label_map(probabilities, [3])


def test_mark_boundaries_ignores_a_band_around_label_changes() -> None:
    semantic = np.zeros((1, 7), np.uint8)
    semantic[0, 3:] = 2
    assert mark_boundaries(semantic, 0).tolist() == semantic.tolist()
    assert mark_boundaries(semantic, 1).tolist() == [[0, 0, 255, 255, 2, 2, 2]]
    assert mark_boundaries(np.ones((3, 3), np.uint8), 2).tolist() == [[1] * 3] * 3
    with pytest.raises(ValueError, match="ignore_border"):
        mark_boundaries(semantic, -1)


# --------------------------------------------------------------------------- CAMs


def tiny_classifier(seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    return Classifier(3, width=1 / 32, pam_layers=[]).eval()


def test_multiscale_cams_average_the_normalised_views() -> None:
    model = tiny_classifier()
    image = np.random.default_rng(0).integers(0, 255, (20, 28, 3), dtype=np.uint8)
    classes, scales = [0, 2], [1.0, 0.5]
    cams = multiscale_cams(model, image, classes, scales, flip=True)
    views = []
    for scale, size in zip(scales, [(28, 20), (14, 10)], strict=True):
        resized = image if scale == 1.0 else cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        tensor = torch.from_numpy(normalize_image(resized))[None]
        with torch.no_grad():
            _, maps = model(torch.cat([tensor, tensor.flip(-1)]))
        normalised = normalize_cams(maps[:, classes], None, (20, 28))
        views.append(merge_flip(normalised[:1], normalised[1:])[0])
    expected = (views[0] + views[1]) / 2
    expected = expected / (expected.amax(dim=(1, 2), keepdim=True) + EPSILON)
    assert cams.shape == (2, 20, 28)
    assert torch.allclose(cams, expected, atol=1e-6)
    assert float(cams.min()) >= 0 and float(cams.max()) < 1


def test_flip_averaged_cams_are_mirror_equivariant() -> None:
    model = tiny_classifier(1)
    image = np.random.default_rng(1).integers(0, 255, (24, 24, 3), dtype=np.uint8)
    cams = multiscale_cams(model, image, [1], [1.0, 1.5], flip=True)
    mirrored = multiscale_cams(model, image[:, ::-1].copy(), [1], [1.0, 1.5], flip=True)
    assert torch.allclose(cams, mirrored.flip(-1), atol=1e-6)
    assert multiscale_cams(model, image, [], [1.0]).shape == (0, 24, 24)
    with pytest.raises(ValueError, match="exceed the classifier's 3 classes"):
        multiscale_cams(model, image, [3], [1.0])


# --------------------------------------------------------------------------- retraining

WSSS = {
    "backbone": "small",
    "crop": 32,
    "batch_size": 2,
    "iterations": 6,
    "lr": 1e-3,
    "optimizer": "adam",
    "weight_decay": 0.0,
    "head_lr_mult": 1.0,
    "scale_min": 0.8,
    "scale_max": 1.2,
    "checkpoint_every": 3,
    "log_every": 2,
    "workers": 0,
}


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory: pytest.TempPathFactory):
    """Six 32x40 images (square: class 0, bar: class 1) and masks equal to the objects."""
    folder = tmp_path_factory.mktemp("segnet")
    path, records = make_split(folder, [(32, 40)] * 6)
    masks = folder / "masks"
    for record in records:
        semantic = np.zeros((32, 40), np.uint8)
        if 0 in record.classes:
            semantic[4:14, 4:14] = 1
        if 1 in record.classes:
            semantic[24:28, 6:34] = 2
        write_label_map(masks / f"{record.name}.png", semantic)
    return path, records, masks


def make_dataset(tiny_split, cfg: WsssConfig, fail_at: int | None = None) -> SegnetDataset:
    _, records, masks = tiny_split

    Crashing = crashing(SegnetDataset, fail_at)
    return Crashing(
        records,
        label_map_loader(str(masks)),
        SegnetAugmentation(cfg.crop, cfg.scale_min, cfg.scale_max),
        seed=5,
        ignore_border=1,
    )


def train(tiny_split, output: Path, fail_at: int | None = None, **overrides):
    cfg = WsssConfig(**{**WSSS, **overrides})
    torch.manual_seed(0)
    model = build_semantic_net("small", 3)
    dataset = make_dataset(tiny_split, cfg, fail_at)
    trained = train_segnet(model, dataset, cfg, output, CPU, seed=5, key="k")
    return {name: value.clone() for name, value in trained.state_dict().items()}


def test_dataset_items_are_augmented_crops_with_ignored_padding(tiny_split) -> None:
    cfg = WsssConfig(**{**WSSS, "crop": 48, "scale_min": 1.0, "scale_max": 1.0})
    item = make_dataset(tiny_split, cfg)[(2, 0)]
    assert item["image"].shape == (3, 48, 48) and item["target"].shape == (48, 48)
    values = set(item["target"].unique().tolist())
    assert {0, 1, 2, 255} <= values <= {0, 1, 2, 255}
    assert int((item["target"] == 255).sum()) >= 48 * 48 - 32 * 40  # padding is ignored
    again = make_dataset(tiny_split, cfg)[(2, 0)]
    assert torch.equal(item["image"], again["image"])  # (seed, epoch, index) fixes the draw


def test_loss_ignores_255_and_is_zero_when_everything_is_ignored() -> None:
    logits = torch.zeros(1, 3, 2, 2, requires_grad=True)
    target = torch.tensor([[[0, 255], [255, 255]]])
    loss, accuracy, ignored = segmentation_loss(logits, target)
    assert loss.item() == pytest.approx(np.log(3)) and ignored.item() == 0.75
    assert accuracy.item() == 1.0  # argmax of equal logits is channel 0
    empty = segmentation_loss(logits, torch.full((1, 2, 2), 255))
    empty[0].backward()
    assert empty[0].item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_optimizer_groups_take_the_head_multiplier() -> None:
    model = build_semantic_net("small", 3)
    cfg = WsssConfig(optimizer="sgd", lr=0.01, head_lr_mult=10.0)
    optimizer = build_optimizer(model, cfg)
    assert isinstance(optimizer, torch.optim.SGD)
    assert [(g["name"], g["lr"]) for g in optimizer.param_groups] == [
        ("backbone", 0.01),
        ("head", pytest.approx(0.1)),
    ]
    count = sum(len(g["params"]) for g in optimizer.param_groups)
    assert count == len(list(model.parameters()))


def test_a_few_iterations_lower_the_loss(tiny_split, tmp_path: Path) -> None:
    train(tiny_split, tmp_path, iterations=12, log_every=4, checkpoint_every=12, lr=3e-3)
    losses = np.loadtxt(tmp_path / "train_log.csv", delimiter=",", skiprows=1, usecols=3)
    assert len(losses) == 3 and np.isfinite(losses).all()
    assert losses[-1] < losses[0]


def test_resumed_training_equals_uninterrupted(tiny_split, tmp_path: Path) -> None:
    reference = train(tiny_split, tmp_path / "a")
    # batches of 2: the 9th item load is iteration 5, after the checkpoint at iteration 3
    with pytest.raises(RuntimeError, match="simulated kill"):
        train(tiny_split, tmp_path / "b", fail_at=9)
    assert (tmp_path / "b/checkpoints/last.pt").is_file()
    resumed = train(tiny_split, tmp_path / "b")
    for name, value in reference.items():
        assert torch.equal(value, resumed[name]), name
    log = (tmp_path / "b/train_log.csv").read_text().splitlines()
    assert log[0].startswith("iteration,epoch,lr,loss") and len(log) == 4
    assert [row.split(",")[0] for row in log[1:]] == ["2", "4", "6"]


# --------------------------------------------------------------------------- stages


def run_make_wsss(records: Path, out: Path, wsss: dict, classifier: str, segnet: str) -> None:
    make_wsss.run(
        argparse.Namespace(
            config=json.dumps({"wsss": wsss}),
            records=str(records),
            gt="",
            out=str(out),
            classifier=classifier,
            segnet=segnet,
            shard=0,
            num_shards=1,
        )
    )


def test_stages_make_cam_masks_train_segnet_and_predict(tiny_split, tmp_path: Path) -> None:
    records_path, records, _ = tiny_split
    classifier = tmp_path / "cam.pt"
    save_model(classifier, tiny_classifier(), classifier_metadata(tiny_classifier()))
    cam = {"method": "cam", "scales": [1.0, 0.5], "retrain": False}
    run_make_wsss(records_path, tmp_path / "cam", cam, str(classifier), "")
    for record in records:  # only image-label classes (empty label: all background)
        values = set(np.unique(read_label_map(tmp_path / f"cam/{record.name}.png")).tolist())
        assert values <= {0, *(c + 1 for c in record.classes)}, record.name
    config = json.dumps({"wsss": {**WSSS, "iterations": 2}, "seed": 1})
    train_segnet_stage.run(
        argparse.Namespace(
            config=config,
            records=str(records_path),
            masks=str(tmp_path / "cam"),
            output_dir=str(tmp_path / "segnet"),
            device="cpu",
            threads=0,
        )
    )
    model, metadata = load_segnet(str(tmp_path / "segnet/model.pt"))
    assert metadata["backbone"] == "small" and metadata["num_classes_with_bg"] == 3
    assert (tmp_path / "segnet/checkpoints/last.pt").is_file()
    retrain = {**cam, "retrain": True, "backbone": "small"}
    run_make_wsss(records_path, tmp_path / "final", retrain, str(classifier), "")
    raw = read_label_map(tmp_path / f"final/{records[0].name}.png")  # no segnet: raw CAM
    assert np.array_equal(raw, read_label_map(tmp_path / f"cam/{records[0].name}.png"))
    source = cam_map_source(
        type("Cfg", (), {"wsss": WsssConfig(**retrain)})(),
        argparse.Namespace(classifier=str(classifier), segnet=str(tmp_path / "segnet/model.pt")),
    )
    for record in records:
        semantic = source(record)
        assert semantic.shape == (32, 40)
        assert set(np.unique(semantic).tolist()) <= {0, *(c + 1 for c in record.classes)}


def test_cam_source_without_classifier_is_an_error() -> None:
    cfg = type("Cfg", (), {"wsss": WsssConfig(retrain=False)})()
    with pytest.raises(ValueError, match="no CAM classifier"):
        cam_map_source(cfg, argparse.Namespace(classifier="", segnet=""))


def test_grabcut_snaps_overflowing_cam_masks_to_the_objects() -> None:
    rng = np.random.default_rng(0)
    image = np.empty((48, 64, 3), np.uint8)
    image[:] = (40, 60, 200)  # blue background
    image[8:24, 8:24] = (220, 30, 30)  # red square: class 0
    image[28:44, 40:56] = (30, 200, 40)  # green square: class 1
    image = np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)
    labels = np.zeros((48, 64), np.uint8)
    labels[4:28, 4:28] = 1  # the CAM masks overflow each square by 4 pixels
    labels[24:48, 36:60] = 2
    expected = np.zeros_like(labels)
    expected[8:24, 8:24] = 1
    expected[28:44, 40:56] = 2
    np.testing.assert_array_equal(grabcut_refine(image, labels, 3), expected)
    assert grabcut_refine(image, labels, 0) is labels  # off
    single = np.zeros_like(labels)
    single[0, 0] = 1  # too small for colour models: kept as it is
    np.testing.assert_array_equal(grabcut_refine(image, single, 3), single)
