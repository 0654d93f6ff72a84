"""Centre NMS, clustering, grouping and decoding (SPEC §4.2, §6.5) with known answers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from bestie.components import label_components, region_centroids
from bestie.postprocess import (
    ClusterParams,
    cluster_centers,
    decode,
    find_centers,
    group_component,
    group_pixels,
    one_cpu_thread,
)
from bestie.sections import DecodeConfig
from tests.unit import official_reference as reference
from tests.unit.scenes import perfect_offsets

# --- find_centers --------------------------------------------------------------------------


def test_find_centers_threshold_is_strict() -> None:
    heatmap = torch.zeros(9, 9)
    heatmap[4, 4] = 0.3
    assert find_centers(heatmap, 0.3, 3).shape == (0, 2)
    heatmap[4, 4] = 0.31
    assert find_centers(heatmap, 0.3, 3).tolist() == [[4, 4]]


def test_find_centers_plateau_gives_two_centres_in_row_major_order() -> None:
    heatmap = torch.zeros(9, 9)
    heatmap[5, 3] = heatmap[5, 4] = 0.8
    heatmap[2, 7] = 0.8  # same value, earlier row: first in row-major order
    assert find_centers(heatmap, 0.1, 3).tolist() == [[2, 7], [5, 3], [5, 4]]


def test_find_centers_kernel_suppresses_within_its_half_width() -> None:
    heatmap = torch.zeros(11, 15)
    heatmap[5, 5] = 0.9
    heatmap[5, 8] = 0.8  # 3 px away
    assert find_centers(heatmap, 0.1, 7).tolist() == [[5, 5]]  # half-width 3
    assert find_centers(heatmap, 0.1, 5).tolist() == [[5, 5], [5, 8]]  # half-width 2


def test_find_centers_top_k_selects_by_score_not_coordinates() -> None:
    heatmap = torch.zeros(30, 30)
    heatmap[1, 1] = 0.5
    heatmap[1, 20] = 0.9
    heatmap[20, 1] = 0.7
    heatmap[25, 25] = 0.6
    assert find_centers(heatmap, 0.1, 3, top_k=2).tolist() == [[1, 20], [20, 1]]
    assert find_centers(heatmap, 0.1, 3, top_k=10).shape == (4, 2)


def test_find_centers_empty() -> None:
    centers = find_centers(torch.zeros(6, 7), 0.1, 41)
    assert centers.shape == (0, 2) and centers.dtype == torch.long


@pytest.mark.parametrize("kernel", [1, 3, 7, 41])
def test_find_centers_equals_two_dimensional_max_pool(kernel: int) -> None:
    generator = torch.Generator().manual_seed(kernel)
    for height, width in [(5, 60), (57, 43), (90, 120)]:
        heatmap = torch.rand(height, width, generator=generator).round(decimals=1)  # plateaus
        expected = reference.find_centers(heatmap, 0.3, kernel)
        assert torch.equal(find_centers(heatmap, 0.3, kernel), expected)


def test_find_centers_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="odd"):
        find_centers(torch.zeros(5, 5), 0.1, 4)
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        find_centers(torch.zeros(1, 5, 5), 0.1, 3)
    with pytest.raises(ValueError, match="top_k"):
        find_centers(torch.zeros(5, 5), 0.1, 3, top_k=0)


# --- cluster_centers -----------------------------------------------------------------------


def test_cluster_of_a_perfect_offset_field_is_its_21_pixel_blob() -> None:
    offset = perfect_offsets(30, 30, (10, 12))
    foreground = torch.ones(30, 30, dtype=torch.bool)
    assert int((torch.linalg.vector_norm(offset, dim=0) < 2.5).sum()) == 21
    assert cluster_centers(offset, foreground).tolist() == [[10, 12]]


def test_cluster_centroid_is_truncated() -> None:
    offset = perfect_offsets(30, 30, (10, 12))
    foreground = torch.ones(30, 30, dtype=torch.bool)
    foreground[12, 12] = False  # 20 pixels left, mean row 9.9 -> 9
    assert cluster_centers(offset, foreground).tolist() == [[9, 12]]
    foreground[8:13, 10] = False  # 16 pixels: outside the 19..23 window
    assert cluster_centers(offset, foreground).shape == (0, 2)


def test_cluster_label_zero_on_a_tiny_image() -> None:
    # 5 x 5 image, 4 region pixels in the top-left corner: label 0 has 21 pixels, with
    # coordinate sums 50 - 2 = 48 on each axis, so its centroid is 48 / 21 = 2.29 -> 2.
    offset = torch.full((2, 5, 5), 10.0)
    offset[:, :2, :2] = 0.0
    foreground = torch.ones(5, 5, dtype=torch.bool)
    assert cluster_centers(offset, foreground).tolist() == [[2, 2]]
    expected = reference.cluster_peaks(offset.numpy(), foreground.numpy())
    assert expected.tolist() == [[2, 2]]


def test_cluster_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="foreground"):
        cluster_centers(torch.zeros(2, 5, 5), torch.ones(5, 6, dtype=torch.bool))


def test_region_centroids_on_a_crop_equal_full_image_cv2() -> None:
    rng = np.random.default_rng(0)
    for trial in range(200):
        height, width = (int(v) for v in rng.integers(3, 40, size=2))
        region = np.zeros((height, width), bool)
        top, left = int(rng.integers(0, height)), int(rng.integers(0, width))
        bottom = int(rng.integers(top + 1, height + 1))
        right = int(rng.integers(left + 1, width + 1))
        region[top:bottom, left:right] = rng.random((bottom - top, right - left)) < 0.8
        offset = np.where(region, 0.0, 9.0).astype(np.float32)[None].repeat(2, 0)
        expected = reference.cluster_peaks(offset, np.ones_like(region), beta=3 + trial % 3)
        cropped = region_centroids(
            region[top:bottom, left:right],
            origin=(top, left),
            image_shape=(height, width),
            tolerance=3 + trial % 3,
        )
        np.testing.assert_array_equal(cropped, expected)


def test_region_centroids_label_zero_on_crops_of_tiny_images() -> None:
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(100):
        height, width = (int(v) for v in rng.integers(5, 9, size=2))
        region = np.ones(height * width, bool)
        region[rng.choice(height * width, size=int(rng.integers(17, 26)), replace=False)] = False
        region = region.reshape(height, width)
        rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
        crop = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
        offset = np.where(region, 0.0, 9.0).astype(np.float32)[None].repeat(2, 0)
        expected = reference.cluster_peaks(offset, np.ones_like(region))
        cropped = region_centroids(
            region[crop], origin=(int(rows[0]), int(cols[0])), image_shape=(height, width)
        )
        np.testing.assert_array_equal(cropped, expected)
        hits += 18 < height * width - region.sum() < 24
    assert hits > 20  # label 0 qualified in many of the trials


# --- group_pixels --------------------------------------------------------------------------


def test_group_pixels_hand_offsets_and_ties_to_lowest_index() -> None:
    offset = torch.zeros(2, 1, 5)
    centers = torch.tensor([[0, 0], [0, 2]])
    # x = 1 is 1 px from both centres: the first one wins.
    assert group_pixels(centers, offset).tolist() == [[1, 1, 2, 2, 2]]
    offset[1, 0, 4] = -4.0  # pixel (0, 4) predicts (0, 0)
    offset[1, 0, 0] = 1.6  # pixel (0, 0) predicts (0, 1.6), nearer to (0, 2)
    assert group_pixels(centers, offset).tolist() == [[2, 1, 2, 2, 1]]


def test_group_pixels_crop_with_origin_equals_the_full_image() -> None:
    generator = torch.Generator().manual_seed(0)
    offset = 20 * torch.randn(2, 40, 50, generator=generator)
    centers = torch.tensor([[3, 4], [30, 10], [20, 45], [20, 45]])
    full = group_pixels(centers, offset)
    assert torch.equal(full, reference.group_pixels(centers, offset))
    crop = group_pixels(centers, offset[:, 7:31, 12:40], origin=(7, 12))
    assert torch.equal(crop, full[7:31, 12:40])
    assert not (full == 4).any()  # a duplicate centre never wins a tie


def test_group_pixels_without_centres_is_all_zero() -> None:
    ids = group_pixels(torch.zeros(0, 2, dtype=torch.long), torch.zeros(2, 3, 4))
    assert ids.shape == (3, 4) and not ids.any()


# --- group_component -----------------------------------------------------------------------


def _row_component(width: int = 160) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 9 x width component whose left half points at (4, 10), right half at (4, 140)."""
    foreground = torch.ones(9, width, dtype=torch.bool)
    offset = perfect_offsets(9, width, (4, 10))
    offset[:, :, 75:] = perfect_offsets(9, width, (4, 140))[:, :, 75:]
    return foreground, offset, torch.zeros(9, width)


def _group_clustered(heatmap, foreground, offset, *, ignore: bool):
    """group_component with the official refinement gates: NMS 0.3, kernel 41, clustering."""
    return group_component(
        heatmap,
        foreground,
        offset,
        threshold=0.3,
        nms_kernel=41,
        cluster=ClusterParams(),
        ignore=ignore,
    )


def test_cluster_centre_far_from_nms_centres_is_appended_and_marked() -> None:
    foreground, offset, heatmap = _row_component()
    heatmap[4, 10] = 0.9  # NMS centre
    heatmap[4, 140] = 0.2  # weak: clustered only, 130 px away
    ids, centers = _group_clustered(heatmap, foreground, offset, ignore=True)
    assert centers.tolist() == [[4, 10], [4, 140]]
    assert heatmap[4, 140] == 1.0 and heatmap[4, 10] == pytest.approx(0.9)
    assert (ids[:, :75] == 1).all() and (ids[:, 75:] == 2).all()


def test_cluster_gates_distance_and_heatmap_value() -> None:
    foreground, offset, heatmap = _row_component(120)
    heatmap[4, 10] = 0.9
    offset[:, :, 75:] = perfect_offsets(9, 120, (4, 100))[:, :, 75:]
    heatmap[4, 100] = 0.2  # 90 px from the NMS centre: not appended
    _, centers = _group_clustered(heatmap, foreground, offset, ignore=True)
    assert centers.tolist() == [[4, 10]] and heatmap[4, 100] == pytest.approx(0.2)
    heatmap[4, 10] = 0.0  # no NMS centre: every gated cluster is used
    heatmap[4, 100] = 0.05  # not > 0.05: rejected
    ids, centers = _group_clustered(heatmap, foreground, offset, ignore=False)
    assert centers.shape == (0, 2) and torch.equal(ids, foreground.long())
    heatmap[4, 100] = 0.06
    _, centers = _group_clustered(heatmap, foreground, offset, ignore=True)
    assert centers.tolist() == [[4, 100]] and heatmap[4, 100] == 1.0


# --- decode --------------------------------------------------------------------------------


def _square_scene(peak: float, *, prob: float = 0.8) -> tuple[torch.Tensor, ...]:
    """A 20 x 20 class-1 square in a 40 x 40 image with one centre peak at (15, 15)."""
    semantic_prob = torch.zeros(3, 40, 40)
    semantic_prob[0] = 1.0
    semantic_prob[:, 5:25, 5:25] = torch.tensor([1 - prob, 0.0, prob])[:, None, None]
    center = torch.zeros(2, 40, 40)
    center[1, 15, 15] = peak
    offset = torch.zeros(2, 40, 40)
    return semantic_prob, center, offset


def test_decode_score_is_centre_times_mean_probability() -> None:
    instances = decode(*_square_scene(0.6), DecodeConfig())
    assert instances.labels.tolist() == [1]
    assert instances.scores[0] == pytest.approx(0.6 * 0.8)
    expected = np.zeros((40, 40), bool)
    expected[5:25, 5:25] = True
    np.testing.assert_array_equal(instances.masks[0], expected)


def test_decode_centre_of_one_or_more_is_replaced_by_the_seg_score() -> None:
    instances = decode(*_square_scene(1.5), DecodeConfig())
    assert instances.scores.tolist() == [pytest.approx(0.8 * 0.8)]


def test_decode_component_without_centre() -> None:
    semantic_prob, center, offset = _square_scene(0.0)
    center[1, 5:25, 5:25] = 0.05  # below the 0.1 threshold everywhere
    whole = decode(semantic_prob, center, offset, DecodeConfig(ignore_no_center=False))
    assert len(whole) == 1 and whole.masks[0].sum() == 400
    assert whole.scores[0] == pytest.approx(0.05 * 0.8)
    ignored = decode(semantic_prob, center, offset, DecodeConfig(ignore_no_center=True))
    assert len(ignored) == 0 and ignored.scores.shape == (0,)


def test_decode_splits_a_component_with_two_centres() -> None:
    semantic_prob = torch.zeros(2, 30, 80)
    semantic_prob[0] = 1.0
    semantic_prob[:, 5:25, 5:75] = torch.tensor([0.1, 0.9])[:, None, None]
    center = torch.zeros(1, 30, 80)
    center[0, 15, 15], center[0, 15, 60] = 0.7, 0.5
    offset = perfect_offsets(30, 80, (15, 15))
    offset[:, :, 40:] = perfect_offsets(30, 80, (15, 60))[:, :, 40:]
    instances = decode(semantic_prob, center, offset, DecodeConfig(cluster=False))
    assert instances.labels.tolist() == [0, 0]
    assert instances.masks[0, 5:25, 5:40].all() and instances.masks[0].sum() == 20 * 35
    assert instances.masks[1, 5:25, 40:75].all() and instances.masks[1].sum() == 20 * 35
    np.testing.assert_allclose(instances.scores, [0.7 * 0.9, 0.5 * 0.9], rtol=1e-6)


def test_decode_empty_image_gives_zero_instances() -> None:
    semantic_prob = torch.zeros(4, 12, 16)
    semantic_prob[0] = 1.0
    instances = decode(semantic_prob, torch.ones(3, 12, 16), torch.zeros(2, 12, 16), DecodeConfig())
    assert len(instances) == 0 and instances.masks.shape == (0, 12, 16)
    assert instances.scores is not None and instances.scores.shape == (0,)


def test_decode_drops_components_under_min_area() -> None:
    semantic_prob, center, offset = _square_scene(0.6)
    assert len(decode(semantic_prob, center, offset, DecodeConfig(min_area=401))) == 0
    assert len(decode(semantic_prob, center, offset, DecodeConfig(min_area=400))) == 1


@pytest.mark.parametrize("seed", range(4))
def test_decode_equals_the_full_image_reference(seed: int) -> None:
    seg, center, offset, _, _ = reference.random_scene(seed, 90, 280, row=["weak", None][seed % 2])
    semantic_prob = torch.softmax(seg, dim=0)
    for ignore in (False, True):
        instances = decode(semantic_prob, center, offset, DecodeConfig(ignore_no_center=ignore))
        labels, masks, scores = reference.decode(semantic_prob, center, offset, ignore=ignore)
        assert instances.labels.tolist() == labels
        np.testing.assert_array_equal(instances.masks, np.asarray(masks).reshape(-1, 90, 280))
        np.testing.assert_allclose(instances.scores, scores, rtol=1e-5, atol=1e-7)


def test_decode_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="semantic_prob"):
        decode(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8), torch.zeros(2, 8, 8), DecodeConfig())
    with pytest.raises(ValueError, match="offset"):
        decode(torch.zeros(4, 8, 8), torch.zeros(3, 8, 8), torch.zeros(2, 8, 9), DecodeConfig())
    with pytest.raises(ValueError, match="nms_kernel"):
        decode(
            torch.zeros(4, 8, 8),
            torch.zeros(3, 8, 8),
            torch.zeros(2, 8, 8),
            DecodeConfig(nms_kernel=40),
        )


def test_decode_runs_on_one_thread_and_restores_the_callers_count() -> None:
    seen = []
    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(2)
    cv2.setNumThreads(2)
    try:

        @one_cpu_thread
        def probe(tensor: torch.Tensor) -> None:
            seen.append((torch.get_num_threads(), cv2.getNumThreads()))
            if tensor.numel() == 0:
                raise ValueError("empty")

        probe(torch.zeros(1))
        assert seen == [(1, 1)] and (torch.get_num_threads(), cv2.getNumThreads()) == (2, 2)
        with pytest.raises(ValueError, match="empty"):
            probe(torch.zeros(0))
        assert seen == [(1, 1)] * 2 and (torch.get_num_threads(), cv2.getNumThreads()) == (2, 2)
        # decode is wrapped: same answer, and the caller's threads survive a bad input.
        assert len(decode(*_square_scene(0.6), DecodeConfig())) == 1
        with pytest.raises(ValueError, match="nms_kernel"):
            decode(*_square_scene(0.6), DecodeConfig(nms_kernel=40))
        assert (torch.get_num_threads(), cv2.getNumThreads()) == (2, 2)
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)


def test_label_components_filters_by_area_and_keeps_boxes() -> None:
    mask = np.zeros((10, 12), bool)
    mask[1:4, 2:7] = True  # 15 px
    mask[6, 9] = True  # 1 px
    labels, components = label_components(mask, min_area=2)
    assert len(components) == 1
    (component,) = components
    assert (component.area, component.origin, component.centroid) == (15, (1, 2), (2, 4))
    assert (component.bottom, component.right) == (4, 7)
    assert (labels[component.slices] == component.label).all()


@pytest.mark.parametrize("density", [0.02, 0.3, 0.7])
def test_label_components_equals_cv2_with_stats(density: float) -> None:
    rng = np.random.default_rng(int(density * 100))
    mask = rng.random((150, 200)) < density  # sparse and dense code paths
    mask[20:60, 30:90] = True
    labels, components = label_components(mask, min_area=5)
    count, expected_labels, stats, centroids = cv2.connectedComponentsWithStats(
        mask.astype(np.uint8), connectivity=8
    )
    np.testing.assert_array_equal(labels, expected_labels)
    expected = [
        (k, stats[k, 4], stats[k, 1], stats[k, 0], int(centroids[k, 1]), int(centroids[k, 0]))
        for k in range(1, count)
        if stats[k, 4] >= 5
    ]
    actual = [(c.label, c.area, c.top, c.left, *c.centroid) for c in components]
    assert actual == expected
    assert all(
        (c.bottom - c.top, c.right - c.left) == (stats[c.label, 3], stats[c.label, 2])
        for c in components
    )


def test_decode_ties_go_to_the_lower_channel() -> None:
    semantic_prob, center, offset = _square_scene(0.6, prob=0.5)  # background 0.5 = class 0.5
    assert len(decode(semantic_prob, center, offset, DecodeConfig())) == 0
