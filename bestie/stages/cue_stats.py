"""``python -m bestie cue-stats``: how well the instance cues match the ground truth.

``--split NAME CUES.h5 GT.json`` (repeatable) ``--config JSON --output cues/stats.json``.
For each split, at two cue cuts, all cues (every extracted cue, score >= cues.threshold)
and the training cut (score > pseudo.cue_threshold, the cues that make pseudo labels):
per class and in total, the GT instances hit by exactly one cue of their class (the ones
the semantic transfer can turn into a pseudo instance when the WSSS component is that
instance), by none (and of those, the ones touching another instance of their class: one
blob in a class map, where a single peak is expected) and by several, and the cues on no GT
instance of their class. The GT is read here only, never by training stages.

Output (``bestie.cue_stats/1``)::

    {"format", "categories": [names], "cue_threshold": 0.7,
     "splits": {"train": {"images", "images_without_cues",
                          "all_cues": {"total": counts, "<class name>": counts, ...},
                          "above_cue_threshold": {...}}, ...}}

with counts = {instances, hit_once, missed, missed_touching, hit_multiple, cues,
cues_on_background}.
"""

from __future__ import annotations

import argparse
import json
import logging

from bestie.artifacts import annotations_by_image, read_cue_file, read_json, write_json
from bestie.config import load_sections
from bestie.cues import cue_statistics

FORMAT = "bestie.cue_stats/1"
_LOG = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="stage config sections as JSON")
    parser.add_argument(
        "--split",
        nargs=3,
        action="append",
        required=True,
        metavar=("NAME", "CUES", "GT"),
        help="a split name, its cues file and its COCO ground truth (repeatable)",
    )
    parser.add_argument("--output", required=True, help="cues/stats.json")


def split_statistics(cues_path: str, gt_path: str, cue_threshold: float) -> tuple[dict, list]:
    """The statistics of one split (see the module docstring) and the category names."""
    attrs, cues = read_cue_file(cues_path, with_maps=False)
    gt = read_json(gt_path)
    instances = annotations_by_image(gt["annotations"], gt["images"])
    missing = sorted(set(instances) - set(cues))
    if missing:
        raise ValueError(f"{cues_path}: no cues entry for GT images {missing[:5]}")
    names = json.loads(attrs["categories"])
    triples = [
        (cues[image_id].peaks, instances[image_id].masks, instances[image_id].labels)
        for image_id in sorted(instances)
    ]
    result: dict = {
        "images": len(triples),
        "images_without_cues": sum(1 for peaks, _, _ in triples if peaks.shape[0] == 0),
    }
    for name, min_score in (("all_cues", None), ("above_cue_threshold", cue_threshold)):
        table = cue_statistics(triples, len(names), min_score=min_score)
        result[name] = {"total": table["total"]}
        result[name].update({names[c]: table[str(c)] for c in range(len(names))})
    return result, names


def run(args: argparse.Namespace) -> None:
    config = load_sections(args.config)
    threshold = config.pseudo.cue_threshold
    output: dict = {"format": FORMAT, "cue_threshold": threshold, "splits": {}}
    for name, cues_path, gt_path in args.split:
        stats, output["categories"] = split_statistics(cues_path, gt_path, threshold)
        output["splits"][name] = stats
        for cut in ("all_cues", "above_cue_threshold"):
            total = stats[cut]["total"]
            _LOG.info(
                "%s %s: %d GT instances, hit once %d, missed %d (%d touching their class), "
                "several %d; %d cues, %d on background",
                name,
                cut,
                total["instances"],
                total["hit_once"],
                total["missed"],
                total["missed_touching"],
                total["hit_multiple"],
                total["cues"],
                total["cues_on_background"],
            )
    write_json(args.output, output, indent=1)
