"""Image and label-map reading with clear errors.

Every image enters the pipeline through :func:`read_image`, which returns uint8 RGB whatever
the file holds: grayscale is replicated, RGBA drops its alpha, 16-bit is scaled to 8 bits.
Missing, unreadable or truncated files raise ValueError naming the file.
"""

from __future__ import annotations

import os

import cv2
import numpy as np


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as uint8 RGB [H, W, 3].

    Raises:
        ValueError: the file is missing, unreadable, truncated or not an image.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"image file not found: {path}")
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise ValueError(f"cannot decode image (corrupt, truncated or not an image): {path}")
    return to_rgb8(image, path)


def to_rgb8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Convert a decoded cv2 image (BGR/BGRA/gray, 8 or 16 bit) to uint8 RGB [H, W, 3]."""
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ValueError(f"{name}: unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    channels = image.shape[2]
    if channels == 1:
        return np.repeat(image, 3, axis=2)
    if channels == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise ValueError(f"{name}: unsupported channel count {channels}")


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(height, width) of an image file, decoding it (and so validating it) once."""
    image = read_image(path)
    return int(image.shape[0]), int(image.shape[1])


def read_label_map(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an indexed (palette or gray) PNG label map as uint8 [H, W] of indices.

    Pillow returns a palette PNG's indices as they are (cv2 would apply the palette and
    return colours). Raises ValueError naming the file when it is missing or unreadable.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"label map not found: {path}")
    from PIL import Image  # matplotlib depends on Pillow, so it is always installed

    try:
        with Image.open(path) as handle:
            if handle.mode not in ("P", "L", "I;16", "I"):
                raise ValueError(
                    f"{path}: label map must be an indexed or gray PNG, got {handle.mode}"
                )
            array = np.asarray(handle)
    except OSError as error:
        raise ValueError(f"cannot read label map {path}: {error}") from error
    if array.ndim != 2:
        raise ValueError(f"{path}: label map must be 2-D, got shape {array.shape}")
    if array.max(initial=0) > 255:
        raise ValueError(f"{path}: label values above 255")
    return array.astype(np.uint8)


def label_map_path(folder: str | os.PathLike[str], name: str) -> str:
    """Image ``name``'s map in a folder of per-image label maps (WSSS maps, CAM masks):
    ``folder/{name}.png``."""
    return os.path.join(folder, f"{name}.png")


def label_map_loader(folder: str | os.PathLike[str]):
    """record -> the record's map in ``folder`` (:func:`label_map_path`)."""

    def load(record) -> np.ndarray:
        return read_label_map(label_map_path(folder, record.name))

    return load


def write_label_map(path: str | os.PathLike[str], labels: np.ndarray) -> None:
    """Write uint8 [H, W] indices as an indexed PNG with the VOC colour palette (atomic)."""
    from PIL import Image

    from bestie.artifacts import atomic_path

    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise ValueError(
            f"{path}: label map must be uint8 [H, W], got {labels.dtype} {labels.shape}"
        )
    image = Image.fromarray(labels, mode="P")
    image.putpalette(voc_palette())
    with atomic_path(path) as temporary:
        image.save(temporary, format="PNG")


def voc_palette() -> list[int]:
    """The 256-entry VOC colour palette (flattened RGB), 255 = off-white for ignore."""
    palette = []
    for index in range(256):
        red = green = blue = 0
        value = index
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette.extend((red, green, blue))
    palette[255 * 3 : 256 * 3] = [224, 224, 192]
    return palette
