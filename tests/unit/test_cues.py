"""Instance cues: peak rule, top-k by score, flip merge, HDF5 round trip, shards, statistics."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from torch import nn

from bestie.artifacts import ImageCues, gather_cues, read_cue_file, read_cues, write_cues
from bestie.cues import (
    classifier_cues,
    cue_statistics,
    cues_from_points,
    find_peaks,
    match_cues,
    merge_flip,
    normalize_cams,
    peaks_to_cues,
    postprocess_cams,
    smooth,
    touching_same_class,
)
from bestie.engine.checkpoint import save_model
from bestie.models.classifier import Classifier, classifier_metadata
from bestie.stages import extract_cues
from bestie.stages import gather_cues as gather_stage
from tests.unit.tiny_split import CATEGORIES, make_split


def test_find_peaks_plateau_gives_every_pixel_and_ignores_neighbours() -> None:
    heat = torch.zeros(1, 1, 5, 9)
    heat[0, 0, 2, 2] = heat[0, 0, 2, 3] = 0.8  # a two-pixel plateau
    heat[0, 0, 2, 4] = 0.5  # next to the plateau: not a peak with a 3x3 window
    heat[0, 0, 1, 7] = 0.6  # a separate peak
    scores, ys, xs = find_peaks(heat, kernel=3, top_k=4)
    assert scores[0, 0, :3].tolist() == pytest.approx([0.8, 0.8, 0.6])
    assert ys[0, 0, :3].tolist() == [2, 2, 1] and xs[0, 0, :3].tolist() == [2, 3, 7]


def test_top_k_is_by_score_not_by_position() -> None:
    heat = torch.zeros(1, 1, 1, 20)
    heat[0, 0, 0, [0, 5, 10, 15]] = torch.tensor([0.2, 0.3, 0.9, 0.7])
    scores, ys, xs = find_peaks(heat, kernel=3, top_k=2)
    assert scores[0, 0].tolist() == pytest.approx([0.9, 0.7])
    assert xs[0, 0].tolist() == [10, 15]


def test_find_peaks_window_suppresses_lower_maxima_and_handles_tiny_maps() -> None:
    heat = torch.zeros(1, 1, 1, 12)
    heat[0, 0, 0, [2, 8]] = torch.tensor([0.5, 0.9])  # 6 apart: one window of 15 covers both
    scores, _, xs = find_peaks(heat, kernel=15, top_k=25)
    assert scores.shape == (1, 1, 12)  # top_k clamped to H*W
    assert scores[0, 0, 0].item() == pytest.approx(0.9) and xs[0, 0, 0].item() == 8
    assert scores[0, 0, 1].item() == 0.0
    with pytest.raises(ValueError, match="peak_kernel"):
        find_peaks(heat, kernel=4)


def test_peaks_to_cues_stops_below_threshold_and_keeps_it_exactly() -> None:
    scores = torch.tensor([[0.9, 0.25, 0.1, 0.05], [0.3, 0.0, 0.0, 0.0]])
    ys = torch.tensor([[1, 2, 3, 4], [5, 0, 0, 0]])
    xs = torch.tensor([[6, 7, 8, 9], [1, 0, 0, 0]])
    cues = peaks_to_cues(scores, ys, xs, [2, 0], threshold=0.1)
    expected = [[1, 6, 2, 0.9], [2, 7, 2, 0.25], [3, 8, 2, 0.1], [5, 1, 0, 0.3]]
    assert cues.dtype == np.float32
    np.testing.assert_allclose(cues, expected, rtol=1e-6)


def test_normalize_cams_relu_label_and_max() -> None:
    maps = torch.tensor([[[[2.0, -1.0], [1.0, 0.0]], [[5.0, 5.0], [5.0, 5.0]]]])
    cams = normalize_cams(maps, torch.tensor([[1.0, 0.0]]), (2, 2))
    assert cams[0, 0].flatten().tolist() == pytest.approx(
        [2 / (2 + 1e-5), 0.0, 1 / (2 + 1e-5), 0.0]
    )
    assert cams[0, 1].abs().sum().item() == 0.0  # class absent from the label
    assert normalize_cams(maps, None, (4, 6)).shape == (1, 2, 4, 6)


def test_merge_flip_averages_with_the_mirrored_map() -> None:
    cams = torch.tensor([[[[1.0, 0.0, 0.0]]]])
    flipped = torch.tensor([[[[0.0, 0.0, 0.5]]]])  # seen mirrored: 0.5 is at x = 0
    assert merge_flip(cams, flipped).flatten().tolist() == pytest.approx([0.75, 0.0, 0.0])


def test_smoothing_divides_border_pixels_by_nine() -> None:
    heat = torch.ones(1, 1, 3, 3)
    out = smooth(heat, 3)
    assert out[0, 0, 0, 0].item() == pytest.approx(4 / 9)
    assert out[0, 0, 1, 1].item() == pytest.approx(1.0)


class FixedMaps(nn.Module):
    """Returns given class maps for the first half of the batch and zeros for the mirror."""

    def __init__(self, maps: torch.Tensor) -> None:
        super().__init__()
        self.maps = maps

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        count = self.maps.shape[0]
        maps = torch.cat([self.maps, torch.zeros_like(self.maps)])[: images.shape[0]]
        assert images.shape[0] in (count, 2 * count)
        return maps.mean(dim=(2, 3)), maps


def test_classifier_cues_groups_sizes_and_handles_an_image_without_classes() -> None:
    torch.manual_seed(0)
    maps = torch.randn(3, 4, 5, 5)
    sizes = [(20, 30), (24, 24), (20, 30)]
    classes = [[1, 3], [], [0]]
    results = classifier_cues(
        FixedMaps(maps), torch.zeros(3, 3, 40, 40), classes, sizes, peak_kernel=5, map_stride=4
    )
    assert results[1].peaks.shape == (0, 4) and results[1].maps.shape == (0, 6, 6)
    for index in (0, 2):
        chosen = maps[index, classes[index]][None]
        merged = merge_flip(
            normalize_cams(chosen, None, sizes[index]),
            normalize_cams(torch.zeros_like(chosen), None, sizes[index]),
        )[0]
        expected = postprocess_cams(merged, classes[index], peak_kernel=5)
        np.testing.assert_array_equal(results[index].peaks, expected)
        assert results[index].maps.shape == (len(classes[index]), 5, 8)  # ceil(20/4), ceil(30/4)
        assert results[index].maps.dtype == np.float16
        assert set(results[index].peaks[:, 2].tolist()) <= set(classes[index])


def test_cues_from_points_have_score_one() -> None:
    cues = cues_from_points(np.array([[3, 4, 1], [5, 6, 0]]))
    assert cues.tolist() == [[3, 4, 1, 1.0], [5, 6, 0, 1.0]]
    assert cues_from_points(np.zeros((0, 3))).shape == (0, 4)


def _sample_cues() -> dict[int, ImageCues]:
    maps = np.random.default_rng(0).random((2, 3, 4)).astype(np.float16)
    return {
        7: ImageCues(np.array([[1, 2, 0, 0.5]], np.float32), 10, 14, maps, [0, 2], stride=4),
        3: ImageCues(np.zeros((0, 4), np.float32), 8, 8),
    }


def test_hdf5_round_trip(tmp_path) -> None:
    cues = _sample_cues()
    write_cues(tmp_path / "c.h5", cues, attrs={"num_classes": 3, "source": "classifier"})
    attrs, back = read_cue_file(tmp_path / "c.h5")
    assert attrs["format"] == "bestie.cues/1" and attrs["num_classes"] == 3
    assert list(back) == [3, 7]  # id order
    np.testing.assert_array_equal(back[7].maps, cues[7].maps)
    assert back[7].map_classes.tolist() == [0, 2] and back[7].stride == 4
    assert (back[7].height, back[7].width) == (10, 14)
    assert back[3].maps is None and back[3].peaks.shape == (0, 4)
    peaks = read_cues(tmp_path / "c.h5")
    assert peaks[7].tolist() == [[1, 2, 0, 0.5]]
    with pytest.raises(ValueError, match="not found"):
        read_cues(tmp_path / "missing.h5")


def test_gather_rejects_duplicates_and_mismatched_attributes(tmp_path) -> None:
    cues = _sample_cues()
    write_cues(tmp_path / "a.h5", cues, attrs={"source": "x", "shard": "0/2"})
    write_cues(tmp_path / "b.h5", {9: cues[3]}, attrs={"source": "y", "shard": "1/2"})
    with pytest.raises(ValueError, match="differ"):
        gather_cues([tmp_path / "a.h5", tmp_path / "b.h5"], tmp_path / "out.h5")
    with pytest.raises(ValueError, match="image 3"):
        gather_cues([tmp_path / "a.h5", tmp_path / "a.h5"], tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()


def _extract(tmp_path, records, model, config, num_shards: int):
    shards = []
    for shard in range(num_shards):
        output = tmp_path / f"shard_{num_shards}_{shard}.h5"
        extract_cues.run(
            argparse.Namespace(
                config=json.dumps(config),
                records=str(records),
                model=str(model),
                output=str(output),
                shard=shard,
                num_shards=num_shards,
                batch_size=3,
                workers=0,
                device="cpu",
                threads=0,
            )
        )
        shards.append(str(output))
    gathered = tmp_path / f"cues_{num_shards}.h5"
    gather_stage.run(argparse.Namespace(shards=shards, output=str(gathered)))
    return read_cue_file(gathered)


def _tiny_cue_config() -> dict:
    """Cue extraction for 32-pixel inputs; every peak kept."""
    return {
        "cues": {"input_size": 32, "peak_kernel": 5, "map_stride": 2, "threshold": 0.0},
        "supervision": "image",
        "shards": 1,
    }


def test_one_shard_and_three_shards_give_identical_files(tmp_path) -> None:
    records, _ = make_split(tmp_path, [(32, 40), (40, 32), (32, 40), (36, 36), (32, 40)] * 2)
    torch.manual_seed(0)
    model = Classifier(len(CATEGORIES), width=0.0625)
    save_model(tmp_path / "model.pt", model, {**classifier_metadata(model), "crop": 32})
    config = _tiny_cue_config()
    attrs_one, one = _extract(tmp_path, records, tmp_path / "model.pt", config, 1)
    attrs_three, three = _extract(tmp_path, records, tmp_path / "model.pt", config, 3)
    assert attrs_one == attrs_three and "shard" not in attrs_one
    assert list(one) == list(three) == list(range(1, 11))
    for image_id in one:
        np.testing.assert_array_equal(one[image_id].peaks, three[image_id].peaks)
        np.testing.assert_array_equal(one[image_id].maps, three[image_id].maps)
    assert one[4].peaks.shape == (0, 4)  # image 4 has no class
    assert sum(entry.peaks.shape[0] for entry in one.values()) > 0


def test_pam_alpha_at_extraction_equals_a_classifier_built_with_it(tmp_path) -> None:
    records, _ = make_split(tmp_path, [(32, 40), (40, 32), (36, 36)])
    torch.manual_seed(0)
    pam = Classifier(len(CATEGORIES), width=0.0625, pam_layers=[1, 2, 3], pam_alpha=0.7)
    relu = Classifier(len(CATEGORIES), width=0.0625, pam_layers=[1, 2, 3], pam_alpha=0.0)
    relu.load_state_dict(pam.state_dict())
    for name, model in (("pam", pam), ("relu", relu)):
        save_model(tmp_path / f"{name}.pt", model, {**classifier_metadata(model), "crop": 32})
    config = _tiny_cue_config()
    _, own = _extract(tmp_path, records, tmp_path / "pam.pt", config, 1)
    _, built = _extract(tmp_path, records, tmp_path / "relu.pt", config, 1)
    config["cues"]["pam_alpha"] = 0.0
    _, swapped = _extract(tmp_path, records, tmp_path / "pam.pt", config, 1)
    for image_id in built:
        np.testing.assert_array_equal(swapped[image_id].maps, built[image_id].maps)
    assert any(not np.array_equal(own[i].maps, built[i].maps) for i in built if own[i].maps.size)


def test_point_cues_need_no_model(tmp_path) -> None:
    records, truth = make_split(tmp_path, [(32, 40)] * 3)
    config = {"cues": {"source": "gt_points"}, "supervision": "image", "shards": 1}
    attrs, cues = _extract(tmp_path, records, "", config, 1)
    assert attrs["source"] == "gt_points"
    assert cues[3].peaks.tolist() == [[9, 9, 0, 1.0], [26, 20, 1, 1.0]]
    assert cues[3].maps is None and len(cues) == len(truth)


def test_match_cues_and_statistics_by_hand() -> None:
    masks = np.zeros((3, 10, 10), bool)
    masks[0, 0:4, 0:4] = True  # class 0, hit by two cues
    masks[1, 5:9, 5:9] = True  # class 0, hit once
    masks[2, 0:4, 6:10] = True  # class 1, missed (its only cue has the wrong class)
    labels = np.array([0, 0, 1])
    peaks = np.array(
        [[1, 1, 0, 0.9], [2, 2, 0, 0.5], [6, 6, 0, 0.8], [1, 7, 0, 0.95], [9, 0, 1, 0.75]],
        np.float32,
    )
    hits, background = match_cues(peaks, masks, labels)
    assert hits.tolist() == [2, 1, 0]
    assert background.tolist() == [False, False, False, True, True]
    table = cue_statistics([(peaks, masks, labels)], 2)
    assert table["total"] == {
        "instances": 3,
        "hit_once": 1,
        "missed": 1,
        "missed_touching": 0,
        "hit_multiple": 1,
        "cues": 5,
        "cues_on_background": 2,
    }
    assert table["1"]["missed"] == 1 and table["0"]["cues_on_background"] == 1
    above = cue_statistics([(peaks, masks, labels)], 2, min_score=0.7)
    assert above["0"]["hit_once"] == 2 and above["0"]["hit_multiple"] == 0
    empty = cue_statistics([(np.zeros((0, 4)), np.zeros((0, 5, 5), bool), np.zeros(0))], 2)
    assert empty["total"]["instances"] == 0 and empty["total"]["cues"] == 0


def test_touching_same_class_by_hand() -> None:
    # 0 and 1 (class 0) share an edge; 2 (class 0) meets 1 only at a corner (8-neighbours);
    # 3 (class 1) shares an edge with 0 but has another class; 4 (class 0) is two pixels
    # away from 2 and touches nothing.
    masks = np.zeros((5, 10, 12), bool)
    masks[0, 0:3, 0:3] = True
    masks[1, 0:3, 3:5] = True
    masks[2, 3:5, 5:7] = True
    masks[3, 3:5, 0:3] = True
    masks[4, 3:5, 9:12] = True
    labels = np.array([0, 0, 0, 1, 0])
    assert touching_same_class(masks, labels).tolist() == [True, True, True, False, False]
    assert touching_same_class(np.zeros((0, 4, 4), bool), np.zeros(0)).tolist() == []
    # One cue in instance 0: 1 and 2 are missed touching their class, 3 and 4 missed alone.
    table = cue_statistics([(np.array([[1, 1, 0, 0.9]], np.float32), masks, labels)], 2)
    assert table["0"]["missed"] == 3 and table["0"]["missed_touching"] == 2
    assert table["1"]["missed"] == 1 and table["1"]["missed_touching"] == 0
