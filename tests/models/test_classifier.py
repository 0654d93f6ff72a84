"""The CAM/PAM classifier: PAM rule, shapes, parameter groups, one step, weights, the stage."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
import torch.nn.functional as F

from bestie.artifacts import read_json
from bestie.data.classification import TrainTransform
from bestie.engine.checkpoint import load_model
from bestie.engine.classifier_trainer import make_optimizer, make_scheduler, multilabel_f1
from bestie.models.classifier import (
    PAM,
    Classifier,
    build_classifier,
    classifier_from_metadata,
    classifier_metadata,
    load_classifier,
    load_imagenet_trunk,
    parameter_groups,
    set_pam_alpha,
)
from bestie.sections import ClassifierConfig
from bestie.stages import train_classifier as stage
from tests.unit.tiny_split import make_split

TINY = 0.0625  # 4..32 channels


def test_pam_keeps_exactly_alpha_times_max_and_zeroes_below() -> None:
    # alpha 0.5 and powers of two: alpha * max = 1.0 exactly.
    x = torch.tensor([2.0, 1.0, 0.999, -3.0, 1.5]).view(1, 1, 1, 5)
    out = PAM(0.5)(x)
    assert out.flatten().tolist() == [2.0, 1.0, 0.0, 0.0, 1.5]


def test_pam_is_per_sample_and_channel_and_active_in_eval() -> None:
    x = torch.tensor([[[[4.0, 1.0]], [[0.5, 0.2]]], [[[1.0, 0.9]], [[0.0, 0.0]]]])
    pam = PAM(0.7).eval()
    expected = torch.tensor([[[[4.0, 0.0]], [[0.5, 0.0]]], [[[1.0, 0.9]], [[0.0, 0.0]]]])
    assert torch.equal(pam(x), expected)


def test_pam_rejects_bad_alpha() -> None:
    with pytest.raises(ValueError, match="pam_alpha"):
        PAM(1.5)


def test_set_pam_alpha_reaches_every_pam_layer_and_zero_is_relu() -> None:
    model = Classifier(3, width=TINY, pam_layers=[1, 3], batch_norm=True)
    assert set_pam_alpha(model, 0.0) == 2
    assert [m.alpha for m in model.modules() if isinstance(m, PAM)] == [0.0, 0.0]
    x = torch.tensor([2.0, 1.0, 0.5, -3.0]).view(1, 1, 1, 4)
    assert PAM(0.0)(x).flatten().tolist() == [2.0, 1.0, 0.5, 0.0]  # = ReLU
    assert set_pam_alpha(Classifier(3, width=TINY, pam_layers=[]), 0.5) == 0  # CAM: no layer
    with pytest.raises(ValueError, match="cues.pam_alpha"):
        set_pam_alpha(model, -0.5)


@pytest.mark.parametrize("pam_layers", [[1, 2, 3], []])
def test_forward_shapes(pam_layers: list[int]) -> None:
    model = Classifier(3, width=TINY, pam_layers=pam_layers)
    logits, maps = model(torch.randn(2, 3, 64, 48))
    assert logits.shape == (2, 3)
    assert maps.shape == (2, 3, 8, 6)  # output stride 8
    assert torch.allclose(logits, maps.mean(dim=(2, 3)))
    kinds = [type(module).__name__ for module in model.extra_activations]
    assert kinds == (["PAM"] * 3 if pam_layers else ["ReLU"] * 3)


def test_batch_norm_trunk_keeps_conv_indices_and_round_trips_metadata() -> None:
    model = Classifier(3, width=TINY, batch_norm=True)
    assert isinstance(model.features[1][0], torch.nn.BatchNorm2d)
    assert isinstance(model.extra_activations[2][1], PAM)
    assert "features.28.weight" in model.state_dict()
    rebuilt = classifier_from_metadata(classifier_metadata(model))
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.batch_norm
    assert model(torch.randn(2, 3, 32, 32))[1].shape == (2, 3, 4, 4)


def test_trunk_layout_matches_torchvision_vgg16_indices() -> None:
    model = Classifier(20)
    convs = {i: m for i, m in enumerate(model.features) if isinstance(m, torch.nn.Conv2d)}
    assert sorted(convs) == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    assert all(convs[i].dilation == (2, 2) and convs[i].padding == (2, 2) for i in (24, 26, 28))
    pool4 = model.features[23]
    assert (pool4.kernel_size, pool4.stride, pool4.padding) == (3, 1, 1)
    assert len(model.features) == 30  # no pool5
    # official init of the extra convs: std sqrt(2 / (k*k*C_out))
    assert abs(model.extra_conv1.weight.std().item() - (2 / (9 * 512)) ** 0.5) < 1e-3
    assert model.extra_conv4.bias.abs().sum().item() == 0.0


def test_parameter_groups_multipliers_cover_every_parameter_once() -> None:
    model = Classifier(3, width=TINY)
    groups = {group["name"]: group for group in parameter_groups(model, 0.1)}
    assert {name: group["lr"] for name, group in groups.items()} == pytest.approx(
        {"backbone_weight": 0.1, "backbone_bias": 0.2, "extra_weight": 1.0, "extra_bias": 2.0}
    )
    seen = [id(p) for group in groups.values() for p in group["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())
    assert len(groups["extra_weight"]["params"]) == 4
    assert len(groups["backbone_bias"]["params"]) == 13
    flat = parameter_groups(model, 0.1, [1, 1, 1, 1])
    assert [group["lr"] for group in flat] == pytest.approx([0.1] * 4)
    with pytest.raises(ValueError, match="lr_multipliers"):
        parameter_groups(model, 0.1, [1, 2])


def test_schedule_decays_at_the_start_of_the_listed_epochs() -> None:
    cfg = ClassifierConfig(width=TINY, lr=1.0, lr_steps=[5, 10], lr_gamma=0.1)
    optimizer = make_optimizer(Classifier(2, width=TINY), cfg)
    scheduler = make_scheduler(optimizer, cfg)
    rates = []
    for _ in range(12):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradients: a no-op, keeps the step order torch expects
        scheduler.step()
    assert rates == pytest.approx([1.0] * 4 + [0.1] * 5 + [0.01] * 3)
    assert optimizer.param_groups[3]["lr"] == pytest.approx(0.2)  # extra biases x20
    assert optimizer.defaults["nesterov"]


@pytest.mark.parametrize("pam_layers", [[1, 2, 3], []])
def test_one_sgd_step_lowers_the_loss(pam_layers: list[int]) -> None:
    # A small step: PAM's selection is discontinuous, so a large one may not descend.
    torch.manual_seed(0)
    model = Classifier(3, width=TINY, pam_layers=pam_layers)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([[1.0, 0, 1], [0, 1, 0]] * 2)
    optimizer = make_optimizer(model, ClassifierConfig(lr=1e-4, momentum=0.9))
    before = F.multilabel_soft_margin_loss(model(images)[0], labels)
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    after = F.multilabel_soft_margin_loss(model(images)[0], labels)
    assert after.item() < before.item()


def test_multilabel_f1_by_hand() -> None:
    scores = torch.tensor([[0.9, 0.2], [0.6, 0.7], [0.1, 0.4]]).numpy()
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]).numpy()
    # class 0: tp 1, fp 1, fn 1 -> 0.5; class 1: tp 1 -> 1.0; micro: tp 2, fp 1, fn 1 -> 2/3
    result = multilabel_f1(scores, labels)
    assert result["per_class_f1"] == pytest.approx([0.5, 1.0])
    assert result["macro_f1"] == pytest.approx(0.75)
    assert result["micro_f1"] == pytest.approx(2 / 3)


def test_imagenet_weights_need_width_one_and_an_existing_file(tmp_path) -> None:
    with pytest.raises(ValueError, match="classifier.width 1.0"):
        build_classifier(ClassifierConfig(width=0.5, weights=str(tmp_path / "vgg.pth")), 3)
    with pytest.raises(FileNotFoundError, match="classifier.weights"):
        build_classifier(ClassifierConfig(weights=str(tmp_path / "missing.pth")), 3)
    with pytest.raises(ValueError, match="batch_norm"):
        load_imagenet_trunk(Classifier(3, batch_norm=True), str(tmp_path / "vgg.pth"))


def test_imagenet_weights_load_into_the_trunk(tmp_path) -> None:
    donor = Classifier(20)
    state = {k: v.clone() for k, v in donor.state_dict().items() if k.startswith("features.")}
    state["classifier.0.weight"] = torch.zeros(4, 4)  # torchvision's FC layers are ignored
    torch.save(state, tmp_path / "vgg16.pth")
    model = build_classifier(ClassifierConfig(weights=str(tmp_path / "vgg16.pth")), 3)
    assert torch.equal(model.features[28].weight, donor.features[28].weight)
    del state["features.0.weight"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="features.0.weight"):
        build_classifier(ClassifierConfig(weights=str(tmp_path / "partial.pth")), 3)


def test_train_transform_is_a_function_of_the_seed() -> None:
    import numpy as np

    transform = TrainTransform(40, 32, [0.3, 0.3, 0.3, 0.1])
    image = np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    first = transform(image, np.random.default_rng(7))
    assert first.shape == (3, 32, 32)
    assert torch.equal(first, transform(image, np.random.default_rng(7)))
    assert not torch.equal(first, transform(image, np.random.default_rng(8)))
    with pytest.raises(ValueError, match="classifier.crop"):
        TrainTransform(32, 40, [0.3, 0.3, 0.3, 0.1])


def test_train_stage_writes_model_log_and_metrics(tmp_path) -> None:
    records, _ = make_split(tmp_path, [(32, 40)] * 8)
    cfg = {
        "classifier": {
            "width": TINY,
            "resize": 36,
            "crop": 32,
            "batch_size": 4,
            "epochs": 2,
            "lr_steps": [2],
            "workers": 0,
            "pam_layers": [],
        },
        "seed": 3,
    }
    args = argparse.Namespace(
        config=json.dumps(cfg),
        records=str(records),
        output_dir=str(tmp_path / "cam"),
        device="cpu",
        threads=0,
        init="",
    )
    stage.run(args)
    log = (tmp_path / "cam" / "train_log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,lr,loss") and len(log) == 3
    metrics = read_json(tmp_path / "cam" / "metrics.json")
    assert metrics["images"] == 8 and 0.0 <= metrics["micro_f1"] <= 1.0
    state, metadata = load_model(tmp_path / "cam" / "model.pt")
    assert metadata["pam_layers"] == [] and metadata["categories"] == ["square", "bar"]
    model, _ = load_classifier(tmp_path / "cam" / "model.pt")
    assert not model.training and torch.equal(model.extra_conv4.weight, state["extra_conv4.weight"])
    assert (tmp_path / "cam" / "checkpoints" / "last.pt").is_file()

    # PAM fine-tuned from it (pam_init cam) at learning rate 0: exactly the CAM weights
    cfg["classifier"] |= {"pam_layers": [3], "pam_init": "cam", "epochs": 1, "lr": 0.0}
    args.config, args.output_dir = json.dumps(cfg), str(tmp_path / "pam")
    with pytest.raises(ValueError, match="pam_init"):
        stage.run(args)  # no --init
    args.init = str(tmp_path / "cam" / "model.pt")
    stage.run(args)
    tuned, metadata = load_model(tmp_path / "pam" / "model.pt")
    assert metadata["pam_layers"] == [3]
    swapped, metadata = load_classifier(tmp_path / "pam" / "model.pt", pam_alpha=0.25)
    assert [m.alpha for m in swapped.modules() if isinstance(m, PAM)] == [0.25]
    assert metadata["pam_alpha"] == 0.7  # as trained
    assert all(torch.equal(tuned[name], value) for name, value in state.items())
