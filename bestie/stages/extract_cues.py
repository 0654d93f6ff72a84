"""``python -m bestie extract-cues``: instance cues of one shard of a split (SPEC §1.3).

``--config JSON --records dataset/{split}.json [--model classifier/pam/model.pt] --shard i
--num-shards n --output shard.h5`` writes the cues of images ``i::n`` of the split (records
order). With ``cues.source: gt_points`` or ``supervision: point`` the cues are the records'
ground-truth points with score 1.0 and no model is read. ``gather-cues`` merges the shard
files; one shard and n shards give files with identical content. The HDF5 schema is
documented in bestie/artifacts.py ("instance cues").
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader

from bestie.artifacts import ImageCues, read_records, write_cues
from bestie.config import Config, load_sections, to_dict
from bestie.cues import classifier_cues, cues_from_points
from bestie.data.classification import ClassificationDataset, EvalTransform
from bestie.engine.classifier_trainer import select_device
from bestie.engine.logger import progress
from bestie.models.classifier import load_classifier
from bestie.stages.sharding import add_shard_arguments, select_shard
from bestie.structures import ImageRecord

_LOG = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="stage config sections as JSON")
    parser.add_argument("--records", required=True, help="dataset/{split}.json")
    parser.add_argument("--model", default="", help="classifier model.pt (classifier cues)")
    parser.add_argument("--output", required=True, help="this shard's cues file (.h5)")
    add_shard_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    parser.add_argument("--workers", type=int, default=0, help="image loading processes")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")


def run(args: argparse.Namespace) -> None:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    config = load_sections(args.config)
    records, categories = read_records(args.records)
    shard = select_shard(records, args.shard, args.num_shards)
    from_points = config.cues.source == "gt_points" or config.supervision == "point"
    if from_points:
        cues = {record.id: _point_cues(record) for record in shard}
    else:
        cues = _classifier_cues(config, shard, categories, args)
    attrs = {
        "source": "gt_points" if from_points else "classifier",
        "classifier": "" if from_points else str(args.model),
        "num_classes": len(categories),
        "categories": json.dumps(categories),
        "cues_config": json.dumps(to_dict(config.cues), sort_keys=True),
        "shard": f"{args.shard}/{args.num_shards}",
    }
    write_cues(args.output, cues, attrs=attrs)
    total = sum(entry.peaks.shape[0] for entry in cues.values())
    _LOG.info("%d images, %d cues -> %s", len(cues), total, args.output)


def _point_cues(record: ImageRecord) -> ImageCues:
    return ImageCues(cues_from_points(record.points_array()), record.height, record.width)


def _classifier_cues(
    config: Config, records: Sequence[ImageRecord], categories: list[str], args
) -> dict[int, ImageCues]:
    """Run the classifier over ``records`` in batches; returns image id -> cues."""
    cfg = config.cues
    if not args.model:
        raise ValueError("extract-cues: cues.source is 'classifier' but no --model was given")
    model, metadata = load_classifier(args.model, pam_alpha=cfg.pam_alpha)
    if int(metadata["num_classes"]) != len(categories):
        raise ValueError(
            f"{args.model}: trained for {metadata['num_classes']} classes, the records "
            f"{args.records} have {len(categories)}"
        )
    device = select_device(args.device)
    model.to(device)
    dataset = ClassificationDataset(records, len(categories), EvalTransform(cfg.input_size))
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)
    cues: dict[int, ImageCues] = {}
    for images, _, indices in progress(loader, description="cues"):
        batch = [records[int(index)] for index in indices]
        results = classifier_cues(
            model,
            images.to(device),
            [record.classes for record in batch],
            [(record.height, record.width) for record in batch],
            flip=cfg.flip,
            smooth_kernel=cfg.smooth_kernel,
            peak_kernel=cfg.peak_kernel,
            top_k=cfg.top_k,
            threshold=cfg.threshold,
            map_stride=cfg.map_stride,
        )
        cues.update({record.id: result for record, result in zip(batch, results, strict=True)})
    return cues
