"""``python -m bestie predict-instance``: instance predictions of one shard of a split.

Writes a COCO results list (RLE mask, category, score) for the shard's images; images with
no instance contribute no entry. ``gather-predictions`` concatenates the shards, in image
order, into ``instance/pred_{split}.json``.
"""

from __future__ import annotations

import argparse
import logging

import torch

from bestie.artifacts import instances_to_results, read_records, write_json
from bestie.config import load_sections
from bestie.data.io import read_image
from bestie.engine.checkpoint import load_model
from bestie.engine.logger import progress
from bestie.inference import predict_image
from bestie.models.instance_net import build_instance_net
from bestie.stages.sharding import add_shard_arguments, select_shard

LOG = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="JSON of the 'decode' config section")
    parser.add_argument("--model", required=True, help="instance/model.pt")
    parser.add_argument("--records", required=True, help="records JSON of the split")
    parser.add_argument("--out", required=True, help="output COCO results JSON of the shard")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    add_shard_arguments(parser)


def load_instance_net(path: str, device: torch.device) -> torch.nn.Module:
    """The trained instance network of a model file, in eval mode on ``device``."""
    state, metadata = load_model(path)
    model = build_instance_net(metadata["backbone"], int(metadata["num_classes"]))
    model.load_state_dict(state)
    return model.to(device).eval()


def pick_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def run(args: argparse.Namespace) -> None:
    cfg = load_sections(args.config)
    device = pick_device(args.device)
    model = load_instance_net(args.model, device)
    records, _ = read_records(args.records)
    shard = select_shard(records, args.shard, args.num_shards)
    results = []
    for record in progress(shard, description=f"predict shard {args.shard}"):
        instances = predict_image(model, read_image(record.file), device, cfg.decode)
        results += instances_to_results(instances, record.id)
    write_json(args.out, results)
    LOG.info("shard %d: %d predictions for %d images", args.shard, len(results), len(shard))
