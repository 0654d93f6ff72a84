"""``python -m bestie show PATH --image ID -o out.png``: draw a per-image artifact over its image.

The artifact type is recognised from the path:

- ``cues/{split}.h5``: the peaks over the image (class colours), and each stored class map
  with its class's peaks;
- ``wsss/{split}/`` or one of its PNGs: the WSSS map over the image and alone;
- ``pseudo/train.json``: image | WSSS map + cues (class colours; grey: not above the cue
  threshold, unused) | accepted instances + centres; with
  ``--targets``, the centre/offset/weight targets that ``make_targets`` makes from them
  (centre heatmap, offset magnitude, offset direction, weight);
- ``pred_{split}.json``: image | ground truth | predictions scoring ``--score-threshold``;
- ``dataset/{split}.json``: the image with its image-level label and GT points;
- ``dataset/{split}_gt.json``, ``maskrcnn/pseudo_gt_train.json`` (COCO instances): the
  image | its instances.

The records (and ground truth) of the split are found through the standard
``results/{exp}/dataset/`` layout relative to the artifact (or the paths a pseudo-label file
names), or given with ``--records`` and ``--gt``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import cv2
import numpy as np

from bestie.artifacts import (
    RECORDS_FORMAT,
    annotations_by_image,
    read_cue_file,
    read_json,
    read_records,
)
from bestie.data.io import label_map_path, read_image, read_label_map
from bestie.data.targets import make_targets
from bestie.inspection import find_dataset_file, split_of
from bestie.report.draw import (
    colour_map,
    draw_class_points,
    draw_points,
    label_map_colours,
    offset_direction,
    overlay_heatmap,
    overlay_instances,
    overlay_label_map,
    save_panels,
)
from bestie.stages.synthesize_pseudo_labels import PSEUDO_FORMAT
from bestie.structures import ImageRecord, Instances


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="the artifact to draw (file or WSSS map folder)")
    parser.add_argument("--image", default="", help="image id or name (a PNG map: its own)")
    parser.add_argument("-o", "--output", required=True, help="output PNG")
    parser.add_argument("--records", default="", help="records JSON of the split (default: found)")
    parser.add_argument("--gt", default="", help="COCO ground truth of the split (predictions)")
    parser.add_argument("--targets", action="store_true", help="pseudo labels: draw the targets")
    parser.add_argument("--sigma", type=float, default=6.0, help="centre Gaussian σ (targets)")
    parser.add_argument(
        "--score-threshold", type=float, default=0.3, help="predictions: lowest score drawn"
    )


def find_record(records: list[ImageRecord], image: str) -> ImageRecord:
    """The record whose id or name is ``image``."""
    if not image:
        raise ValueError("--image ID is required for this artifact")
    for record in records:
        if str(record.id) == image or record.name == image:
            return record
    raise ValueError(f"image {image!r} is not in the records")


def _records(args: argparse.Namespace, split: str) -> tuple[list[ImageRecord], list[str]]:
    path = args.records or find_dataset_file(args.path, split)
    return read_records(path)


def _resolve(stored: str, artifact: str) -> str:
    """A path stored in an artifact: as is, or relative to the project holding ``results/``."""
    if os.path.isabs(stored) or os.path.exists(stored):
        return stored
    for parent in Path(artifact).resolve().parents:
        if parent.name == "results":
            return str(parent.parent / stored)
    return stored


def _dot_size(image: np.ndarray) -> int:
    return max(1, round(max(image.shape[:2]) / 120))


def _class_names(classes, categories: list[str]) -> str:
    return ", ".join(categories[c] for c in classes) or "no label"


# ----------------------------------------------------------------------------- cues
def full_resolution(maps: np.ndarray, stride: int, size: tuple[int, int]) -> np.ndarray:
    """Stored class maps [K, h, w] (pixel (i, j) = image (s·i, s·j)) at image size [K, H, W]."""
    height, width = size
    result = np.zeros((len(maps), height, width), np.float32)
    for index, class_map in enumerate(maps.astype(np.float32)):
        grown = cv2.resize(
            class_map,
            (class_map.shape[1] * stride, class_map.shape[0] * stride),
            interpolation=cv2.INTER_LINEAR,
        )
        result[index] = grown[:height, :width]
    return result


def show_cues(args: argparse.Namespace) -> None:
    """Peaks over the image (class colours), then each stored class map with its peaks."""
    records, categories = _records(args, split_of(args.path))
    record = find_record(records, args.image)
    _, cues = read_cue_file(args.path, image_ids={record.id})
    if record.id not in cues:
        raise ValueError(f"{args.path}: no cues for image {record.name} (id {record.id})")
    entry = cues[record.id]
    picture = read_image(record.file)
    size = _dot_size(picture)
    panels = [draw_class_points(picture, entry.peaks, size)]
    labels = _class_names(record.classes, categories)
    titles = [f"{record.name} ({labels}): {len(entry.peaks)} cues"]
    if entry.maps is not None:
        maps = full_resolution(entry.maps, entry.stride, picture.shape[:2])
        for class_id, class_map in zip(entry.map_classes.tolist(), maps, strict=True):
            peaks = entry.peaks[entry.peaks[:, 2] == class_id]
            panels.append(draw_class_points(overlay_heatmap(picture, class_map), peaks, size))
            titles.append(f"{categories[class_id]} map (max {class_map.max():.2f})")
    save_panels(args.output, panels, titles, columns=4)


# ----------------------------------------------------------------------------- WSSS maps
def show_wsss(args: argparse.Namespace) -> None:
    """Image | WSSS map over it | the map alone (a folder of maps or one PNG)."""
    path = Path(args.path)
    folder, image = (path, args.image) if path.is_dir() else (path.parent, args.image or path.stem)
    records, categories = _records(args, split_of(folder))
    record = find_record(records, image)
    semantic = read_label_map(label_map_path(folder, record.name))
    picture = read_image(record.file)
    if semantic.shape != picture.shape[:2]:
        raise ValueError(
            f"{folder}: WSSS map of {record.name} is {semantic.shape}, image {picture.shape[:2]}"
        )
    present = [categories[v - 1] for v in np.unique(semantic).tolist() if 0 < v <= len(categories)]
    panels = [picture, overlay_label_map(picture, semantic), label_map_colours(semantic)]
    titles = [
        f"{record.name} ({_class_names(record.classes, categories)})",
        "WSSS map",
        ", ".join(present) or "background only",
    ]
    save_panels(args.output, panels, titles)


# ----------------------------------------------------------------------------- pseudo labels
def _pseudo_instances(data: dict, record: ImageRecord) -> Instances:
    entries = [a for a in data["annotations"] if a["image_id"] == record.id]
    instances = annotations_by_image(entries, [record])[record.id]
    instances.centers = np.asarray([a["center"] for a in entries], np.int64).reshape(-1, 2)
    return instances


def show_pseudo_labels(data: dict, args: argparse.Namespace) -> None:
    """Image | WSSS map + cues | accepted instances + centres (or, ``--targets``, targets)."""
    info = data["info"]
    records, categories = read_records(args.records or _resolve(info["records"], args.path))
    record = find_record(records, args.image)
    picture = read_image(record.file)
    instances = _pseudo_instances(data, record)
    if args.targets:
        show_targets(picture, instances, record, categories, args)
        return
    semantic = read_label_map(label_map_path(_resolve(info["wsss"], args.path), record.name))
    _, cue_file = read_cue_file(
        _resolve(info["cues"], args.path), with_maps=False, image_ids={record.id}
    )
    cues = cue_file[record.id].peaks if record.id in cue_file else np.zeros((0, 4), np.float32)
    threshold = info.get("cue_threshold")
    used = cues[:, 3] > threshold if threshold is not None else np.ones(len(cues), bool)
    size = _dot_size(picture)
    on_map = overlay_label_map(picture, semantic)
    on_map = draw_points(on_map, cues[~used], colour=(128, 128, 128), size=size)
    panels = [
        picture,
        draw_class_points(on_map, cues[used], size),
        overlay_instances(picture, instances),
    ]
    labels = _class_names(record.classes, categories)
    cue_title = f"WSSS + {int(used.sum())} cues"
    if threshold is not None:
        cue_title += f" > {threshold:g} ({int((~used).sum())} below, grey)"
    titles = [f"{record.name} ({labels})", cue_title, f"{len(instances)} accepted"]
    save_panels(args.output, panels, titles)


def show_targets(
    picture: np.ndarray,
    instances: Instances,
    record: ImageRecord,
    categories: list[str],
    args: argparse.Namespace,
) -> None:
    """The un-augmented training targets of one image's pseudo instances (SPEC §2.2-2.3)."""
    center, offset, weight = make_targets(
        instances, picture.shape[:2], len(categories), sigma=args.sigma
    )
    magnitude = np.hypot(offset[0], offset[1])
    panels = [
        overlay_instances(picture, instances),
        overlay_heatmap(picture, center.max(axis=0, initial=0.0)),
        colour_map(magnitude),
        offset_direction(offset, weight),
        colour_map(weight, vmax=1.0, name="gray"),
    ]
    titles = [
        f"{record.name}: {len(instances)} pseudo instances",
        f"centre heatmap (σ={args.sigma:g})",
        f"offset magnitude (max {magnitude.max(initial=0.0):.1f} px)",
        "offset direction (hue)",
        f"weight ({int(weight.sum())} px)",
    ]
    save_panels(args.output, panels, titles, columns=5)


# ----------------------------------------------------------------------------- predictions
def show_predictions(data: list, args: argparse.Namespace) -> None:
    """Image | ground truth | predictions scoring at least ``--score-threshold``."""
    split = split_of(args.path)
    records, categories = _records(args, split)
    record = find_record(records, args.image)
    gt_json = read_json(args.gt or find_dataset_file(args.path, split, "_gt"))
    gt_images = [image for image in gt_json["images"] if int(image["id"]) == record.id]
    gt_entries = [a for a in gt_json["annotations"] if int(a["image_id"]) == record.id]
    truth = annotations_by_image(gt_entries, gt_images or [record])[record.id]
    entries = [p for p in data if int(p["image_id"]) == record.id]
    predictions = annotations_by_image(entries, [record])[record.id]
    keep = np.flatnonzero(predictions.scores >= args.score_threshold)
    shown = predictions.select(keep[np.argsort(-predictions.scores[keep], kind="stable")])
    picture = read_image(record.file)
    panels = [picture, overlay_instances(picture, truth), overlay_instances(picture, shown)]
    titles = [
        f"{record.name} ({_class_names(record.classes, categories)})",
        f"ground truth: {len(truth)}",
        f"{len(shown)} of {len(predictions)} predictions ≥ {args.score_threshold:g}",
    ]
    save_panels(args.output, panels, titles)


# ----------------------------------------------------------------------------- data set, GT
def show_records(args: argparse.Namespace) -> None:
    """The image | its image-level label and ground-truth points (point supervision)."""
    records, categories = read_records(args.path)
    record = find_record(records, args.image)
    picture = read_image(record.file)
    points = np.asarray(record.points, np.float64).reshape(-1, 3)
    panels = [picture, draw_class_points(picture, points, _dot_size(picture))]
    titles = [
        f"{record.name} ({_class_names(record.classes, categories)})",
        f"{len(points)} GT points",
    ]
    save_panels(args.output, panels, titles)


def show_instances(data: dict, args: argparse.Namespace) -> None:
    """The image | the instances of a COCO instances file (ground truth or pseudo GT)."""
    records, categories = _records(args, split_of(args.path))
    record = find_record(records, args.image)
    images = [image for image in data["images"] if int(image["id"]) == record.id]
    named = {Path(image.get("file_name", record.file)).name for image in images}
    if named != {Path(record.file).name}:  # not there, or another split's image of that id
        raise ValueError(f"{args.path}: image {record.name} (id {record.id}) is not in it")
    entries = [a for a in data["annotations"] if int(a["image_id"]) == record.id]
    instances = annotations_by_image(entries, images)[record.id]
    picture = read_image(record.file)
    panels = [picture, overlay_instances(picture, instances)]
    classes = sorted(set(instances.labels.tolist()))
    titles = [
        f"{record.name} ({_class_names(record.classes, categories)})",
        f"{len(instances)} instances ({_class_names(classes, categories)})",
    ]
    save_panels(args.output, panels, titles)


def run(args: argparse.Namespace) -> None:
    path = Path(args.path)
    suffix = path.suffix.lower()
    if path.is_dir() or suffix == ".png":
        show_wsss(args)
    elif suffix in (".h5", ".hdf5"):
        show_cues(args)
    elif suffix == ".json":
        data = read_json(path)
        if isinstance(data, dict) and data.get("info", {}).get("format") == PSEUDO_FORMAT:
            show_pseudo_labels(data, args)
        elif isinstance(data, list):
            show_predictions(data, args)
        elif isinstance(data, dict) and data.get("format") == RECORDS_FORMAT:
            show_records(args)
        elif isinstance(data, dict) and {"images", "annotations", "categories"} <= data.keys():
            show_instances(data, args)
        else:
            raise ValueError(f"{path}: no drawing for this kind of JSON artifact")
    else:
        raise ValueError(
            f"{path}: no drawing for this kind of artifact (cues .h5, WSSS folder or .png, "
            "pseudo/train.json, pred_{split}.json, records or COCO instances .json)"
        )
