"""What a data-set loader returns for one split, and the image check the loaders share.

A loader (:mod:`bestie.data.coco`, :mod:`bestie.data.voc`) reads a raw data set and returns a
:class:`SplitData`: the image records that training may read, the category names indexed by
0-based class id, and the ground truth as a COCO instances dict (the format of
``dataset/{split}_gt.json``, see :mod:`bestie.artifacts`). The prepare-dataset stage writes
both; nothing here touches the results tree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from bestie.structures import ImageRecord


@dataclass
class SplitData:
    """The records and ground truth of one split.

    Attributes:
        records: one :class:`ImageRecord` per image, in the data set's order.
        categories: category names indexed by 0-based class id.
        gt: COCO instances dict: ``images`` (``id``, ``file_name``, ``height``, ``width``,
            optional ``void`` RLE), ``annotations`` (``id`` >= 1, ``image_id``,
            ``category_id`` = 0-based class id, ``segmentation`` compressed RLE with utf-8
            ``counts``, ``area``, ``bbox`` [x, y, w, h], ``iscrowd`` 0) and ``categories``
            (``id`` = 0-based class id, ``name``).
        skipped: how many source annotations were left out, by reason (for example
            ``{"crowd": 3, "empty_segmentation": 1}``); empty when nothing was skipped.
    """

    records: list[ImageRecord]
    categories: list[str]
    gt: dict[str, Any]
    skipped: dict[str, int] = field(default_factory=dict)


def gt_categories(categories: list[str]) -> list[dict[str, Any]]:
    """COCO ``categories`` entries for names indexed by 0-based class id."""
    return [{"id": index, "name": name} for index, name in enumerate(categories)]


def probe_image(path: str | os.PathLike[str], *, source: str) -> tuple[int, int]:
    """(height, width) of an image file, checked cheaply (header + ``verify``, no decode).

    Any mode Pillow opens is accepted (gray, RGBA, 16-bit): :func:`bestie.data.io.read_image`
    converts them when the image is read.

    Args:
        path: the image file.
        source: what refers to the image (for example ``"train.json: image 7"``), put at the
            front of every error message.

    Raises:
        ValueError: the file is missing, or Pillow cannot identify or verify it.
    """
    from PIL import Image, UnidentifiedImageError

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{source}: image file not found: {path}")
    try:
        with Image.open(path) as handle:
            width, height = handle.size
            handle.verify()
    except UnidentifiedImageError as error:
        raise ValueError(f"{source}: not an image file: {path}") from error
    # Pillow reports a corrupt file as OSError or, from some plugins' verify(), SyntaxError.
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"{source}: unreadable image {path} ({error})") from error
    return int(height), int(width)
