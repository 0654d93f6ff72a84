"""Value checks of the instance-network losses (SPEC §4.4, §5.1) on tiny hand-built tensors."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from bestie.losses import deeplab_ce, instance_losses, weighted_l1, weighted_mse
from bestie.sections import LossConfig


def _one_pixel_weight(batch: int = 1, height: int = 2, width: int = 2) -> torch.Tensor:
    weight = torch.zeros(batch, height, width)
    weight[0, 0, 0] = 1.0
    return weight


def test_weighted_mse_normaliser_counts_pixels_not_channels():
    pred = torch.zeros(1, 3, 2, 2)
    target = torch.ones(1, 3, 2, 2)
    # One weighted pixel, 3 channels of squared error 1: the sum is 3, the normaliser 1.
    assert weighted_mse(pred, target, _one_pixel_weight()).item() == pytest.approx(3.0)


def test_weighted_mse_soft_weight_counts_one_in_normaliser():
    pred = torch.zeros(1, 3, 2, 2)
    target = torch.full((1, 3, 2, 2), 2.0)
    weight = torch.zeros(1, 2, 2)
    weight[0, 0, :] = 0.5
    # Σ w·(p−t)² = 2 pixels · 3 channels · 0.5 · 4 = 12; 2 pixels with w > 0.
    assert weighted_mse(pred, target, weight).item() == pytest.approx(6.0)


def test_weighted_mse_pools_normaliser_over_batch():
    pred = torch.zeros(2, 1, 2, 2)
    target = torch.ones(2, 1, 2, 2)
    target[1] = 3.0
    weight = torch.zeros(2, 2, 2)
    weight[0, 0, 0] = 1.0
    weight[1, 1, 1] = 1.0
    weight[1, 0, 1] = 1.0
    # (1 + 9 + 9) / 3 weighted pixels over the batch, not a mean of per-image means.
    assert weighted_mse(pred, target, weight).item() == pytest.approx(19.0 / 3.0)


def test_weighted_mse_accepts_channel_weight_shape():
    pred = torch.randn(2, 4, 3, 5)
    target = torch.randn(2, 4, 3, 5)
    weight = torch.rand(2, 3, 5) * (torch.rand(2, 3, 5) > 0.5)
    assert torch.equal(
        weighted_mse(pred, target, weight), weighted_mse(pred, target, weight[:, None])
    )


def test_zero_weight_gives_zero_loss_with_gradient():
    pred = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = weighted_mse(pred, torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 4))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))
    offset = weighted_l1(torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4), torch.zeros(1, 4, 4))
    assert offset.item() == 0.0


def test_non_finite_prediction_on_zero_weight_pixel_is_ignored():
    pred = torch.zeros(1, 2, 2, 2)
    pred[0, :, 1, 1] = float("nan")
    loss = weighted_l1(pred, torch.ones(1, 2, 2, 2), _one_pixel_weight())
    assert loss.item() == pytest.approx(2.0)


def test_weighted_l1_sums_both_channels():
    pred = torch.zeros(1, 2, 2, 2)
    target = torch.zeros(1, 2, 2, 2)
    target[0, 0, 0, 0] = 3.0  # dy
    target[0, 1, 0, 0] = -4.0  # dx
    target[0, :, 1, 0] = 10.0  # a zero-weight pixel
    weight = torch.zeros(1, 2, 2)
    weight[0, 0, 0] = 1.0
    weight[0, 0, 1] = 0.25  # zero error, counts 1
    assert weighted_l1(pred, target, weight).item() == pytest.approx(7.0 / 2.0)


def test_losses_are_float32_for_low_precision_inputs():
    pred = torch.randn(1, 2, 3, 3).to(torch.bfloat16)
    weight = torch.ones(1, 3, 3, dtype=torch.bfloat16)
    assert weighted_l1(pred, pred.float() + 1, weight).dtype == torch.float32
    logits = torch.randn(1, 3, 3, 3).to(torch.bfloat16)
    assert deeplab_ce(logits, torch.zeros(1, 3, 3, dtype=torch.long)).dtype == torch.float32


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="weight"):
        weighted_mse(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3), torch.zeros(1, 4, 3))
    with pytest.raises(ValueError, match="differ"):
        weighted_l1(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 4), torch.zeros(1, 3, 3))


def test_deeplab_ce_keeps_ignored_pixels_in_pool_as_zeros():
    logits = torch.zeros(1, 2, 2, 5)  # CE = ln 2 on every valid pixel
    target = torch.full((1, 2, 5), 255)
    target[0, 0, 0] = 1
    # 10 pixels, 1 valid: the top 50 % is 5 values, ln 2 and four ignored zeros.
    loss = deeplab_ce(logits, target, top_k_percent=0.5)
    assert loss.item() == pytest.approx(math.log(2) / 5)


def test_deeplab_ce_averages_the_hardest_pixels():
    logits = torch.zeros(1, 2, 1, 10)
    logits[0, 1, 0, :] = torch.arange(10, dtype=torch.float32)  # rising confidence in class 1
    target = torch.zeros(1, 1, 10, dtype=torch.long)  # the truth is class 0
    pixel = F.cross_entropy(logits, target, reduction="none").flatten()
    expected = pixel.sort(descending=True).values[:2].mean()  # int(0.2 · 10) = 2
    assert deeplab_ce(logits, target).item() == pytest.approx(expected.item())
    assert deeplab_ce(logits, target, top_k_percent=1.0).item() == pytest.approx(
        F.cross_entropy(logits, target).item()
    )


def test_deeplab_ce_tiny_input_keeps_one_pixel_and_rejects_bad_fraction():
    logits = torch.tensor([[[[0.0]], [[1.0]]]])
    target = torch.zeros(1, 1, 1, dtype=torch.long)
    assert deeplab_ce(logits, target).item() == pytest.approx(math.log(1 + math.e))
    with pytest.raises(ValueError, match="top_k_percent"):
        deeplab_ce(logits, target, top_k_percent=0.0)


def _loss_fixture():
    generator = torch.Generator().manual_seed(0)
    shape = (2, 3, 4, 4)
    outputs = {
        "seg": torch.randn(2, 4, 4, 4, generator=generator),
        "center": torch.randn(shape, generator=generator),
        "offset": torch.randn(2, 2, 4, 4, generator=generator),
    }
    pseudo = {
        "center": torch.rand(shape, generator=generator),
        "offset": torch.randn(2, 2, 4, 4, generator=generator),
        "weight": (torch.rand(2, 4, 4, generator=generator) > 0.5).float(),
    }
    refined = {
        "center": torch.rand(shape, generator=generator),
        "offset": torch.randn(2, 2, 4, 4, generator=generator),
        "weight": torch.rand(2, 1, 4, 4, generator=generator) * 0.9,
    }
    semantic = torch.randint(0, 4, (2, 4, 4), generator=generator)
    semantic[0, 0] = 255
    return outputs, pseudo, refined, semantic


_CFG = LossConfig(center_weight=2.0, offset_weight=3.0, seg_weight=0.5, top_k_percent=0.25)


def _terms(outputs, pseudo, refined, semantic):
    seg = deeplab_ce(outputs["seg"], semantic, top_k_percent=0.25)
    c1 = weighted_mse(outputs["center"], pseudo["center"], pseudo["weight"])
    o1 = weighted_l1(outputs["offset"], pseudo["offset"], pseudo["weight"])
    c2 = weighted_mse(outputs["center"], refined["center"], refined["weight"])
    o2 = weighted_l1(outputs["offset"], refined["offset"], refined["weight"])
    return seg, c1, o1, c2, o2


def test_instance_losses_mean_combination():
    outputs, pseudo, refined, semantic = _loss_fixture()
    seg, c1, o1, c2, o2 = _terms(outputs, pseudo, refined, semantic)
    losses = instance_losses(outputs, pseudo, refined, semantic, _CFG)
    expected = 0.5 * seg + 0.5 * (c1 + c2) * 2.0 + 0.5 * (o1 + o2) * 3.0
    assert losses["total"].item() == pytest.approx(expected.item(), rel=1e-6)
    for key, value in zip(
        ("seg", "center_pseudo", "offset_pseudo", "center_refined", "offset_refined"),
        (seg, c1, o1, c2, o2),
        strict=True,
    ):
        assert losses[key].item() == pytest.approx(value.item(), rel=1e-6)
        assert losses[key].dtype == torch.float32


def test_instance_losses_sum_combination():
    outputs, pseudo, refined, semantic = _loss_fixture()
    seg, c1, o1, c2, o2 = _terms(outputs, pseudo, refined, semantic)
    cfg = dataclasses.replace(_CFG, combine="sum")
    losses = instance_losses(outputs, pseudo, refined, semantic, cfg)
    expected = 0.5 * seg + (c1 + c2) * 2.0 + (o1 + o2) * 3.0
    assert losses["total"].item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize(("combine", "center_factor"), [("mean", 1.0), ("sum", 2.0)])
def test_instance_losses_point_supervision_reuses_pseudo_centre(combine, center_factor):
    outputs, pseudo, refined, semantic = _loss_fixture()
    seg, c1, o1, _, o2 = _terms(outputs, pseudo, refined, semantic)
    cfg = dataclasses.replace(_CFG, combine=combine)
    del refined["center"]  # point refinement carries offsets and weights only
    losses = instance_losses(outputs, pseudo, refined, semantic, cfg, point_supervision=True)
    offset_scale = 0.5 if combine == "mean" else 1.0
    expected = 0.5 * seg + center_factor * c1 * 2.0 + offset_scale * (o1 + o2) * 3.0
    assert losses["total"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert losses["center_refined"].item() == pytest.approx(c1.item())


@pytest.mark.parametrize("combine", ["mean", "sum"])
def test_instance_losses_without_refinement(combine):
    outputs, pseudo, _, semantic = _loss_fixture()
    seg = deeplab_ce(outputs["seg"], semantic, top_k_percent=0.25)
    c1 = weighted_mse(outputs["center"], pseudo["center"], pseudo["weight"])
    o1 = weighted_l1(outputs["offset"], pseudo["offset"], pseudo["weight"])
    cfg = dataclasses.replace(_CFG, combine=combine)
    losses = instance_losses(outputs, pseudo, None, semantic, cfg)
    assert losses["total"].item() == pytest.approx((0.5 * seg + 2 * c1 + 3 * o1).item(), rel=1e-6)
    assert losses["center_refined"].item() == pytest.approx(c1.item())


def test_instance_losses_empty_refined_weight_halves_pseudo_terms():
    outputs, pseudo, refined, semantic = _loss_fixture()
    refined["weight"] = torch.zeros_like(refined["weight"])
    seg, c1, o1, _, _ = _terms(outputs, pseudo, refined, semantic)
    losses = instance_losses(outputs, pseudo, refined, semantic, _CFG)
    assert losses["center_refined"].item() == 0.0
    expected = 0.5 * seg + 0.5 * c1 * 2.0 + 0.5 * o1 * 3.0
    assert losses["total"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_instance_losses_without_iag_weights_every_pixel():
    outputs, pseudo, refined, semantic = _loss_fixture()
    pixels = 2 * 4 * 4
    c1 = (outputs["center"] - pseudo["center"]).square().sum() / pixels
    o2 = (outputs["offset"] - refined["offset"]).abs().sum() / pixels
    losses = instance_losses(outputs, pseudo, refined, semantic, _CFG, iag=False)
    assert losses["center_pseudo"].item() == pytest.approx(c1.item(), rel=1e-6)
    assert losses["offset_refined"].item() == pytest.approx(o2.item(), rel=1e-6)


def test_instance_losses_backward_and_bad_combine():
    outputs, pseudo, refined, semantic = _loss_fixture()
    outputs = {key: value.requires_grad_() for key, value in outputs.items()}
    instance_losses(outputs, pseudo, refined, semantic, _CFG)["total"].backward()
    assert all(value.grad is not None for value in outputs.values())
    with pytest.raises(ValueError, match="combine"):
        instance_losses(
            outputs, pseudo, refined, semantic, dataclasses.replace(_CFG, combine="max")
        )


def test_instance_losses_trace_without_host_sync():
    # fullgraph tracing fails on .item(), .tolist() or a Python branch on a tensor value,
    # which are exactly the host-device synchronisations the training step must not have.
    outputs, pseudo, refined, semantic = _loss_fixture()
    compiled = torch.compile(
        lambda *args: instance_losses(*args, _CFG), backend="eager", fullgraph=True
    )
    traced = compiled(outputs, pseudo, refined, semantic)
    eager = instance_losses(outputs, pseudo, refined, semantic, _CFG)
    assert traced["total"].item() == pytest.approx(eager["total"].item())
