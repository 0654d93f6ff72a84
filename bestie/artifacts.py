"""Every on-disk format of the pipeline, read and written here only.

All writers are atomic: they write a temporary file in the target directory and rename it
into place, so a killed job never leaves a file that looks complete (Snakemake then sees
the output missing and reruns the job).

Formats (paths relative to ``results/{experiment}/``):

``dataset/{split}.json`` (records, ``bestie.records/1``)
    ``{"format", "dataset", "split", "categories": [{"id", "name"}],
    "images": [{"id", "name", "file", "height", "width", "classes": [c...],
    "points": [[y, x, c]...]}]}``. Class ids are 0-based; ``file`` is absolute. This is all
    that training stages may read about a split.

``dataset/{split}_gt.json`` (ground truth, COCO instances format)
    Standard COCO: ``images`` (``id``, ``file_name``, ``height``, ``width``, optional
    ``void``: an RLE of VOC's 255 boundary pixels), ``annotations`` (``id``, ``image_id``,
    ``category_id`` = 0-based class id, ``segmentation`` as compressed RLE with a utf-8
    ``counts`` string, ``area``, ``bbox`` [x, y, w, h], ``iscrowd`` 0) and ``categories``.
    Never read by training stages; only evaluation, statistics and the ``gt`` oracles.

``wsss/{split}/{name}.png`` (semantic label maps)
    Indexed PNGs (VOC palette), uint8 indices: 0 background, c+1 for class c, 255 ignore;
    one per image of the split, at the image's size. ``wsss/miou_{split}.json`` holds the
    mIoU against ground truth where it exists (``{"images", "miou", "iou", ...}``).

``*/pred_{split}.json`` (predictions, COCO results format)
    A list of ``{"image_id", "category_id", "segmentation" (RLE), "score"}``. An image
    without predictions simply has no entry.

``cues/{split}.h5`` (instance cues, HDF5, ``bestie.cues/1``)
    Per image: peaks (y, x, class, score) and the class maps used; see the "instance cues"
    section below for the full schema.

``cues/stats.json`` (cue statistics against ground truth, ``bestie.cue_stats/1``)
    Per split and cue cut, per class and in total, the counts :data:`CUE_STAT_KEYS`; the
    layout is in ``bestie.stages.cue_stats``.

RLE strings: pycocotools returns ``counts`` as bytes; JSON needs text, so they are decoded as
utf-8 (the encoding pycocotools itself accepts back).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from bestie.structures import ImageRecord, Instances

RECORDS_FORMAT = "bestie.records/1"


# ----------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched.
    The temporary name keeps the suffix so libraries that dispatch on it (cv2, h5py) work.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent
    )
    os.close(handle)
    os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts are shared files
    try:
        yield Path(temporary)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; rename it onto ``path`` on success.

    An existing ``path`` is replaced. On any exception the temporary directory is removed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(temporary, 0o777 & ~_umask())
    try:
        yield temporary
        if target.exists():
            shutil.rmtree(target)
        os.replace(temporary, target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike[str], data: Any, *, indent: int | None = None) -> None:
    write_text(path, json.dumps(data, indent=indent, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file; a missing or malformed file raises ValueError naming it."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError as error:
        raise ValueError(f"{path}: file not found") from error
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error


# ----------------------------------------------------------------------------- RLE
def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """Compressed COCO RLE of a bool [H, W] mask, with ``counts`` as a utf-8 string."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("utf-8")
    return rle


def decode_mask(rle: dict[str, Any]) -> np.ndarray:
    """bool [H, W] mask of a compressed (string or bytes ``counts``) or uncompressed RLE."""
    if isinstance(rle.get("counts"), list):
        rle = mask_utils.frPyObjects(rle, *rle["size"])
    return mask_utils.decode(rle).astype(bool)


def mask_to_bbox(mask: np.ndarray) -> list[float]:
    """COCO box [x, y, width, height] enclosing a bool mask; zeros for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [
        float(cols[0]),
        float(rows[0]),
        float(cols[-1] - cols[0] + 1),
        float(rows[-1] - rows[0] + 1),
    ]


# ----------------------------------------------------------------------------- records
def write_records(
    path: str | os.PathLike[str],
    records: Sequence[ImageRecord],
    categories: Sequence[str],
    *,
    dataset: str,
    split: str,
) -> None:
    images = [
        {
            "id": record.id,
            "name": record.name,
            "file": record.file,
            "height": record.height,
            "width": record.width,
            "classes": list(record.classes),
            "points": [list(point) for point in record.points],
        }
        for record in records
    ]
    write_json(
        path,
        {
            "format": RECORDS_FORMAT,
            "dataset": dataset,
            "split": split,
            "categories": [{"id": index, "name": name} for index, name in enumerate(categories)],
            "images": images,
        },
    )


def read_records(path: str | os.PathLike[str]) -> tuple[list[ImageRecord], list[str]]:
    """Read a records file; returns (records, category names indexed by class id)."""
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != RECORDS_FORMAT:
        raise ValueError(f"{path}: not a records file (expected format {RECORDS_FORMAT!r})")
    categories = [entry["name"] for entry in sorted(data["categories"], key=lambda c: c["id"])]
    records = [
        ImageRecord(
            id=int(image["id"]),
            name=str(image["name"]),
            file=str(image["file"]),
            height=int(image["height"]),
            width=int(image["width"]),
            classes=tuple(int(c) for c in image["classes"]),
            points=tuple((int(p[0]), int(p[1]), int(p[2])) for p in image.get("points", [])),
        )
        for image in data["images"]
    ]
    return records, categories


# ----------------------------------------------------------------------------- COCO instances
def instances_to_annotations(
    instances: Instances, image_id: int, *, first_id: int = 1
) -> list[dict[str, Any]]:
    """COCO annotations (ground-truth style, no score) for one image's instances."""
    annotations = []
    for index in range(len(instances)):
        mask = instances.masks[index]
        annotations.append(
            {
                "id": first_id + index,
                "image_id": int(image_id),
                "category_id": int(instances.labels[index]),
                "segmentation": encode_mask(mask),
                "area": int(mask.sum()),
                "bbox": mask_to_bbox(mask),
                "iscrowd": 0,
            }
        )
    return annotations


def instances_to_results(instances: Instances, image_id: int) -> list[dict[str, Any]]:
    """COCO results entries (predictions) for one image; scores are required."""
    if instances.scores is None:
        raise ValueError(f"image {image_id}: predictions need scores")
    return [
        {
            "image_id": int(image_id),
            "category_id": int(instances.labels[index]),
            "segmentation": encode_mask(instances.masks[index]),
            "score": float(instances.scores[index]),
        }
        for index in range(len(instances))
    ]


def annotations_by_image(
    entries: Sequence[dict[str, Any]], images: Sequence[ImageRecord] | Sequence[dict[str, Any]]
) -> dict[int, Instances]:
    """Group COCO annotation or result entries into one Instances per image id.

    ``images`` gives every image id with its size, so images without entries get zero
    instances. Entries carrying ``score`` produce scored instances.
    """
    sizes = {}
    for image in images:
        if isinstance(image, ImageRecord):
            sizes[image.id] = (image.height, image.width)
        else:
            sizes[int(image["id"])] = (int(image["height"]), int(image["width"]))
    grouped: dict[int, list[dict[str, Any]]] = {image_id: [] for image_id in sizes}
    for entry in entries:
        image_id = int(entry["image_id"])
        if image_id not in grouped:
            raise ValueError(f"annotation {entry.get('id', '?')} names unknown image {image_id}")
        grouped[image_id].append(entry)
    result = {}
    for image_id, group in grouped.items():
        height, width = sizes[image_id]
        if not group:
            result[image_id] = Instances.empty(height, width, with_scores=True)
            continue
        masks = np.stack([decode_mask(entry["segmentation"]) for entry in group])
        if masks.shape[1:] != (height, width):
            raise ValueError(
                f"image {image_id}: mask size {masks.shape[1:]} != image size {(height, width)}"
            )
        labels = [int(entry["category_id"]) for entry in group]
        scores = [float(entry.get("score", 1.0)) for entry in group]
        result[image_id] = Instances(masks, labels, scores)
    return result


# ============================================================================= instance cues
# ``cues/{split}.h5`` (HDF5, format ``bestie.cues/1``), written by ``extract-cues``.
#
#   /                       attrs: format = "bestie.cues/1"; source = "classifier" |
#                           "gt_points"; classifier = the model file the cues came from ("" for
#                           points); num_classes = C; categories = JSON list of class names;
#                           shard = "i/n" (shard files only; the gathered file has none).
#   /images/{image_id}/     one group per image of the split (also images with no cue);
#                           attrs: height, width (original image size).
#     peaks    float32 [N, 4]   (y, x, class, score), pixels of the original image, 0-based
#                               class; sorted by class (image-label order), then score
#                               descending. Extraction keeps score >= cues.threshold; training
#                               keeps score > pseudo.cue_threshold. Point cues have score 1.0.
#     maps     float16 [K, h, w] (classifier cues only) the flip-merged, max-normalised class
#                               maps (before the 3×3 smoothing) of the K image-label classes;
#                               attrs: classes = int [K], stride = s. Map pixel (i, j) is the
#                               full-resolution map at (s·i, s·j): h = ceil(H/s), w = ceil(W/s).
#
# Images are written in increasing id order; ``gather_cues`` merges shard files into one.
CUES_FORMAT = "bestie.cues/1"

# The counts of ``cues/stats.json`` (``bestie.cues.cue_statistics`` makes them).
CUE_STAT_KEYS = (
    "instances",
    "hit_once",
    "missed",
    "missed_touching",
    "hit_multiple",
    "cues",
    "cues_on_background",
)


@dataclass
class ImageCues:
    """The instance cues of one image, as stored in ``cues/{split}.h5``.

    Attributes:
        peaks: float32 [N, 4] (y, x, class, score).
        height, width: original image size.
        maps: float16 [K, h, w] class maps of the image-label classes, or None.
        map_classes: int64 [K] class id of each map, or None.
        stride: subsampling step of ``maps`` (map pixel (i, j) = image pixel (s·i, s·j)).
    """

    peaks: np.ndarray
    height: int
    width: int
    maps: np.ndarray | None = None
    map_classes: np.ndarray | None = None
    stride: int = 1

    def __post_init__(self) -> None:
        self.peaks = np.asarray(self.peaks, dtype=np.float32).reshape(-1, 4)
        if (self.maps is None) != (self.map_classes is None):
            raise ValueError("ImageCues: maps and map_classes go together")
        if self.maps is not None:
            self.maps = np.asarray(self.maps, dtype=np.float16)
            self.map_classes = np.asarray(self.map_classes, dtype=np.int64).reshape(-1)
            if self.maps.ndim != 3 or self.maps.shape[0] != self.map_classes.shape[0]:
                raise ValueError(
                    f"ImageCues: maps {self.maps.shape} do not match classes "
                    f"{self.map_classes.shape}"
                )


def write_cues(
    path: str | os.PathLike[str],
    cues: dict[int, ImageCues],
    *,
    attrs: dict[str, Any],
) -> None:
    """Atomically write a cues file (schema above); ``attrs`` go on the root group."""
    import h5py

    with atomic_path(path) as temporary, h5py.File(temporary, "w") as handle:
        handle.attrs["format"] = CUES_FORMAT
        for name, value in attrs.items():
            handle.attrs[name] = value
        images = handle.create_group("images", track_order=True)
        for image_id in sorted(cues):
            entry = cues[image_id]
            group = images.create_group(str(image_id))
            group.attrs["height"] = int(entry.height)
            group.attrs["width"] = int(entry.width)
            group.create_dataset("peaks", data=entry.peaks)
            if entry.maps is not None:
                maps = group.create_dataset(
                    "maps", data=entry.maps, compression="gzip", compression_opts=4, shuffle=True
                )
                maps.attrs["classes"] = entry.map_classes
                maps.attrs["stride"] = int(entry.stride)


def read_cues(path: str | os.PathLike[str]) -> dict[int, np.ndarray]:
    """The peaks of a cues file: ``{image_id: float32 [N, 4] (y, x, class, score)}``."""
    _, cues = read_cue_file(path, with_maps=False)
    return {image_id: entry.peaks for image_id, entry in cues.items()}


def read_cue_file(
    path: str | os.PathLike[str],
    *,
    with_maps: bool = True,
    image_ids: Collection[int] | None = None,
) -> tuple[dict[str, Any], dict[int, ImageCues]]:
    """Read a cues file: ``(root attrs, {image_id: ImageCues})``; maps only if ``with_maps``.

    ``image_ids`` restricts the images read (the maps of a large split do not fit in memory).
    """
    import h5py

    if not os.path.isfile(path):
        raise ValueError(f"cues file not found: {path}")
    try:
        with h5py.File(path, "r") as handle:
            return _read_cue_handle(handle, path, with_maps, image_ids)
    # h5py reports a truncated or damaged file as OSError, a missing group as KeyError.
    except (OSError, KeyError) as error:
        raise ValueError(
            f"{path}: unreadable cues file (truncated or damaged?): {error}"
        ) from error


def _read_cue_handle(
    handle: Any, path: str | os.PathLike[str], with_maps: bool, image_ids: Collection[int] | None
) -> tuple[dict[str, Any], dict[int, ImageCues]]:
    attrs = {name: _plain(value) for name, value in handle.attrs.items()}
    if attrs.get("format") != CUES_FORMAT:
        raise ValueError(f"{path}: not a cues file (expected format {CUES_FORMAT!r})")
    cues = {}
    for name, group in handle["images"].items():
        if image_ids is not None and int(name) not in image_ids:
            continue
        maps = group.get("maps") if with_maps else None
        cues[int(name)] = ImageCues(
            peaks=group["peaks"][()],
            height=int(group.attrs["height"]),
            width=int(group.attrs["width"]),
            maps=None if maps is None else maps[()],
            map_classes=None if maps is None else maps.attrs["classes"],
            stride=1 if maps is None else int(maps.attrs["stride"]),
        )
    return attrs, cues


def gather_cues(shards: Sequence[str | os.PathLike[str]], path: str | os.PathLike[str]) -> None:
    """Merge shard cue files into one (images in id order, the ``shard`` attribute dropped).

    Raises:
        ValueError: the shards disagree on their attributes or hold the same image twice.
    """
    import h5py

    if not shards:
        raise ValueError(f"{path}: no shard files to gather")
    handles = [_open_hdf5(shard) for shard in shards]
    try:
        attrs = [{k: _plain(v) for k, v in h.attrs.items() if k != "shard"} for h in handles]
        for shard, other in zip(shards[1:], attrs[1:], strict=True):
            if other != attrs[0]:
                raise ValueError(f"{shard}: attributes differ from those of {shards[0]}")
        owner: dict[int, int] = {}
        for index, handle in enumerate(handles):
            for name in handle["images"]:
                if int(name) in owner:
                    raise ValueError(
                        f"image {name} is in both {shards[owner[int(name)]]} and {shards[index]}"
                    )
                owner[int(name)] = index
        with atomic_path(path) as temporary, h5py.File(temporary, "w") as output:
            for name, value in attrs[0].items():
                output.attrs[name] = value
            images = output.create_group("images", track_order=True)
            for image_id in sorted(owner):
                handles[owner[image_id]].copy(f"images/{image_id}", images, name=str(image_id))
    finally:
        for handle in handles:
            handle.close()


def _open_hdf5(path: str | os.PathLike[str]) -> Any:
    """An HDF5 file opened for reading; a missing or damaged file raises ValueError naming it."""
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise ValueError(
            f"{path}: unreadable HDF5 file (missing, truncated or damaged?): {error}"
        ) from error


def _plain(value: Any) -> Any:
    """HDF5 attribute -> plain Python (numpy scalars to numbers, bytes to str)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value
