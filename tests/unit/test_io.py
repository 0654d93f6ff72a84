"""Image reading: conversions to 8-bit RGB and errors naming the file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from bestie.data.io import read_image, read_label_map, write_label_map


def test_grayscale_rgba_and_16bit_become_rgb8(tmp_path: Path) -> None:
    gray = np.full((3, 4), 200, np.uint8)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 2], rgba[..., 3] = 10, 30, 128  # B, R, alpha
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    deep = np.full((3, 4), 65535, np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    assert read_image(tmp_path / "gray.png").tolist() == [[[200] * 3] * 4] * 3
    assert read_image(tmp_path / "rgba.png")[0, 0].tolist() == [30, 0, 10]
    converted = read_image(tmp_path / "deep.png")
    assert converted.dtype == np.uint8 and converted.max() == 255 and converted.shape == (3, 4, 3)


def test_missing_and_corrupt_images_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nothere.png"):
        read_image(tmp_path / "nothere.png")
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.zeros((40, 40, 3), np.uint8))
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:30])
    with pytest.raises(ValueError, match="cut.png"):
        read_image(tmp_path / "cut.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.jpg"):
        read_image(tmp_path / "empty.jpg")


def test_label_map_round_trip_keeps_indices(tmp_path: Path) -> None:
    labels = np.array([[0, 1, 2], [255, 20, 0]], np.uint8)
    write_label_map(tmp_path / "m.png", labels)
    assert np.array_equal(read_label_map(tmp_path / "m.png"), labels)
    with pytest.raises(ValueError, match="missing.png"):
        read_label_map(tmp_path / "missing.png")
