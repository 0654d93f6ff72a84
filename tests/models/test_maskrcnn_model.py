"""Mask R-CNN model: torchvision's architecture, local weights (loudly), prediction format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import resnet50
from torchvision.models.detection import maskrcnn_resnet50_fpn
from torchvision.ops import FrozenBatchNorm2d

from bestie.models.maskrcnn import (
    build_maskrcnn,
    maskrcnn_metadata,
    predict_instances,
    rebuild_maskrcnn,
)

SMALL = {"min_size": 64, "max_size": 64, "anchor_sizes": [8, 16, 32, 64, 128]}


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return build_maskrcnn(3, **SMALL)


def test_same_state_dict_as_torchvision_maskrcnn_resnet50_fpn(model: nn.Module) -> None:
    reference = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=4)
    ours = model.state_dict()
    assert {k: v.shape for k, v in ours.items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }
    assert model.roi_heads.box_predictor.cls_score.out_features == 4  # C + background
    assert model.rpn.anchor_generator.sizes == ((8,), (16,), (32,), (64,), (128,))
    assert all(p.requires_grad for p in model.parameters())  # random init: all stages train


def test_asked_for_weights_must_exist(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="maskrcnn.weights"):
        build_maskrcnn(3, weights=str(tmp_path / "missing.pth"))
    with pytest.raises(FileNotFoundError, match="maskrcnn.backbone_weights"):
        build_maskrcnn(3, backbone_weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="not both"):
        build_maskrcnn(3, weights="a.pth", backbone_weights="b.pth")
    with pytest.raises(ValueError, match="anchor_sizes"):
        build_maskrcnn(3, anchor_sizes=[8, 16, 32])


def test_full_weights_load_and_class_heads_are_replaced(model: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "coco.pth"
    torch.manual_seed(1)
    torch.save(build_maskrcnn(7, **SMALL).state_dict(), path)  # another class count
    loaded = build_maskrcnn(3, weights=str(path), **SMALL)
    source = torch.load(path, weights_only=True)
    state = loaded.state_dict()
    assert torch.equal(
        state["backbone.body.layer4.2.conv3.weight"], source["backbone.body.layer4.2.conv3.weight"]
    )
    assert torch.equal(state["rpn.head.conv.0.0.weight"], source["rpn.head.conv.0.0.weight"])
    assert state["roi_heads.box_predictor.cls_score.weight"].shape == (4, 1024)
    assert state["roi_heads.mask_predictor.mask_fcn_logits.weight"].shape[0] == 4
    # starting from weights: frozen BatchNorm, conv1 and layer1 frozen (3 trainable stages)
    assert isinstance(loaded.backbone.body.bn1, FrozenBatchNorm2d)
    assert not loaded.backbone.body.layer1[0].conv1.weight.requires_grad
    assert loaded.backbone.body.layer2[0].conv1.weight.requires_grad


def test_backbone_weights_load_into_the_resnet(tmp_path: Path) -> None:
    torch.manual_seed(2)
    resnet = resnet50(weights=None).state_dict()
    part = {k: v for k, v in resnet.items() if k.startswith(("conv1.", "bn1.", "layer1.", "fc."))}
    torch.save(part, tmp_path / "resnet50.pth")
    loaded = build_maskrcnn(3, backbone_weights=str(tmp_path / "resnet50.pth"), **SMALL)
    body = loaded.backbone.body.state_dict()
    assert torch.equal(body["conv1.weight"], part["conv1.weight"])
    assert torch.equal(body["layer1.0.bn1.running_var"], part["layer1.0.bn1.running_var"])
    with pytest.raises(ValueError, match="none of the"):
        torch.save({"unrelated.weight": torch.zeros(3)}, tmp_path / "bad.pth")
        build_maskrcnn(3, backbone_weights=str(tmp_path / "bad.pth"))


def test_predictions_are_instances_at_the_image_size(model: nn.Module) -> None:
    image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    model.roi_heads.score_thresh = 0.0
    instances = predict_instances(model, image, torch.device("cpu"))
    assert len(instances) > 0 and instances.masks.shape[1:] == (40, 50)
    assert instances.masks.dtype == bool and instances.masks.any(axis=(1, 2)).all()
    assert set(instances.labels.tolist()) <= {0, 1, 2} and instances.scores.dtype == np.float32
    model.roi_heads.score_thresh = 1.1  # nothing passes: zero instances, not an error
    empty = predict_instances(model, image, torch.device("cpu"))
    assert len(empty) == 0 and empty.masks.shape == (0, 40, 50) and empty.scores is not None
    model.roi_heads.score_thresh = 0.05


def test_model_file_metadata_rebuilds_the_model(model: nn.Module) -> None:
    metadata = maskrcnn_metadata(model, ["a", "b", "c"], source="pseudo")
    assert metadata["anchor_sizes"] == [8, 16, 32, 64, 128] and not metadata["frozen_bn"]
    assert metadata["min_size"] == 64 and metadata["source"] == "pseudo"
    rebuilt = rebuild_maskrcnn(model.state_dict(), metadata)
    for name, value in model.state_dict().items():
        assert torch.equal(value, rebuilt.state_dict()[name]), name


@pytest.mark.parametrize("backbone", ["resnet18", "resnet34"])
def test_small_backbones_round_trip_through_the_model_file(backbone: str) -> None:
    small = build_maskrcnn(2, backbone=backbone, min_size=64, max_size=64)
    metadata = maskrcnn_metadata(small, ["a", "b"])
    assert metadata["backbone"] == backbone
    rebuilt = rebuild_maskrcnn(small.state_dict(), metadata)
    assert rebuilt.state_dict().keys() == small.state_dict().keys()
    # ResNet-18/34 end in 512 channels, ResNet-50 in 2048: the FPN's last inner conv shows it
    inner = rebuilt.backbone.fpn.inner_blocks[-1][0].weight
    assert inner.shape[1] == 512


def test_unknown_backbone_names_the_config_key() -> None:
    with pytest.raises(ValueError, match="maskrcnn.backbone"):
        build_maskrcnn(2, backbone="vgg16")


def test_a_narrow_fpn_shrinks_every_head_and_round_trips() -> None:
    torch.manual_seed(0)
    narrow = build_maskrcnn(2, backbone="resnet18", fpn_channels=32, **SMALL)
    state = narrow.state_dict()
    assert state.keys() == build_maskrcnn(2, backbone="resnet18", **SMALL).state_dict().keys()
    assert state["backbone.fpn.layer_blocks.0.0.weight"].shape == (32, 32, 3, 3)
    assert state["rpn.head.conv.0.0.weight"].shape == (32, 32, 3, 3)
    assert state["roi_heads.box_head.fc6.weight"].shape == (128, 32 * 7 * 7)
    assert state["roi_heads.box_predictor.cls_score.weight"].shape == (3, 128)
    assert state["roi_heads.mask_head.0.0.weight"].shape == (32, 32, 3, 3)
    assert state["roi_heads.mask_predictor.mask_fcn_logits.weight"].shape == (3, 32, 1, 1)
    metadata = maskrcnn_metadata(narrow, ["a", "b"])
    assert metadata["fpn_channels"] == 32
    rebuilt = rebuild_maskrcnn(state, metadata)
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    narrow.roi_heads.score_thresh = rebuilt.roi_heads.score_thresh = 0.0
    first = predict_instances(narrow, image, torch.device("cpu"))
    second = predict_instances(rebuilt, image, torch.device("cpu"))
    assert len(first) > 0 and np.array_equal(first.masks, second.masks)
    with pytest.raises(ValueError, match="maskrcnn.fpn_channels"):
        build_maskrcnn(2, fpn_channels=0)
