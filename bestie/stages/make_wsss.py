"""``python -m bestie make-wsss`` / ``gather-wsss``: semantic label maps of one split.

``make-wsss`` writes one shard's maps (``wsss/shards/{split}_{shard}/{name}.png``) and its
confusion matrix against the ground truth where that exists; ``gather-wsss`` links the
shards into ``wsss/{split}/`` and writes ``wsss/miou_{split}.json``. Ground truth is read
for the ``gt`` oracle and for the mIoU only; no threshold is fitted on it.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bestie.artifacts import (
    annotations_by_image,
    atomic_directory,
    decode_mask,
    read_json,
    read_records,
    write_json,
)
from bestie.config import load_sections
from bestie.data.io import label_map_path, read_label_map, write_label_map
from bestie.evaluation.semantic import confusion, miou
from bestie.stages.sharding import add_shard_arguments, select_shard
from bestie.structures import ImageRecord
from bestie.wsss import check_label_map, semantic_from_instances

LOG = logging.getLogger(__name__)
MapSource = Callable[[ImageRecord], np.ndarray]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="JSON of the 'wsss' config section")
    parser.add_argument("--records", required=True, help="records JSON of the split")
    parser.add_argument("--gt", default="", help="COCO ground truth of the split (optional)")
    parser.add_argument("--out", required=True, help="output folder of this shard")
    parser.add_argument("--classifier", default="", help="CAM classifier (method cam)")
    parser.add_argument("--segnet", default="", help="retrained segmentation net (cam + retrain)")
    add_shard_arguments(parser)


def ground_truth_maps(gt_path: str) -> dict[int, np.ndarray]:
    """Ground-truth semantic maps (void = 255) per image id present in the GT file."""
    if not gt_path or not os.path.isfile(gt_path):
        return {}
    gt = read_json(gt_path)
    grouped = annotations_by_image(gt["annotations"], gt["images"])
    maps = {}
    for image in gt["images"]:
        void = decode_mask(image["void"]) if "void" in image else None
        shape = (int(image["height"]), int(image["width"]))
        maps[int(image["id"])] = semantic_from_instances(grouped[int(image["id"])], shape, void)
    return maps


def map_source(cfg, gt_maps: dict[int, np.ndarray], args: argparse.Namespace) -> MapSource:
    """The function giving each image's map under ``wsss.method``."""
    method = cfg.wsss.method
    if method == "gt":

        def oracle(record: ImageRecord) -> np.ndarray:
            if record.id not in gt_maps:
                raise ValueError(f"wsss.method gt: image {record.name} has no ground truth")
            return gt_maps[record.id]

        return oracle
    if method == "external":
        folder = cfg.wsss.external_dir
        if not folder or not os.path.isdir(folder):
            raise ValueError(f"config key 'wsss.external_dir': folder not found: {folder!r}")

        def external(record: ImageRecord) -> np.ndarray:
            path = label_map_path(folder, record.name)
            if not os.path.isfile(path):
                raise ValueError(f"wsss.external_dir: no map for image {record.name}: {path}")
            return read_label_map(path)

        return external
    from bestie.wsss_cam import cam_map_source  # the CAM path needs torch and the models

    return cam_map_source(cfg, args)


def run(args: argparse.Namespace) -> None:
    cfg = load_sections(args.config)
    records, categories = read_records(args.records)
    shard = select_shard(records, args.shard, args.num_shards)
    gt_maps = ground_truth_maps(args.gt)
    source = map_source(cfg, gt_maps, args)
    size = len(categories) + 1
    matrix = np.zeros((size, size), np.int64)
    scored = 0
    with atomic_directory(args.out) as folder:
        for record in tqdm(shard, desc=f"wsss shard {args.shard}", mininterval=10):
            semantic = check_label_map(source(record), record, len(categories), cfg.wsss.method)
            write_label_map(label_map_path(folder, record.name), semantic)
            if record.id in gt_maps:
                matrix += confusion(semantic, gt_maps[record.id], len(categories))
                scored += 1
        write_json(folder / "confusion.json", {"images": scored, "matrix": matrix.tolist()})
    LOG.info("wrote %d maps to %s (%d scored against GT)", len(shard), args.out, scored)


def gather(shards: list[str], records_path: str, out: str, miou_path: str) -> None:
    """Link every shard's maps into ``out`` and write the split's mIoU."""
    records, categories = read_records(records_path)
    size = len(categories) + 1
    matrix, scored = np.zeros((size, size), np.int64), 0
    with atomic_directory(out) as folder:
        for shard in shards:
            for png in sorted(Path(shard).glob("*.png")):
                os.link(png, folder / png.name)
            counts = read_json(Path(shard) / "confusion.json")
            matrix += np.asarray(counts["matrix"], np.int64)
            scored += counts["images"]
        missing = [r.name for r in records if not os.path.isfile(label_map_path(folder, r.name))]
        if missing:
            raise ValueError(f"WSSS shards lack maps for {len(missing)} images, e.g. {missing[0]}")
    summary = {"images": scored, "miou": None, "iou": {}, "pixel_accuracy": None}
    if scored:
        figures = miou(matrix, categories)
        # JSON has no NaN: a class absent from both maps and ground truth is null
        summary["iou"] = {name: _finite(value) for name, value in figures["iou"].items()}
        summary["miou"] = _finite(figures["miou"])
        summary["pixel_accuracy"] = _finite(figures["pixel_accuracy"])
    write_json(miou_path, {**summary, "confusion": matrix.tolist()}, indent=1)
    LOG.info("%s: %d maps, mIoU %s", out, len(records), summary["miou"])


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def add_gather_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", nargs="+", required=True, help="shard folders")
    parser.add_argument("--records", required=True, help="records JSON of the split")
    parser.add_argument("--out", required=True, help="output folder of the split's maps")
    parser.add_argument("--miou", required=True, help="output mIoU JSON")


def run_gather(args: argparse.Namespace) -> None:
    gather(args.shards, args.records, args.out, args.miou)
