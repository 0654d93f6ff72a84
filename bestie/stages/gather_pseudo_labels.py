"""``python -m bestie gather-pseudo-labels``: merge pseudo-label shards, write the statistics.

``pseudo/train.json`` is a COCO instances file (format in bestie/artifacts.py) whose
annotations also carry ``center`` (y, x) and ``cue`` (y, x, class, score); its ``info``
names the records, cues and WSSS maps it came from and the ``cue_threshold`` the cues had
to exceed, so ``python -m bestie show`` can draw it. ``pseudo/stats.json`` counts
components by outcome and, with ground truth, the true positives (IoU >= 0.5 with a GT
instance of the same class) and the precision.
"""

from __future__ import annotations

import argparse
import logging

from bestie.artifacts import read_json, read_records, write_json
from bestie.stages.synthesize_pseudo_labels import PSEUDO_FORMAT

LOG = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", nargs="+", required=True, help="shard JSON files")
    parser.add_argument("--records", required=True, help="records JSON of the train split")
    parser.add_argument("--cues", required=True, help="cues HDF5 (recorded for audit)")
    parser.add_argument("--wsss", required=True, help="WSSS map folder (recorded for audit)")
    parser.add_argument("--out", required=True, help="output pseudo-label JSON")
    parser.add_argument("--stats", required=True, help="output statistics JSON")


def summarise(totals: dict[str, int]) -> dict[str, float | int | None]:
    """Add precision and recall (fractions) to summed counts."""
    summary: dict[str, float | int | None] = dict(totals)
    with_gt = totals["images_with_gt"] > 0
    accepted = totals["accepted"]
    summary["precision"] = totals["true_positives"] / accepted if with_gt and accepted else None
    gt_count = totals["gt_instances"]
    summary["recall"] = totals["true_positives"] / gt_count if with_gt and gt_count else None
    return summary


def run(args: argparse.Namespace) -> None:
    records, categories = read_records(args.records)
    by_image: dict[int, list] = {}
    totals: dict[str, int] = {}
    thresholds = set()
    for path in args.shards:
        shard = read_json(path)
        thresholds.add(shard.get("cue_threshold"))
        for image_id in shard["images"]:
            by_image[int(image_id)] = []
        for entry in shard["annotations"]:
            by_image[int(entry["image_id"])].append(entry)
        for key, value in shard["stats"].items():
            totals[key] = totals.get(key, 0) + value
    if len(thresholds) > 1:
        raise ValueError(f"pseudo-label shards made with different cue thresholds: {thresholds}")
    missing = [r.name for r in records if r.id not in by_image]
    if missing:
        raise ValueError(f"pseudo-label shards lack {len(missing)} images, e.g. {missing[0]}")
    annotations = []
    for record in records:
        for entry in by_image[record.id]:
            annotations.append({**entry, "id": len(annotations) + 1})
    images = [
        {"id": r.id, "file_name": r.file, "height": r.height, "width": r.width} for r in records
    ]
    info = {"format": PSEUDO_FORMAT, "records": args.records, "cues": args.cues, "wsss": args.wsss}
    info["cue_threshold"] = thresholds.pop() if thresholds else None
    categories_json = [{"id": index, "name": name} for index, name in enumerate(categories)]
    write_json(
        args.out,
        {"info": info, "images": images, "annotations": annotations, "categories": categories_json},
    )
    summary = summarise(totals)
    write_json(args.stats, summary, indent=1)
    LOG.info("%d pseudo instances in %d images; stats %s", len(annotations), len(records), summary)
