"""WSSS semantic network: shapes, a training step and ImageNet weight loading."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from bestie.models.semantic_net import build_semantic_net


@pytest.mark.parametrize(
    "backbone", ["small", "resnet50", pytest.param("resnet101", marks=pytest.mark.slow)]
)
def test_logits_at_input_size(backbone):
    net = build_semantic_net(backbone, 4).eval()
    with torch.no_grad():
        logits = net(torch.randn(2, 3, 65, 70))
    assert logits.shape == (2, 4, 65, 70)
    assert torch.isfinite(logits).all()


def test_small_training_step_lowers_the_loss():
    torch.manual_seed(0)
    net = build_semantic_net("small", 3)
    images = torch.randn(4, 3, 64, 64)
    target = torch.randint(0, 3, (4, 64, 64))
    target[:, :8] = 255
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        torch.manual_seed(7)  # the same dropout mask at every step
        loss = F.cross_entropy(net(images), target, ignore_index=255)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_resnet_imagenet_weights_round_trip(tmp_path):
    torch.manual_seed(2)
    state = torchvision.models.resnet50(weights=None).state_dict()
    path = tmp_path / "resnet50-19c8e357.pth"
    torch.save(state, path)
    net = build_semantic_net("resnet50", 21, weights=str(path))
    loaded = net.backbone.state_dict()
    assert len(loaded) == len(state) - 2  # everything but fc.weight, fc.bias
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key


def test_missing_and_mismatched_weights_are_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="wsss.weights"):
        build_semantic_net("small", 4, weights=str(tmp_path / "missing.pth"))
    path = tmp_path / "vgg.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, path)
    with pytest.raises(ValueError, match="wsss.weights"):
        build_semantic_net("small", 4, weights=str(path))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_semantic_net("hrnet_w48", 21)
    with pytest.raises(ValueError, match="num_classes_with_bg"):
        build_semantic_net("small", 1)
