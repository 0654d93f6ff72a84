"""A tiny image split on disk for classifier and cue tests: a few PNGs + a records file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from bestie.artifacts import write_records
from bestie.structures import ImageRecord

CATEGORIES = ["square", "bar"]


def make_split(
    folder: Path, sizes: list[tuple[int, int]], *, seed: int = 0
) -> tuple[Path, list[ImageRecord]]:
    """Images with a bright square (class 0) and/or a bar (class 1) on noise.

    Image ``i`` has class set ``[[0], [1], [0, 1], []][i % 4]`` (the fourth: no class) and
    one GT point per object. Returns the records path and the records.
    """
    rng = np.random.default_rng(seed)
    records = []
    for index, (height, width) in enumerate(sizes):
        image = rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8)
        classes = [[0], [1], [0, 1], []][index % 4]
        points = []
        if 0 in classes:
            image[4:14, 4:14] = (230, 40, 40)
            points.append((9, 9, 0))
        if 1 in classes:
            image[height - 8 : height - 4, 6 : width - 6] = (40, 230, 40)
            points.append((height - 6, width // 2, 1))
        file = folder / f"image_{index}.png"
        cv2.imwrite(str(file), image[:, :, ::-1])
        records.append(
            ImageRecord(
                id=index + 1,
                name=f"image_{index}",
                file=str(file),
                height=height,
                width=width,
                classes=tuple(classes),
                points=tuple(points),
            )
        )
    path = folder / "train.json"
    write_records(path, records, CATEGORIES, dataset="tiny", split="train")
    return path, records
