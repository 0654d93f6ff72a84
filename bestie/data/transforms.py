"""Paired training augmentation and evaluation transform of the instance network.

SPEC §2.1 (training) and §6.1 (evaluation). The training augmentation transforms an image,
its WSSS map, its pseudo instance masks and its points together:

1. photometric distortion (brightness, contrast and hue; ``bestie.data.photometric``);
2. DeepLab-style resize: the long side to ``crop + 64`` rounded down to 32k + 1 (449 for a
   416 crop), the short side rounded up to 32k + 1 (``deeplab_resize_shape``);
3. random scale by a factor from {scale_min, scale_min + 0.1, ..., scale_max};
4. random crop of crop×crop, padding first with a random split when the image is smaller
   (image with the mean colour (123, 116, 103), map with ``pad_semantic``, masks with False);
5. horizontal flip with p = 0.5;
6. ImageNet normalisation to float32 [3, crop, crop].

Every random choice is drawn from the NumPy generator passed in (``TrainAugmentation.draw``),
then applied deterministically (``TrainAugmentation.apply``), so tests can fix the choices.

Masks travel as bit planes: instance k is bit k % 8 of byte plane k // 8 of one uint8 label
stack that also holds the WSSS map in channel 0. One nearest-neighbour resize and one crop of
that stack move the map and all K masks with the same sampling positions as the map, without
resizing K full masks, and overlapping masks (e.g. ground truth) survive exactly: no
assumption of disjoint instances is made. Instances whose mask is empty after the crop are
dropped. Points are (y, x, class); their coordinates follow the official arithmetic (the
resize truncates, the scale keeps floats, points outside the crop are dropped, the flip maps
x to crop - 1 - x) and are truncated to integers at the end.

Differences from the official code (below one grey level, none geometric): images are resized
as uint8 (cv2 rounds) instead of as float64 truncated back to uint8, and the HSV round trip is
skipped when no hue shift is drawn (brightness and contrast are then one lookup table).

Reference: clovaai/BESTIE utils/transforms/transforms.py ``Compose``, ``Resize``,
``RandomScale``, ``RandomCrop``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``,
https://github.com/clovaai/BESTIE/blob/85636d98f2b186980af88eeca91d3075baa92189/utils/transforms/transforms.py
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import cv2
import numpy as np

from bestie.data.classification import IMAGENET_MEAN, IMAGENET_STD
from bestie.data.photometric import PhotometricParams, draw_photometric, photometric_distort
from bestie.structures import Instances

__all__ = [
    "IMAGE_PAD_VALUE",
    "AugmentationParams",
    "EvalTransform",
    "PhotometricParams",
    "Sample",
    "TrainAugmentation",
    "crop_with_fill",
    "deeplab_resize_shape",
    "draw_photometric",
    "eval_resize_shape",
    "normalize_image",
    "photometric_distort",
    "scale_factors",
]

IMAGE_PAD_VALUE = (123, 116, 103)  # the ImageNet mean · 255, truncated, as the official pad
RESIZE_FACTOR = 32  # DeepLab resize: output sides are multiples of 32, plus one
SCALE_STEP = 0.1
MAX_INSTANCES = 8 * 500  # cv2.resize handles at most 512 channels


@dataclasses.dataclass
class Sample:
    """One training sample, before or after ``TrainAugmentation``.

    Attributes:
        image: uint8 RGB [H, W, 3] before; float32 [3, crop, crop] normalised after.
        semantic: uint8 [H, W] WSSS map (0 background, c + 1 class c, 255 ignore).
        instances: masks bool [K, H, W] with labels [K] (and optional scores). After the
            augmentation, empty instances are gone and ``centers``/``cues`` are None: the
            centre is recomputed from the transformed mask.
        points: int64 [P, 3] as (y, x, class).
    """

    image: np.ndarray
    semantic: np.ndarray
    instances: Instances
    points: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 3), np.int64))


@dataclasses.dataclass(frozen=True)
class AugmentationParams:
    """Every random choice of one ``TrainAugmentation`` call.

    Attributes:
        photometric: the photometric distortion.
        scale: the random scale factor.
        top, left: the crop window's corner in the scaled image; negative values pad
            above/left (the random split of the padding).
        flip: horizontal flip after the crop.
    """

    photometric: PhotometricParams
    scale: float
    top: int
    left: int
    flip: bool


def deeplab_resize_shape(
    height: int, width: int, crop: int, *, factor: int = RESIZE_FACTOR
) -> tuple[int, int]:
    """Output (height, width) of the DeepLab resize with min = max = crop + 64.

    The short side is scaled to crop + 64; if that pushes the long side past the maximum
    (crop + 64 rounded down to factor·k + 1), the long side is scaled to that maximum
    instead. Both sides are then rounded up to factor·k + 1, minus ``factor`` where that
    exceeds the maximum. For crop 416: 375×500 → 353×449, 333×500 → 321×449.

    Reference: clovaai/BESTIE utils/transforms/transforms.py ``Resize``.
    """
    if min(height, width) <= 0 or crop <= 0:
        raise ValueError(f"image size {height}x{width} and crop {crop} must be positive")
    target = crop + 64
    maximum = target - (target - 1) % factor
    scale = target / min(height, width)
    size = [math.floor(height * scale), math.floor(width * scale)]
    if max(size) > maximum:
        scale = maximum / max(height, width)
        size = [math.floor(height * scale), math.floor(width * scale)]
    size = [side + (factor - (side - 1) % factor) % factor for side in size]
    size = [side - factor if side > maximum else side for side in size]
    return size[0], size[1]


def eval_resize_shape(height: int, width: int, divisor: int = RESIZE_FACTOR) -> tuple[int, int]:
    """(⌈H/d⌉·d, ⌈W/d⌉·d): the evaluation input size (SPEC §6.1); 375×500 → 384×512."""
    return -(-height // divisor) * divisor, -(-width // divisor) * divisor


def scale_factors(scale_min: float, scale_max: float, step: float = SCALE_STEP) -> np.ndarray:
    """The random-scale choices {min, min + step, ..., max}, float64 [N].

    Reference: clovaai/BESTIE utils/transforms/transforms.py ``RandomScale.get_random_scale``.
    """
    if not 0 < scale_min <= scale_max:
        raise ValueError(f"need 0 < scale_min <= scale_max, got {scale_min}, {scale_max}")
    if scale_min == scale_max:
        return np.array([scale_min], np.float64)
    return np.linspace(scale_min, scale_max, round((scale_max - scale_min) / step) + 1)


def normalize_image(
    image: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> np.ndarray:
    """uint8 RGB [H, W, 3] → float32 [3, H, W] as (image / 255 − mean) / std.

    Reference: clovaai/BESTIE utils/transforms/transforms.py ``ToTensor``, ``Normalize``.
    """
    scale = (1.0 / (255.0 * np.asarray(std, np.float64))).astype(np.float32)
    shift = (-np.asarray(mean, np.float64) / np.asarray(std, np.float64)).astype(np.float32)
    planes = np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.float32)
    planes *= scale[:, None, None]
    planes += shift[:, None, None]
    return planes


def crop_with_fill(
    array: np.ndarray, top: int, left: int, size: int, fill: float | Sequence[float]
) -> np.ndarray:
    """The size×size window at (top, left) of an [H, W, ...] array, ``fill`` outside it.

    Args:
        array: [H, W] or [H, W, C].
        top, left: window corner; may be negative or run past the far border (padding).
        size: window side.
        fill: scalar or per-channel [C] value of the pixels outside ``array``.

    Returns:
        [size, size, ...] of ``array``'s dtype; a view when the window lies inside.

    Reference: clovaai/BESTIE utils/transforms/transforms.py ``RandomCrop`` (pad + crop).
    """
    height, width = array.shape[:2]
    if top >= 0 and left >= 0 and top + size <= height and left + size <= width:
        return array[top : top + size, left : left + size]
    y0, y1 = max(top, 0), min(top + size, height)
    x0, x1 = max(left, 0), min(left + size, width)
    channels = array.shape[2] if array.ndim == 3 else 1
    if y1 > y0 and x1 > x0 and channels <= 4:
        # cv2 pads in C, ~30x faster than a NumPy fill broadcast over a short channel axis.
        values = np.broadcast_to(np.asarray(fill, np.float64), (channels,))
        border = (y0 - top, top + size - y1, x0 - left, left + size - x1)
        padded = cv2.copyMakeBorder(
            array[y0:y1, x0:x1], *border, cv2.BORDER_CONSTANT, value=tuple(values.tolist())
        )
        return padded.reshape((size, size) + array.shape[2:])
    window = np.empty((size, size) + array.shape[2:], array.dtype)
    window[...] = fill
    if y1 > y0 and x1 > x0:
        window[y0 - top : y1 - top, x0 - left : x1 - left] = array[y0:y1, x0:x1]
    return window


class TrainAugmentation:
    """The SPEC §2.1 training augmentation of (image, WSSS map, instances, points).

    Args:
        crop: side of the square output (the official 416).
        scale_min, scale_max: random-scale range; factors step by ``scale_step``.
        pad_semantic: WSSS-map value of padded pixels: 0 (background, the official) or 255
            (ignored by the semantic loss).
        mean, std: normalisation (ImageNet by default; the official COCO values are
            (0.471, 0.448, 0.408) and (0.234, 0.239, 0.242)).
        scale_step: spacing of the scale factors (0.1).

    Reference: clovaai/BESTIE utils/LoadData.py ``get_dataset(mode='train')`` and
    utils/transforms/transforms.py ``Compose``.
    """

    def __init__(
        self,
        crop: int,
        scale_min: float,
        scale_max: float,
        pad_semantic: int = 0,
        *,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        scale_step: float = SCALE_STEP,
    ) -> None:
        if crop <= 0:
            raise ValueError(f"crop must be positive, got {crop}")
        if not 0 <= pad_semantic <= 255:
            raise ValueError(f"pad_semantic must lie in [0, 255], got {pad_semantic}")
        self.crop = int(crop)
        self.scales = scale_factors(scale_min, scale_max, scale_step)
        self.pad_semantic = int(pad_semantic)
        self.mean = tuple(mean)
        self.std = tuple(std)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """Draw the random choices from ``rng`` and apply them (see ``apply``)."""
        height, width = sample.image.shape[:2]
        return self.apply(sample, self.draw(height, width, rng))

    def draw(self, height: int, width: int, rng: np.random.Generator) -> AugmentationParams:
        """Draw every random choice for an image of the given size (before resizing)."""
        photometric = draw_photometric(rng)
        scale = float(self.scales[rng.integers(len(self.scales))])
        resized = deeplab_resize_shape(height, width, self.crop)
        # cv2 rounds the scaled size half to even, as Python's round does.
        top, left = (self._draw_corner(round(side * scale), rng) for side in resized)
        return AugmentationParams(photometric, scale, top, left, bool(rng.random() < 0.5))

    def _draw_corner(self, side: int, rng: np.random.Generator) -> int:
        """Uniform crop start, or minus a uniform share of the padding when side < crop.

        The official code draws the padding split, then the crop offset in the padded
        image; one of the two is always 0, so a single uniform draw over the window corners
        has the same distribution.
        """
        slack = side - self.crop
        return int(rng.integers(min(slack, 0), max(slack, 0) + 1))

    def apply(self, sample: Sample, params: AugmentationParams) -> Sample:
        """Apply drawn choices to a sample.

        Args:
            sample: image uint8 [H, W, 3], semantic uint8 [H, W], instances [K, H, W],
                points int [P, 3] (y, x, class).
            params: from ``draw``.

        Returns:
            A new Sample: image float32 [3, crop, crop], semantic uint8 [crop, crop], the
            non-empty instances [K', crop, crop] (``centers`` None), points int64 [P', 3].
        """
        _check_sample(sample)
        count = len(sample.instances)
        image = photometric_distort(sample.image, params.photometric)
        labels = _encode_labels(sample.semantic, sample.instances.masks)
        coords = sample.points[:, :2].astype(np.float64)
        image, labels, coords = self._resize(image, labels, coords, params.scale)
        image, labels, coords, inside = self._crop(image, labels, coords, params)
        if params.flip:
            image, labels = image[:, ::-1], labels[:, ::-1]
            coords[:, 1] = self.crop - 1 - coords[:, 1]
        masks = _decode_masks(labels, count)
        keep = masks.any(axis=(1, 2))
        instances = Instances(masks[keep], sample.instances.labels[keep])
        if sample.instances.scores is not None:
            instances.scores = sample.instances.scores[keep]
        points = np.concatenate([np.trunc(coords), sample.points[inside, 2:3]], axis=1)
        return Sample(
            normalize_image(image, self.mean, self.std),
            np.ascontiguousarray(labels[:, :, 0]),
            instances,
            points.astype(np.int64).reshape(-1, 3),
        )

    def _resize(
        self, image: np.ndarray, labels: np.ndarray, coords: np.ndarray, scale: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """DeepLab resize, then the random scale (image bilinear, labels nearest)."""
        height, width = image.shape[:2]
        new_height, new_width = deeplab_resize_shape(height, width, self.crop)
        image = cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_LINEAR)
        labels = cv2.resize(labels, (new_width, new_height), interpolation=cv2.INTER_NEAREST)
        # The official int(x / W * W') of the integer input point, then a float multiply.
        coords = np.trunc(coords / (height, width) * (new_height, new_width))
        if scale != 1.0:
            # fx/fy (not a size) so cv2 samples exactly as the official RandomScale does.
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
            labels = cv2.resize(labels, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
            coords = coords * scale
        return image, labels, coords

    def _crop(
        self, image: np.ndarray, labels: np.ndarray, coords: np.ndarray, params: AugmentationParams
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Pad and crop the window; returns the points inside and their selector [P]."""
        label_fill = np.zeros(labels.shape[2], np.uint8)
        label_fill[0] = self.pad_semantic
        image = crop_with_fill(image, params.top, params.left, self.crop, IMAGE_PAD_VALUE)
        labels = crop_with_fill(labels, params.top, params.left, self.crop, label_fill)
        coords = coords - (params.top, params.left)
        inside = ((coords >= 0) & (coords < self.crop)).all(axis=1)
        return image, labels, coords[inside], inside


class EvalTransform:
    """Resize to multiples of ``size_divisor`` (bilinear) and normalise (SPEC §6.1).

    Args:
        size_divisor: 32 in the official code; 375×500 becomes 384×512.
        mean, std: normalisation (ImageNet by default).

    The official code resizes with PIL's bilinear filter; this uses cv2's (both upsample
    here, so they differ by rounding only).

    Reference: clovaai/BESTIE utils/LoadData.py ``VOCTestDataset.__getitem__``.
    """

    def __init__(
        self,
        size_divisor: int = RESIZE_FACTOR,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if size_divisor <= 0:
            raise ValueError(f"size_divisor must be positive, got {size_divisor}")
        self.size_divisor = size_divisor
        self.mean = tuple(mean)
        self.std = tuple(std)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """uint8 RGB [H, W, 3] → float32 [3, ⌈H/d⌉·d, ⌈W/d⌉·d]."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
        height, width = eval_resize_shape(*image.shape[:2], self.size_divisor)
        if (height, width) != image.shape[:2]:
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        return normalize_image(image, self.mean, self.std)


def _check_sample(sample: Sample) -> None:
    image, semantic, masks = sample.image, sample.semantic, sample.instances.masks
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    if semantic.dtype != np.uint8 or semantic.shape != image.shape[:2]:
        raise ValueError(
            f"semantic map must be uint8 {image.shape[:2]}, got {semantic.dtype} {semantic.shape}"
        )
    if masks.shape[1:] != image.shape[:2]:
        raise ValueError(f"instance masks are {masks.shape[1:]}, image is {image.shape[:2]}")
    if len(masks) > MAX_INSTANCES:
        raise ValueError(f"at most {MAX_INSTANCES} instances per image, got {len(masks)}")
    points = sample.points
    if points.ndim != 2 or points.shape[1] != 3 or not np.issubdtype(points.dtype, np.integer):
        raise ValueError(
            f"points must be int [P, 3] (y, x, class), got {points.dtype} {points.shape}"
        )


def _label_channels(count: int) -> int:
    """Channels of the label stack: the map plus ceil(K/8) bit planes, rounded up to 2, 4 or a
    multiple of 8, the pixel sizes cv2's nearest resize handles fastest."""
    needed = 1 + -(-count // 8)
    if needed <= 4:
        return 2 if needed <= 2 else 4
    return -(-needed // 8) * 8


def _encode_labels(semantic: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """uint8 [H, W, C]: channel 0 the map, bit k % 8 of channel 1 + k // 8 mask k."""
    height, width = semantic.shape
    labels = np.zeros((height, width, _label_channels(len(masks))), np.uint8)
    labels[:, :, 0] = semantic
    for index, mask in enumerate(masks):
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            continue
        y0, y1 = rows[0], rows[-1] + 1
        cols = np.flatnonzero(mask[y0:y1].any(axis=0))
        x0, x1 = cols[0], cols[-1] + 1
        # Only the bounding box is touched: small instances cost little.
        plane = labels[y0:y1, x0:x1, 1 + index // 8]
        plane |= mask[y0:y1, x0:x1].view(np.uint8) << np.uint8(index % 8)
    return labels


def _decode_masks(labels: np.ndarray, count: int) -> np.ndarray:
    """bool [K, H, W] from the bit planes of a label stack [H, W, C]."""
    masks = np.empty((count,) + labels.shape[:2], bool)
    for byte in range(-(-count // 8)):
        plane = np.ascontiguousarray(labels[:, :, 1 + byte])
        for bit in range(min(8, count - 8 * byte)):
            np.not_equal(plane & np.uint8(1 << bit), 0, out=masks[8 * byte + bit])
    return masks
