"""Online self-refinement (SPEC §4.1, §4.3) on constructed outputs with known answers."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from bestie.refine import draw_gaussians, refine_targets
from bestie.sections import RefineConfig
from tests.unit import official_reference as reference
from tests.unit.scenes import perfect_offsets

NO_CLUSTER = RefineConfig(cluster=False)


def _scene(height: int, width: int, classes: int = 3, class_id: int = 1) -> dict:
    """Empty outputs of one image whose softmax gives 0.5 on ``class_id`` + 1 everywhere."""
    seg = torch.zeros(1, classes + 1, height, width)
    seg[0, class_id + 1] = math.log(classes)  # e^a / (e^a + classes) = 0.5
    label = torch.zeros(1, classes)
    label[0, class_id] = 1.0
    return {
        "seg_logits": seg,
        "center": torch.zeros(1, classes, height, width),
        "offset": torch.zeros(1, 2, height, width),
        "image_labels": label,
        "semantic": torch.zeros(1, height, width, dtype=torch.long),
    }


def _run(scene: dict, cfg: RefineConfig = NO_CLUSTER, **kwargs) -> dict:
    return refine_targets(**scene, cfg=cfg, **kwargs)


def _gaussian_at(height: int, width: int, center: tuple[int, int]) -> torch.Tensor:
    target = torch.zeros(1, 1, height, width)
    return draw_gaussians(target, torch.tensor([[0, 0, *center]]), 6.0)[0, 0]


def test_two_centre_peaks_split_one_component_into_two_weighted_instances() -> None:
    scene = _scene(30, 80)
    scene["semantic"][0, 5:25, 5:75] = 2
    scene["center"][0, 1, 15, 15] = 0.9
    scene["center"][0, 1, 15, 60] = 0.6
    scene["offset"][0] = perfect_offsets(30, 80, (15, 15))
    scene["offset"][0, :, :, 40:] = perfect_offsets(30, 80, (15, 60))[:, :, 40:]

    refined = _run(scene, RefineConfig())  # clustering on: clusters sit on the NMS centres

    weight = refined["weight"][0]
    torch.testing.assert_close(weight[5:25, 5:40], torch.full((20, 35), 0.45))
    torch.testing.assert_close(weight[5:25, 40:75], torch.full((20, 35), 0.3))
    assert weight.sum() == pytest.approx(700 * 0.45 + 700 * 0.3, rel=1e-5)
    component = scene["semantic"][0] == 2
    torch.testing.assert_close(refined["offset"][0][:, component], scene["offset"][0][:, component])
    assert not refined["offset"][0][:, ~component].any()
    expected = torch.maximum(_gaussian_at(30, 80, (15, 15)), _gaussian_at(30, 80, (15, 60)))
    assert torch.equal(refined["center"][0, 1], expected)
    assert not refined["center"][0, [0, 2]].any()
    assert refined["center"][0, 1, 15, 15] == 1.0
    assert refined["center"][0, 1, 15, 16] == pytest.approx(math.exp(-1 / 72))


def test_instance_without_its_peak_falls_back_to_the_component_centroid() -> None:
    scene = _scene(30, 80)
    scene["semantic"][0, 5:25, 5:75] = 2  # centroid (14.5, 39.5) -> (14, 39)
    scene["center"][0, 1, 15, 15] = 0.9
    scene["center"][0, 1, 15, 60] = 0.8
    scene["offset"][0] = perfect_offsets(30, 80, (15, 15))
    stray = (slice(5, 9), slice(50, 70))  # grouped to (15, 60) but holds no centre value
    scene["offset"][0][(slice(None), *stray)] = perfect_offsets(30, 80, (15, 60))[
        (slice(None), *stray)
    ]

    refined = _run(scene)

    weight, offset = refined["weight"][0], refined["offset"][0]
    torch.testing.assert_close(weight[stray], torch.full((4, 20), 0.5))  # seg_score alone
    assert weight[20, 60] == pytest.approx(0.45)  # 0.9 * 0.5
    torch.testing.assert_close(
        offset[(slice(None), *stray)], perfect_offsets(30, 80, (14, 39))[(slice(None), *stray)]
    )
    expected = torch.maximum(_gaussian_at(30, 80, (15, 15)), _gaussian_at(30, 80, (14, 39)))
    assert torch.equal(refined["center"][0, 1], expected)


def _six_segment_scene(empty_third: bool) -> dict:
    """A 10 x 180 component cut in six 30-px segments, each pointing at its own 0.9 peak."""
    scene = _scene(20, 190)
    scene["semantic"][0, 5:15, 5:185] = 2
    for segment in range(6):
        peak = (10, 20 + 30 * segment)
        scene["center"][0, 1][peak] = 0.9
        target = (10, 50) if empty_third and segment == 2 else peak
        cols = slice(5 + 30 * segment, 35 + 30 * segment)
        scene["offset"][0, :, :, cols] = perfect_offsets(20, 190, target)[:, :, cols]
    return scene


def test_component_with_more_than_max_instances_is_skipped() -> None:
    refined = _run(_six_segment_scene(empty_third=False))
    assert not refined["weight"].any() and not refined["center"].any()
    assert not refined["offset"].any()
    allowed = _run(
        _six_segment_scene(empty_third=False), dataclasses.replace(NO_CLUSTER, max_instances=6)
    )
    weight = allowed["weight"][0, 5:15, 5:185]
    torch.testing.assert_close(weight, torch.full_like(weight, 0.45))
    assert allowed["center"][0, 1, 10, 20] == 1.0


def test_instance_limit_counts_instances_not_the_highest_id() -> None:
    # Six centres, the third gets no pixel: 5 instances (kept), though the top id is 6.
    refined = _run(_six_segment_scene(empty_third=True))
    weight = refined["weight"][0, 5:15, 5:185]
    torch.testing.assert_close(weight, torch.full_like(weight, 0.45))
    assert refined["center"][0, 1, 10, 80] == 0.0  # no Gaussian for the empty third id


def test_components_under_min_area_are_not_refined() -> None:
    scene = _scene(30, 30)
    scene["semantic"][0, 2:9, 2:9] = 2  # 49 px
    scene["semantic"][0, 15:20, 15:25] = 2  # 50 px
    scene["center"][0, 1, 5, 5] = scene["center"][0, 1, 17, 20] = 0.9
    refined = _run(scene)
    assert not refined["weight"][0, 2:9, 2:9].any()
    assert (refined["weight"][0, 15:20, 15:25] > 0).all()


def test_classes_outside_the_image_label_are_ignored_and_labels_scale_probabilities() -> None:
    scene = _scene(30, 30)
    scene["semantic"][0, 5:20, 5:20] = 3  # class 2, not in the label
    scene["center"][0, 2, 12, 12] = 0.9
    assert not any(value.any() for value in _run(scene).values())
    scene["image_labels"][0] = torch.tensor([0.0, 0.0, 0.5])
    scene["seg_logits"][0, 2:4] = scene["seg_logits"][0, 2:4].flip(0)  # 0.5 on class 2
    weight = _run(scene)["weight"][0, 5:20, 5:20]
    torch.testing.assert_close(weight, torch.full_like(weight, 0.9 * 0.25))


def test_component_without_centre_is_ignored() -> None:
    scene = _scene(30, 30)
    scene["semantic"][0, 5:20, 5:20] = 2
    scene["center"][0, 1, 5:20, 5:20] = 0.3  # not > 0.3
    assert not any(value.any() for value in _run(scene, RefineConfig()).values())


def _stack(scenes: list[tuple[torch.Tensor, ...]]) -> list[torch.Tensor]:
    return [torch.stack(parts) for parts in zip(*scenes, strict=True)]


# (seed, row) pairs whose scenes hit every branch: clusters without NMS centres (11, None),
# far clusters and a centroid fallback (1, weak), the instance limit (11 strong, 5 weak).
RANDOM_BATCHES = [[(11, None), (1, "weak")], [(11, "strong"), (5, "weak")]]


@pytest.mark.parametrize("batch", RANDOM_BATCHES)
def test_refine_equals_the_full_image_reference_on_random_scenes(batch: list) -> None:
    branches: dict[str, int] = {}
    inputs = _stack([reference.random_scene(seed, 90, 280, row=row) for seed, row in batch])
    expected = reference.refine(*inputs, stats=branches)
    refined = refine_targets(*inputs, RefineConfig())
    assert torch.equal(refined["center"], expected["center"])
    assert torch.equal(refined["offset"], expected["offset"])
    torch.testing.assert_close(refined["weight"], expected["weight"], rtol=1e-6, atol=1e-6)
    assert refined["weight"].any()
    wanted = ("cluster_only", "cluster_far", "fallback") if batch[0][1] is None else ("skipped",)
    assert all(branches.get(key, 0) > 0 for key in wanted), branches


def test_refine_is_detached_and_batched() -> None:
    seg, center, offset, label, semantic = reference.random_scene(3, 64, 96)
    inputs = [t[None].repeat(2, *([1] * t.dim())) for t in (seg, center, offset, label, semantic)]
    for tensor in inputs[:3]:
        tensor.requires_grad_(True)
    refined = refine_targets(*inputs, RefineConfig())
    assert all(not value.requires_grad for value in refined.values())
    assert refined["weight"].shape == (2, 64, 96) and refined["center"].shape == (2, 5, 64, 96)
    assert torch.equal(refined["weight"][0], refined["weight"][1])


# --- point supervision ---------------------------------------------------------------------


def test_point_supervision_groups_the_class_to_its_points() -> None:
    scene = _scene(10, 12, class_id=0)
    scene["semantic"][0, 0:7, 0:11] = 1
    points = [torch.tensor([[0, 0, 0], [5, 9, 0], [8, 2, 1]])]  # class 1 is not labelled
    refined = _run(scene, points=points)
    assert refined["center"] is None
    rows, cols = np.mgrid[0:10, 0:12]
    nearer_first = np.hypot(rows, cols) <= np.hypot(rows - 5, cols - 9)  # ties: first point
    target = np.where(nearer_first, 0, 5) - rows, np.where(nearer_first, 0, 9) - cols
    foreground = scene["semantic"][0].numpy() == 1
    np.testing.assert_array_equal(refined["weight"][0].numpy(), foreground.astype(np.float32))
    np.testing.assert_array_equal(
        refined["offset"][0, 0].numpy(), np.where(foreground, target[0], 0)
    )
    np.testing.assert_array_equal(
        refined["offset"][0, 1].numpy(), np.where(foreground, target[1], 0)
    )


def test_point_supervision_equals_the_reference() -> None:
    scenes = [reference.random_scene(seed, 70, 90) for seed in (5, 6)]
    _, center, offset, label, semantic = _stack(scenes)
    rng = np.random.default_rng(0)
    points = [
        torch.from_numpy(
            np.stack([rng.integers(0, 70, 9), rng.integers(0, 90, 9), rng.integers(0, 5, 9)], 1)
        )
        for _ in range(2)
    ]
    seg = torch.zeros(2, 6, 70, 90)
    refined = refine_targets(seg, center, offset, label, semantic, RefineConfig(), points=points)
    expected = reference.refine_with_points(offset, label, semantic, points)
    assert torch.equal(refined["offset"], expected["offset"])
    assert torch.equal(refined["weight"], expected["weight"])
    assert refined["weight"].any()


def test_point_supervision_rejects_bad_points() -> None:
    scene = _scene(10, 12)
    with pytest.raises(ValueError, match=r"\[P, 3\]"):
        _run(scene, points=[torch.zeros(2, 2, dtype=torch.long)])
    with pytest.raises(ValueError, match="< 3"):
        _run(scene, points=[torch.tensor([[1, 1, 3]])])
    with pytest.raises(ValueError, match="1 images"):
        _run(scene, points=[torch.zeros(0, 3, dtype=torch.long)] * 2)


# --- Gaussians and arguments ---------------------------------------------------------------


def test_draw_gaussians_matches_the_official_patch_at_borders() -> None:
    heatmaps = torch.zeros(2, 3, 25, 30)
    centers = torch.tensor(
        [[0, 1, 0, 0], [1, 2, 24, 29], [1, 2, 12, 10], [0, 0, 3, 40], [0, 0, 9, 9]]
    )
    valid = torch.tensor([True, True, True, True, False])
    draw_gaussians(heatmaps, centers, 6.0, valid=valid)
    expected = np.zeros((2, 3, 25, 30), np.float32)
    patch = reference.gaussian_patch(6)
    for image, class_id, y, x in centers[:4].tolist():  # (3, 40) is outside: skipped
        reference.draw(expected[image], x, y, class_id, 6, patch)
    np.testing.assert_array_equal(heatmaps.numpy(), expected)


def test_refine_rejects_bad_shapes_and_config() -> None:
    scene = _scene(10, 12)
    scene["offset"] = torch.zeros(1, 3, 10, 12)
    with pytest.raises(ValueError, match="offset"):
        _run(scene)
    scene = _scene(10, 12)
    with pytest.raises(ValueError, match="nms_kernel"):
        _run(scene, RefineConfig(nms_kernel=40))
    with pytest.raises(ValueError, match="sigma"):
        _run(scene, sigma=0.0)


@pytest.mark.gpu
def test_refine_and_decode_on_cuda_equal_cpu() -> None:
    from bestie.postprocess import decode
    from bestie.sections import DecodeConfig

    scenes = [
        reference.random_scene(seed, 90, 280, row=row) for seed, row in ((0, "weak"), (1, "strong"))
    ]
    inputs = _stack(scenes)
    on_cpu = refine_targets(*inputs, RefineConfig())
    on_gpu = refine_targets(*(t.cuda() for t in inputs), RefineConfig())
    for key in ("center", "offset", "weight"):
        torch.testing.assert_close(on_gpu[key].cpu(), on_cpu[key], rtol=1e-5, atol=1e-5)
    prob, center, offset = torch.softmax(inputs[0][0], 0), inputs[1][0], inputs[2][0]
    expected = decode(prob, center, offset, DecodeConfig())
    actual = decode(prob.cuda(), center.cuda(), offset.cuda(), DecodeConfig())
    np.testing.assert_array_equal(actual.masks, expected.masks)
    np.testing.assert_allclose(actual.scores, expected.scores, rtol=1e-5)
