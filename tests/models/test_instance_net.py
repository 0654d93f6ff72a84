"""Instance network (SPEC §3): shapes, parameter counts, training step, weight loading."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision

from bestie.losses import instance_losses
from bestie.models.backbones import build_backbone
from bestie.models.instance_net import build_instance_net
from bestie.sections import LossConfig

NUM_CLASSES = 20


def _check_outputs(outputs: dict, batch: int, height: int, width: int) -> None:
    assert set(outputs) == {"seg", "center", "offset"}
    assert outputs["seg"].shape == (batch, NUM_CLASSES + 1, height, width)
    assert outputs["center"].shape == (batch, NUM_CLASSES, height, width)
    assert outputs["offset"].shape == (batch, 2, height, width)
    assert all(torch.isfinite(value).all() for value in outputs.values())


@pytest.mark.parametrize(
    ("backbone", "millions"),
    [
        ("small", (1.0, 3.0)),
        ("resnet50", (55.0, 55.6)),  # SPEC §3.2: 55.3 M
        pytest.param("resnet101", (74.0, 74.6), marks=pytest.mark.slow),
        ("hrnet_w32", (28.6, 29.0)),  # SPEC §3.1: 28.8 M
        pytest.param("hrnet_w48", (63.7, 64.1), marks=pytest.mark.slow),  # SPEC §3.1: 63.9 M
    ],
)
def test_forward_shapes_and_parameter_count(backbone, millions):
    torch.manual_seed(0)
    net = build_instance_net(backbone, NUM_CLASSES).eval()
    count = sum(parameter.numel() for parameter in net.parameters()) / 1e6
    assert millions[0] < count < millions[1]
    with torch.no_grad():
        _check_outputs(net(torch.randn(1, 3, 64, 64)), 1, 64, 64)
        _check_outputs(net(torch.randn(1, 3, 64, 64), target_shape=(50, 70)), 1, 50, 70)


@pytest.mark.parametrize(
    ("name", "channels"),
    [("hrnet_w32", 32), pytest.param("hrnet_w48", 48, marks=pytest.mark.slow)],
)
def test_hrnet_returns_raw_stride4_branch(name, channels):
    backbone = build_backbone(name).eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 64, 96))
    assert features.shape == (1, channels, 16, 24)
    # The last module fuses into the highest-resolution branch only (pose-HRNet style).
    assert len(backbone.net.stage4[-1].fuse_layers) == 1


def test_odd_input_size_and_batch():
    net = build_instance_net("small", NUM_CLASSES).eval()
    with torch.no_grad():
        _check_outputs(net(torch.randn(3, 3, 70, 90)), 3, 70, 90)


@pytest.mark.parametrize("backbone", ["small", "hrnet_w32"])
def test_every_parameter_gets_a_gradient(backbone):
    # DDP without find_unused_parameters needs every parameter in the graph.
    net = build_instance_net(backbone, 3)
    outputs = net(torch.randn(2, 3, 32, 32))
    sum(value.float().square().mean() for value in outputs.values()).backward()
    unused = [name for name, parameter in net.named_parameters() if parameter.grad is None]
    assert unused == []


def _fixed_batch(num_classes: int = 3, size: int = 64):
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(4, 3, size, size, generator=generator)
    weight = torch.zeros(4, size, size)
    weight[:, 16:48, 16:48] = 1.0
    pseudo = {
        "center": torch.rand(4, num_classes, size, size, generator=generator),
        "offset": torch.randn(4, 2, size, size, generator=generator) * 5,
        "weight": weight,
    }
    semantic = torch.randint(0, num_classes + 1, (4, size, size), generator=generator)
    return images, pseudo, semantic


def test_one_training_step_lowers_the_loss():
    torch.manual_seed(0)
    net = build_instance_net("small", 3)
    images, pseudo, semantic = _fixed_batch()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    cfg = LossConfig()
    losses = []
    for _ in range(3):
        torch.manual_seed(123)  # the same dropout mask at every step
        total = instance_losses(net(images), pseudo, pseudo, semantic, cfg)["total"]
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(total.item())
    assert losses[-1] < losses[0]


def test_channels_last_and_autocast():
    net = build_instance_net("small", NUM_CLASSES).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = net(images)
        last = net.to(memory_format=torch.channels_last)(
            images.contiguous(memory_format=torch.channels_last)
        )
        for key in reference:
            torch.testing.assert_close(last[key], reference[key], rtol=1e-4, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = net(images)
    _check_outputs(mixed, 2, 64, 64)
    assert mixed["seg"].dtype == torch.bfloat16


def test_resnet_imagenet_weights_round_trip(tmp_path):
    torch.manual_seed(3)
    imagenet = torchvision.models.resnet50(weights=None)
    state = imagenet.state_dict()
    path = tmp_path / "resnet50.pth"
    # A DDP-style checkpoint: wrapped and prefixed; both are stripped on load.
    torch.save({"state_dict": {f"module.{key}": value for key, value in state.items()}}, path)
    net = build_instance_net("resnet50", NUM_CLASSES, weights=str(path))
    loaded = net.backbone.state_dict()
    for key, value in loaded.items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, state[key]), key
    assert net.backbone.bn1.momentum == 0.01


def test_hrnet_timm_weights_round_trip(tmp_path):
    torch.manual_seed(4)
    # timm's classification model, as its ImageNet file is laid out (head keys unused).
    state = timm.create_model("hrnet_w32", pretrained=False).state_dict()
    path = tmp_path / "hrnet_w32.pth"
    torch.save(state, path)
    net = build_instance_net("hrnet_w32", NUM_CLASSES, weights=str(path))
    loaded = net.backbone.net.state_dict()
    assert len(loaded) > 1000
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key


def test_small_weights_round_trip(tmp_path):
    torch.manual_seed(5)
    source = build_instance_net("small", NUM_CLASSES)
    path = tmp_path / "small.pth"
    torch.save({"model": source.backbone.state_dict(), "epoch": 3}, path)
    net = build_instance_net("small", NUM_CLASSES, weights=str(path))
    for key, value in net.backbone.state_dict().items():
        assert torch.equal(value, source.backbone.state_dict()[key]), key


def test_missing_weights_file_is_an_error(tmp_path):
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(FileNotFoundError, match="instance.weights") as error:
        build_instance_net("small", NUM_CLASSES, weights=str(missing))
    assert str(missing) in str(error.value)


def test_weights_matching_nothing_are_an_error(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.conv.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(ValueError, match="instance.weights.*none of the 1 tensors"):
        build_instance_net("small", NUM_CLASSES, weights=str(path))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_instance_net("vgg16", NUM_CLASSES)
    with pytest.raises(ValueError, match="num_classes"):
        build_instance_net("small", 0)
