"""Photometric distortion of the instance network's training augmentation (SPEC §2.1 step 1).

Brightness ±16 (p = 0.5); then, with p = 0.5 each way, contrast before or after the hue
shift; contrast U(0.5, 1.5) (p = 0.5); hue U(−36°, 36°) (p = 0.5) in float HSV; clipped and
truncated to uint8. No saturation jitter. Random choices are drawn first
(``draw_photometric``) and applied deterministically (``photometric_distort``).

Reference: clovaai/BESTIE utils/transforms/transforms.py ``PhotometricDistort``,
``RandomBrightness``, ``RandomContrast``, ``RandomHue``, ``ConvertColor``,
https://github.com/clovaai/BESTIE/blob/85636d98f2b186980af88eeca91d3075baa92189/utils/transforms/transforms.py
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

__all__ = ["PhotometricParams", "draw_photometric", "photometric_distort"]

BRIGHTNESS_DELTA = 16.0
CONTRAST_RANGE = (0.5, 1.5)
HUE_DELTA = 36.0  # degrees


@dataclasses.dataclass(frozen=True)
class PhotometricParams:
    """Drawn photometric distortion; None means the step is not applied.

    Attributes:
        brightness: added value in [-16, 16].
        contrast: multiplier in [0.5, 1.5].
        hue: hue shift in degrees, in [-36, 36].
        contrast_first: contrast before the hue shift (else after).
    """

    brightness: float | None = None
    contrast: float | None = None
    hue: float | None = None
    contrast_first: bool = True


def draw_photometric(rng: np.random.Generator) -> PhotometricParams:
    """Draw the photometric distortion, in the official order of draws.

    Reference: clovaai/BESTIE utils/transforms/transforms.py ``PhotometricDistort``.
    """
    brightness = _maybe_uniform(rng, -BRIGHTNESS_DELTA, BRIGHTNESS_DELTA)
    contrast_first = bool(rng.random() < 0.5)
    if contrast_first:
        contrast = _maybe_uniform(rng, *CONTRAST_RANGE)
        hue = _maybe_uniform(rng, -HUE_DELTA, HUE_DELTA)
    else:
        hue = _maybe_uniform(rng, -HUE_DELTA, HUE_DELTA)
        contrast = _maybe_uniform(rng, *CONTRAST_RANGE)
    return PhotometricParams(brightness, contrast, hue, contrast_first)


def _maybe_uniform(rng: np.random.Generator, low: float, high: float) -> float | None:
    """With p = 0.5 a value from U(low, high), else None."""
    return float(rng.uniform(low, high)) if rng.random() < 0.5 else None


def photometric_distort(image: np.ndarray, params: PhotometricParams) -> np.ndarray:
    """Brightness, contrast and hue distortion of a uint8 RGB image [H, W, 3].

    In float32: brightness is added and clipped to [0, 255]; contrast multiplies and clips;
    the hue shift is applied in cv2's float HSV (hue in degrees, wrapped into [0, 360]); the
    result is clipped and truncated to uint8. Without a hue shift every step is a function of
    the pixel value alone, so it runs as one uint8 lookup table.

    Returns:
        uint8 [H, W, 3]; ``image`` itself when nothing is applied.

    Reference: clovaai/BESTIE utils/transforms/transforms.py ``PhotometricDistort``,
    ``RandomBrightness``, ``RandomContrast``, ``RandomHue``, ``ConvertColor``.
    """
    if params.hue is None:
        if params.brightness is None and params.contrast is None:
            return image
        values = _brightness_contrast(np.arange(256, dtype=np.float32), params, before=True)
        values = _brightness_contrast(values, params, before=False)
        return cv2.LUT(image, values.astype(np.uint8))
    pixels = _brightness_contrast(image.astype(np.float32), params, before=True)
    # One float buffer, converted in place: two more fresh multi-megabyte arrays per image
    # would cost about as much in page faults as the conversions themselves.
    cv2.cvtColor(pixels, cv2.COLOR_RGB2HSV, dst=pixels)
    hue = pixels[:, :, 0]
    hue += np.float32(params.hue)
    # Wrap into [0, 360] as the official code (cv2 would not wrap negative hues). cv2's hues
    # lie in [0, 360), so only one side can overflow, the side of the shift's sign.
    if params.hue > 0:
        np.subtract(hue, np.float32(360), out=hue, where=hue > 360)
    else:
        np.add(hue, np.float32(360), out=hue, where=hue < 0)
    cv2.cvtColor(pixels, cv2.COLOR_HSV2RGB, dst=pixels)
    pixels = _brightness_contrast(pixels, params, before=False)
    np.clip(pixels, 0, 255, out=pixels)
    return pixels.astype(np.uint8)


def _brightness_contrast(
    pixels: np.ndarray, params: PhotometricParams, *, before: bool
) -> np.ndarray:
    """The float32 steps before (brightness, contrast if first) or after the hue shift."""
    if before and params.brightness is not None:
        pixels += np.float32(params.brightness)
        np.clip(pixels, 0, 255, out=pixels)
    if params.contrast is not None and params.contrast_first == before:
        pixels *= np.float32(params.contrast)
        np.clip(pixels, 0, 255, out=pixels)
    return pixels
