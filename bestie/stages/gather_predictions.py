"""``python -m bestie gather-predictions``: concatenate prediction shards (COCO results)."""

from __future__ import annotations

import argparse
import logging

from bestie.artifacts import read_json, read_records, write_json

LOG = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", nargs="+", required=True, help="shard results JSON files")
    parser.add_argument("--records", required=True, help="records JSON of the split")
    parser.add_argument("--out", required=True, help="output COCO results JSON")


def run(args: argparse.Namespace) -> None:
    records, _ = read_records(args.records)
    order = {record.id: index for index, record in enumerate(records)}
    results = []
    for path in args.shards:
        for entry in read_json(path):
            if int(entry["image_id"]) not in order:
                raise ValueError(f"{path}: prediction for unknown image {entry['image_id']}")
            results.append(entry)
    results.sort(key=lambda entry: order[int(entry["image_id"])])  # stable: keeps shard order
    write_json(args.out, results)
    LOG.info("%d predictions for %d images -> %s", len(results), len(records), args.out)
