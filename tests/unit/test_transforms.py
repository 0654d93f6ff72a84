"""Paired training augmentation and evaluation transform (SPEC §2.1, §6.1), exact answers.

Most tests use crop 32 and a 65×65 (or 33×65) image: the DeepLab resize then keeps the size
(65 = 2·32 + 1 is the maximum for crop 32), so with scale 1 the geometry is a pure crop.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import pytest

from bestie.data.classification import IMAGENET_MEAN, IMAGENET_STD
from bestie.data.photometric import PhotometricParams, draw_photometric, photometric_distort
from bestie.data.targets import make_targets
from bestie.data.transforms import (
    IMAGE_PAD_VALUE,
    AugmentationParams,
    EvalTransform,
    Sample,
    TrainAugmentation,
    crop_with_fill,
    deeplab_resize_shape,
    eval_resize_shape,
    normalize_image,
    scale_factors,
)
from bestie.structures import Instances

NO_COLOUR = PhotometricParams()


def _sample(height, width, boxes=(), labels=None, points=(), seed=0) -> Sample:
    """Random image, a map with class label+1 in each box, one box mask per instance."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    labels = list(labels) if labels is not None else [0] * len(boxes)
    semantic = np.zeros((height, width), np.uint8)
    masks = np.zeros((len(boxes), height, width), bool)
    for mask, (y0, y1, x0, x1), label in zip(masks, boxes, labels, strict=True):
        mask[y0:y1, x0:x1] = True
        semantic[y0:y1, x0:x1] = label + 1
    points = np.asarray(points, np.int64).reshape(-1, 3)
    return Sample(image, semantic, Instances(masks, labels), points)


def _params(scale=1.0, top=0, left=0, flip=False, photometric=NO_COLOUR) -> AugmentationParams:
    return AugmentationParams(photometric, scale, top, left, flip)


def _official_crop(array, top, left, size, fill):
    """Pad with a (top, left) split then crop, as the official RandomCrop does it."""
    pad_top, pad_left = max(-top, 0), max(-left, 0)
    pad_bottom = max(size - array.shape[0] - pad_top, 0)
    pad_right = max(size - array.shape[1] - pad_left, 0)
    widths = [(pad_top, pad_bottom), (pad_left, pad_right)] + [(0, 0)] * (array.ndim - 2)
    padded = np.pad(array, widths, constant_values=fill)
    y, x = max(top, 0), max(left, 0)
    return padded[y : y + size, x : x + size]


# ----------------------------------------------------------------------------- sizes
@pytest.mark.parametrize(
    ("size", "expected"),
    [((375, 500), (353, 449)), ((500, 375), (449, 353)), ((333, 500), (321, 449)),
     ((500, 500), (449, 449))],
)  # fmt: skip
def test_deeplab_resize_shape_matches_the_measured_official_sizes(size, expected) -> None:
    assert deeplab_resize_shape(*size, 416) == expected


def test_deeplab_resize_keeps_the_maximum_size_and_rejects_empty_images() -> None:
    assert deeplab_resize_shape(65, 65, 32) == (65, 65)
    assert deeplab_resize_shape(33, 65, 32) == (33, 65)
    with pytest.raises(ValueError, match="positive"):
        deeplab_resize_shape(0, 10, 416)


def test_eval_resize_shape_rounds_up_to_multiples_of_32() -> None:
    assert eval_resize_shape(375, 500) == (384, 512)
    assert eval_resize_shape(384, 512) == (384, 512)


def test_scale_factors_step_by_a_tenth() -> None:
    np.testing.assert_allclose(scale_factors(0.7, 1.3), [0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3])
    assert scale_factors(1.0, 1.0).tolist() == [1.0]
    with pytest.raises(ValueError, match="scale_min"):
        scale_factors(1.3, 0.7)


# ----------------------------------------------------------------------------- geometry
def test_flip_mirrors_a_pixel_and_negates_offset_dx() -> None:
    sample = _sample(65, 65, boxes=[(10, 11, 5, 6), (20, 21, 4, 9)], points=[[10, 5, 0]])
    augmentation = TrainAugmentation(32, 1.0, 1.0)
    plain = augmentation.apply(sample, _params())
    flipped = augmentation.apply(sample, _params(flip=True))
    assert np.argwhere(plain.instances.masks[0]).tolist() == [[10, 5]]
    assert np.argwhere(flipped.instances.masks[0]).tolist() == [[10, 32 - 1 - 5]]
    assert flipped.points.tolist() == [[10, 26, 0]]
    # The bar x = 4..8 has centroid x = 6; mirrored, x = 23..27 with centroid 25.
    _, offset, weight = make_targets(plain.instances, (32, 32), 1)
    _, offset_flipped, weight_flipped = make_targets(flipped.instances, (32, 32), 1)
    assert offset[1, 20, 4] == 2 and offset_flipped[1, 20, 27] == -2
    np.testing.assert_array_equal(offset_flipped[1][:, ::-1], -offset[1])
    np.testing.assert_array_equal(offset_flipped[0][:, ::-1], offset[0])
    np.testing.assert_array_equal(weight_flipped[:, ::-1], weight)
    np.testing.assert_array_equal(flipped.semantic, plain.semantic[:, ::-1])
    np.testing.assert_array_equal(flipped.image, plain.image[:, :, ::-1])


@pytest.mark.parametrize("seed", range(6))
def test_pad_and_crop_bookkeeping_follows_the_drawn_window(seed) -> None:
    # 33×65 keeps its size through the DeepLab resize; scale 0.7 gives 23×46 (cv2 rounds
    # 45.5 half to even), so rows are padded (top in [-9, 0]) and columns cropped.
    sample = _sample(33, 65, boxes=[(10, 20, 20, 30)], labels=[2], points=[[10, 20, 2]])
    augmentation = TrainAugmentation(32, 0.7, 0.7)
    params = augmentation.draw(33, 65, np.random.default_rng(seed))
    assert params.scale == 0.7 and -9 <= params.top <= 0 and 0 <= params.left <= 14
    params = dataclasses.replace(params, photometric=NO_COLOUR, flip=False)
    out = augmentation.apply(sample, params)
    top, left = params.top, params.left
    # Point: int(10 / 33 · 33) = 10, times 0.7 = 7.0, then minus the window corner.
    expected_y = math.trunc(math.trunc(10 / 33 * 33) * 0.7) - top
    expected_x = math.trunc(math.trunc(20 / 65 * 65) * 0.7) - left
    assert out.points.tolist() == [[expected_y, expected_x, 2]]
    scaled = cv2.resize(sample.semantic, None, fx=0.7, fy=0.7, interpolation=cv2.INTER_NEAREST)
    assert scaled.shape == (23, 46)
    np.testing.assert_array_equal(out.semantic, _official_crop(scaled, top, left, 32, 0))
    np.testing.assert_array_equal(out.instances.masks[0], out.semantic == 3)
    assert out.instances.labels.tolist() == [2]
    # Padded rows: the image holds the normalised mean colour, the map background.
    if top < 0:
        expected = (np.array(IMAGE_PAD_VALUE) / 255 - IMAGENET_MEAN) / IMAGENET_STD
        np.testing.assert_allclose(out.image[:, 0, 0], expected, atol=1e-6)
        assert (out.semantic[:-top] == 0).all() and not out.instances.masks[0, :-top].any()


@pytest.mark.parametrize("pad_semantic", [0, 255])
def test_padding_values_of_image_map_and_masks(pad_semantic) -> None:
    sample = _sample(33, 65, boxes=[(0, 33, 0, 65)], labels=[0])
    augmentation = TrainAugmentation(32, 0.7, 0.7, pad_semantic=pad_semantic)
    out = augmentation.apply(sample, _params(0.7, -9, 0))  # 23 rows: 9 padded above
    assert (out.semantic[:9] == pad_semantic).all() and (out.semantic[9:] == 1).all()
    assert not out.instances.masks[0, :9].any() and out.instances.masks[0, 9:].all()
    mean = (np.array(IMAGE_PAD_VALUE) / 255 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(out.image[:, :9], np.broadcast_to(mean[:, None, None], (3, 9, 32)),
                               atol=1e-6)  # fmt: skip


def test_instances_cropped_away_are_dropped_with_their_labels() -> None:
    sample = _sample(65, 65, boxes=[(2, 6, 2, 6), (50, 60, 50, 60)], labels=[0, 1])
    sample.instances.scores = np.array([0.5, 0.9], np.float32)
    out = TrainAugmentation(32, 1.0, 1.0).apply(sample, _params())
    assert len(out.instances) == 1 and out.instances.labels.tolist() == [0]
    assert out.instances.scores.tolist() == [0.5] and out.instances.centers is None
    empty = TrainAugmentation(32, 1.0, 1.0).apply(_sample(65, 65), _params(top=5, left=5))
    assert len(empty.instances) == 0 and empty.instances.masks.shape == (0, 32, 32)
    assert empty.points.shape == (0, 3)


def test_points_outside_the_crop_are_dropped() -> None:
    sample = _sample(65, 65, points=[[3, 3, 0], [40, 40, 1], [10, 50, 1]])
    out = TrainAugmentation(32, 1.0, 1.0).apply(sample, _params(top=2, left=2))
    assert out.points.tolist() == [[1, 1, 0]]


@pytest.mark.parametrize("count", [2, 20, 40])
def test_overlapping_and_many_masks_survive_exactly(count) -> None:
    rng = np.random.default_rng(count)
    corners = [(20, 20), (25, 28)] + rng.integers(0, 50, (count - 2, 2)).tolist()
    boxes = [(y, y + 12, x, x + 15) for y, x in corners]
    sample = _sample(65, 65, boxes=boxes, labels=rng.integers(0, 5, count))
    assert (sample.instances.masks.sum(axis=0) > 1).any()
    augmentation = TrainAugmentation(32, 0.7, 0.7)
    params = _params(scale=0.7, top=-3, left=5, flip=True)
    out = augmentation.apply(sample, params)
    scaled = [
        cv2.resize(m.view(np.uint8), None, fx=0.7, fy=0.7, interpolation=cv2.INTER_NEAREST)
        for m in sample.instances.masks
    ]
    expected = np.stack([_official_crop(m, -3, 5, 32, 0)[:, ::-1] for m in scaled]).astype(bool)
    keep = expected.any(axis=(1, 2))
    np.testing.assert_array_equal(out.instances.masks, expected[keep])
    assert out.instances.labels.tolist() == sample.instances.labels[keep].tolist()


def test_crop_with_fill_pads_each_channel_with_its_value() -> None:
    array = np.arange(2 * 3 * 6, dtype=np.uint8).reshape(2, 3, 6)
    for channels in (3, 6):  # cv2 border (<= 4 channels) and NumPy paths
        part = array[:, :, :channels]
        fill = np.arange(10, 10 + channels)
        window = crop_with_fill(part, -1, 1, 4, fill)
        np.testing.assert_array_equal(window[1:3, 0:2], part[:, 1:3])
        assert (window[0] == fill).all() and (window[:, 2:] == fill).all()
    assert crop_with_fill(array, 0, 1, 2, 0).base is not None  # inside: a view


# ----------------------------------------------------------------------------- photometric
def _official_photometric(image, params):
    """The official float32 pipeline: HSV round trip always, wrap, clip, truncate."""
    pixels = image.astype(np.float32)
    if params.brightness is not None:
        pixels = np.clip(pixels + np.float32(params.brightness), 0, 255)
    if params.contrast is not None and params.contrast_first:
        pixels = np.clip(pixels * np.float32(params.contrast), 0, 255)
    hsv = cv2.cvtColor(pixels, cv2.COLOR_RGB2HSV)
    if params.hue is not None:
        hue = hsv[:, :, 0] + np.float32(params.hue)
        hue[hue > 360] -= 360
        hue[hue < 0] += 360
        hsv[:, :, 0] = hue
    pixels = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if params.contrast is not None and not params.contrast_first:
        pixels = np.clip(pixels * np.float32(params.contrast), 0, 255)
    return np.clip(pixels, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    "params",
    [PhotometricParams(12.5, 1.4, -30.0, True), PhotometricParams(-16.0, 0.6, 35.0, False),
     PhotometricParams(None, None, -36.0, True), PhotometricParams(8.0, 1.5, None, False),
     PhotometricParams(None, 0.5, None, True)],
)  # fmt: skip
def test_photometric_matches_the_official_float_pipeline(params) -> None:
    image = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    out = photometric_distort(image, params)
    expected = _official_photometric(image, params)
    assert out.dtype == np.uint8 and out.shape == image.shape
    if params.hue is not None:
        np.testing.assert_array_equal(out, expected)
    else:  # the skipped HSV round trip changes truncated values by at most one grey level
        assert np.abs(out.astype(int) - expected).max() <= 1


def test_photometric_clips_to_the_uint8_range_and_keeps_geometry() -> None:
    white = np.full((4, 4, 3), 250, np.uint8)
    assert (photometric_distort(white, PhotometricParams(16.0, 1.5)) == 255).all()
    black = np.full((4, 4, 3), 5, np.uint8)
    assert (photometric_distort(black, PhotometricParams(-16.0, None)) == 0).all()
    sample = _sample(65, 65, boxes=[(3, 20, 4, 30)], points=[[5, 6, 0]])
    augmentation = TrainAugmentation(32, 1.0, 1.0)
    plain = augmentation.apply(sample, _params(top=1, left=2))
    distorted = augmentation.apply(
        sample, _params(top=1, left=2, photometric=PhotometricParams(10.0, 1.3, 20.0, False))
    )
    np.testing.assert_array_equal(distorted.semantic, plain.semantic)
    np.testing.assert_array_equal(distorted.instances.masks, plain.instances.masks)
    np.testing.assert_array_equal(distorted.points, plain.points)
    assert not np.array_equal(distorted.image, plain.image)


def test_photometric_draws_stay_in_range_and_nothing_is_identity() -> None:
    rng = np.random.default_rng(0)
    draws = [draw_photometric(rng) for _ in range(400)]
    brightness = [d.brightness for d in draws if d.brightness is not None]
    hues = [d.hue for d in draws if d.hue is not None]
    contrasts = [d.contrast for d in draws if d.contrast is not None]
    assert 150 < len(brightness) < 250 and 150 < len(hues) < 250
    assert max(map(abs, brightness)) <= 16 and max(map(abs, hues)) <= 36
    assert min(contrasts) >= 0.5 and max(contrasts) <= 1.5
    image = np.zeros((2, 2, 3), np.uint8)
    assert photometric_distort(image, NO_COLOUR) is image


# ----------------------------------------------------------------------------- whole calls
def test_call_output_shapes_dtypes_and_determinism() -> None:
    sample = _sample(375, 500, boxes=[(50, 200, 60, 300), (100, 300, 250, 480)], labels=[1, 4])
    augmentation = TrainAugmentation(416, 0.7, 1.3)
    image, semantic, masks = sample.image.copy(), sample.semantic.copy(), sample.instances.masks
    masks = masks.copy()
    first = augmentation(sample, np.random.default_rng(7))
    assert np.array_equal(sample.image, image) and np.array_equal(sample.semantic, semantic)
    assert np.array_equal(sample.instances.masks, masks)  # the input is never modified
    again = augmentation(sample, np.random.default_rng(7))
    assert first.image.shape == (3, 416, 416) and first.image.dtype == np.float32
    assert first.semantic.shape == (416, 416) and first.semantic.dtype == np.uint8
    assert first.instances.masks.shape[1:] == (416, 416)
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.instances.masks, again.instances.masks)
    assert set(np.unique(first.semantic)) <= {0, 2, 5}


def test_invalid_inputs_raise_value_errors() -> None:
    sample = _sample(65, 65)
    augmentation = TrainAugmentation(32, 1.0, 1.0)
    with pytest.raises(ValueError, match="semantic map"):
        augmentation.apply(dataclasses.replace(sample, semantic=sample.semantic[1:]), _params())
    with pytest.raises(ValueError, match="points"):
        augmentation.apply(dataclasses.replace(sample, points=np.zeros((1, 2), int)), _params())
    with pytest.raises(ValueError, match="crop"):
        TrainAugmentation(0, 1.0, 1.0)
    with pytest.raises(ValueError, match="pad_semantic"):
        TrainAugmentation(32, 1.0, 1.0, pad_semantic=300)


def test_normalize_and_eval_transform() -> None:
    image = np.zeros((375, 500, 3), np.uint8)
    image[...] = (255, 0, 128)
    planes = normalize_image(image)
    assert planes.shape == (3, 375, 500) and planes.dtype == np.float32
    expected = (np.array([1.0, 0.0, 128 / 255]) - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(planes[:, 7, 9], expected, atol=1e-6)
    out = EvalTransform()(image)
    assert out.shape == (3, 384, 512)
    np.testing.assert_allclose(out[:, 100, 100], expected, atol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        EvalTransform()(image.astype(np.float32))
