"""``python -m bestie predict-maskrcnn``: Mask R-CNN predictions of one shard of a split.

Writes a COCO results list (RLE mask at the original image size, 0-based category, score;
masks thresholded at probability 0.5) for the shard's images; images with no detection
contribute no entry. ``gather-maskrcnn-predictions`` concatenates the shards, in image order,
into ``maskrcnn/pred_{split}.json``, which the ``evaluate`` rule scores.
"""

from __future__ import annotations

import argparse
import logging

import torch

from bestie.artifacts import instances_to_results, read_records, write_json
from bestie.data.io import read_image
from bestie.engine.checkpoint import load_model
from bestie.engine.logger import progress
from bestie.models.maskrcnn import predict_instances, rebuild_maskrcnn
from bestie.stages.sharding import add_shard_arguments, select_shard

LOG = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="maskrcnn/model.pt")
    parser.add_argument("--records", required=True, help="records JSON of the split")
    parser.add_argument("--out", required=True, help="output COCO results JSON of the shard")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    add_shard_arguments(parser)


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but CUDA is not available")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def run(args: argparse.Namespace) -> None:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    state, metadata = load_model(args.model)
    model = rebuild_maskrcnn(state, metadata).to(device).eval()
    records, categories = read_records(args.records)
    if list(categories) != list(metadata["categories"]):
        raise ValueError(
            f"{args.model} was trained on classes {metadata['categories']}, "
            f"the records have {categories}"
        )
    shard = select_shard(records, args.shard, args.num_shards)
    results = []
    for record in progress(shard, description=f"predict shard {args.shard}"):
        image = read_image(record.file)
        results += instances_to_results(predict_instances(model, image, device), record.id)
    write_json(args.out, results)
    LOG.info("shard %d: %d predictions for %d images", args.shard, len(results), len(shard))
