"""``python -m bestie synthesize-pseudo-labels``: pseudo instances by semantic knowledge transfer.

Per shard: for every train image, the WSSS map and the cues (score > ``pseudo.cue_threshold``)
go through :func:`bestie.pseudo_labels.transfer_with_stats`; the accepted instances are
written as COCO annotations with their centre and selecting cue. ``gather-pseudo-labels``
merges the shards into ``pseudo/train.json`` (annotation ids renumbered in image order, so
the file does not depend on the shard count) and ``pseudo/stats.json``, which counts the
true positives against the ground truth when it exists (the paper's Fig. 6).
"""

from __future__ import annotations

import argparse
import logging
import os

import numpy as np
from tqdm import tqdm

from bestie.artifacts import (
    annotations_by_image,
    instances_to_annotations,
    read_cues,
    read_json,
    read_records,
    write_json,
)
from bestie.config import load_sections
from bestie.data.io import label_map_path, read_label_map
from bestie.evaluation.iou import count_true_positives
from bestie.pseudo_labels import STAT_KEYS, transfer_with_stats
from bestie.stages.sharding import add_shard_arguments, select_shard
from bestie.wsss import check_label_map

LOG = logging.getLogger(__name__)
PSEUDO_FORMAT = "bestie.pseudo/1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="JSON of the 'pseudo' config section")
    parser.add_argument("--records", required=True, help="records JSON of the train split")
    parser.add_argument("--cues", required=True, help="cues HDF5 of the train split")
    parser.add_argument("--wsss", required=True, help="folder of the train split's WSSS maps")
    parser.add_argument("--gt", default="", help="COCO ground truth (statistics only)")
    parser.add_argument("--out", required=True, help="output JSON of this shard")
    add_shard_arguments(parser)


def run(args: argparse.Namespace) -> None:
    cfg = load_sections(args.config)
    records, categories = read_records(args.records)
    shard = select_shard(records, args.shard, args.num_shards)
    cues = read_cues(args.cues)
    gt_by_image = {}
    if args.gt and os.path.isfile(args.gt):
        gt = read_json(args.gt)
        gt_by_image = annotations_by_image(gt["annotations"], gt["images"])
    stats = dict.fromkeys((*STAT_KEYS, "cues_used", "true_positives", "gt_instances"), 0)
    stats["images_with_gt"] = 0
    annotations = []
    for record in tqdm(shard, desc=f"pseudo labels shard {args.shard}", mininterval=10):
        path = label_map_path(args.wsss, record.name)
        semantic = check_label_map(read_label_map(path), record, len(categories), path)
        peaks = cues.get(record.id, np.zeros((0, 4), np.float32))
        kept = peaks[peaks[:, 3] > cfg.pseudo.cue_threshold]
        try:
            instances, counts = transfer_with_stats(
                semantic, kept, record.classes, min_area=cfg.pseudo.min_area
            )
        except ValueError as error:  # e.g. a cue outside the image: name the image and file
            raise ValueError(
                f"{args.cues}: image {record.name} (id {record.id}): {error}"
            ) from error
        for key in STAT_KEYS:
            stats[key] += counts[key]
        stats["cues_used"] += len(kept)
        if record.id in gt_by_image:
            stats["images_with_gt"] += 1
            stats["gt_instances"] += len(gt_by_image[record.id])
            gt = gt_by_image[record.id]
            stats["true_positives"] += count_true_positives(
                instances.masks, instances.labels, gt.masks, gt.labels
            )
        for index, entry in enumerate(instances_to_annotations(instances, record.id)):
            entry["center"] = instances.centers[index].tolist()
            entry["cue"] = [float(v) for v in instances.cues[index]]
            annotations.append(entry)
    write_json(
        args.out,
        {
            "images": [r.id for r in shard],
            "annotations": annotations,
            "stats": stats,
            "cue_threshold": cfg.pseudo.cue_threshold,
        },
    )
    LOG.info("shard %d: %d images, %d pseudo instances", args.shard, len(shard), len(annotations))
