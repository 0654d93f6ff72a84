"""``python -m bestie prepare-dataset``: the records and ground truth of one split.

Writes ``dataset/{split}.json`` (records: what training may read) and
``dataset/{split}_gt.json`` (COCO ground truth: evaluation and statistics only). The
synthetic data set also writes its images to ``dataset/images/{split}/``. Every input is
validated here, before any training runs, with errors naming the file, image or key.
"""

from __future__ import annotations

import argparse
import logging
import os

from bestie.artifacts import write_json, write_records
from bestie.config import Config, load_sections

LOG = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="JSON of the 'dataset' config section")
    parser.add_argument("--split", required=True, choices=["train", "val"])
    parser.add_argument("--records", required=True, help="output records JSON")
    parser.add_argument("--gt", required=True, help="output COCO ground-truth JSON")


def load_split(cfg: Config, split: str, image_dir: str):
    """(records, categories, gt) of one split of the configured data set."""
    dataset = cfg.dataset
    if dataset.name == "synthetic":
        from bestie.data.synthetic import generate_split

        return generate_split(dataset.synthetic, split, image_dir)
    if dataset.name == "coco":
        from bestie.data.coco import load_coco_split

        images = getattr(dataset.coco, f"{split}_images")
        annotations = getattr(dataset.coco, f"{split}_json")
        for key, value in ((f"{split}_images", images), (f"{split}_json", annotations)):
            if not value:
                raise ValueError(f"config key 'dataset.coco.{key}' is empty")
        data = load_coco_split(images, annotations, points=dataset.coco.points)
    else:
        from bestie.data.voc import load_voc_split

        if not dataset.voc.root:
            raise ValueError("config key 'dataset.voc.root' is empty")
        list_file = getattr(dataset.voc, f"{split}_list")
        data = load_voc_split(dataset.voc.root, list_file, with_gt=True)
    return data.records, data.categories, data.gt


def run(args: argparse.Namespace) -> None:
    cfg = load_sections(args.config)
    image_dir = os.path.join(os.path.dirname(os.path.abspath(args.records)), "images", args.split)
    records, categories, gt = load_split(cfg, args.split, image_dir)
    if not records:
        raise ValueError(f"data set '{cfg.dataset.name}': the {args.split} split has no images")
    unlabelled = sum(not record.classes for record in records)
    if unlabelled:
        LOG.warning("%d of %d %s images have no class label", unlabelled, len(records), args.split)
    write_json(args.gt, gt)
    write_records(args.records, records, categories, dataset=cfg.dataset.name, split=args.split)
    LOG.info(
        "%s/%s: %d images, %d classes, %d GT instances -> %s",
        cfg.dataset.name,
        args.split,
        len(records),
        len(categories),
        len(gt["annotations"]),
        args.records,
    )
