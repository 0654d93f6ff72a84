"""``python -m bestie train-segnet``: retrain a segmentation net on the raw CAM masks.

Reads the train records and the folder of raw CAM masks of the train split
(``wsss/cam/train/{name}.png``, written by ``make-wsss`` with ``wsss.retrain`` off; see
``bestie.wsss_cam``); writes into ``--output-dir`` (``results/{exp}/wsss/segnet/``):

- ``model.pt``: the weights and the architecture (metadata: backbone, num_classes_with_bg,
  categories, crop, iterations), read back by ``bestie.wsss_cam.load_segnet``;
- ``train_log.csv``: loss, pixel accuracy against the CAM masks, ignored fraction, lr;
- ``checkpoints/last.pt``: resumable state (not a rule output, so it survives a rerun).

No ground truth is read.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import torch

from bestie.artifacts import read_records
from bestie.config import load_sections
from bestie.data.io import label_map_loader, label_map_path
from bestie.engine.checkpoint import inputs_key, save_model
from bestie.engine.distributed import Process, cleanup, init_process
from bestie.engine.segnet_trainer import SegnetAugmentation, SegnetDataset, train_segnet
from bestie.models.semantic_net import build_semantic_net
from bestie.structures import ImageRecord

LOG = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="JSON of the 'wsss' and 'seed' sections")
    parser.add_argument("--records", required=True, help="records JSON of the train split")
    parser.add_argument("--masks", required=True, help="folder of the raw CAM masks (PNG)")
    parser.add_argument("--output-dir", required=True, help="wsss/segnet/")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")


def run_key(config_json: str, folder: str, records: list[ImageRecord]) -> str:
    """Checkpoint key: the stage config, the content of every record's mask and the path and
    size of its image (``engine.checkpoint.inputs_key``)."""
    masks = [label_map_path(folder, record.name) for record in records]
    for record, path in zip(records, masks, strict=True):
        if not os.path.isfile(path):
            raise ValueError(f"train-segnet: no CAM mask for image {record.name}: {path}")
    return inputs_key(config_json, masks, [record.file for record in records])


def run(args: argparse.Namespace) -> None:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    config = load_sections(args.config)
    records, categories = read_records(args.records)
    output = Path(args.output_dir)
    process = init_process(args.device)
    try:
        _train(config, args, records, categories, output, process)
    finally:
        cleanup(process)


def _train(config, args, records, categories, output: Path, process: Process) -> None:
    cfg = config.wsss
    key = run_key(args.config, args.masks, records)
    torch.manual_seed(config.seed)  # the random init of every process is the same
    model = build_semantic_net(cfg.backbone, len(categories) + 1, weights=cfg.weights)
    dataset = SegnetDataset(
        records,
        label_map_loader(args.masks),
        SegnetAugmentation(cfg.crop, cfg.scale_min, cfg.scale_max),
        seed=config.seed,
        ignore_border=cfg.ignore_border,
    )
    LOG.info(
        "segnet %s: %d images, %d classes, %d iterations of batch %d, %d process(es) on %s",
        cfg.backbone,
        len(records),
        len(categories),
        cfg.iterations,
        cfg.batch_size,
        process.world_size,
        process.device,
    )
    model = train_segnet(model, dataset, cfg, output, process, seed=config.seed, key=key)
    if not process.is_main:
        return
    metadata = {
        "backbone": cfg.backbone,
        "num_classes_with_bg": len(categories) + 1,
        "categories": categories,
        "crop": cfg.crop,
        "iterations": cfg.iterations,
    }
    save_model(output / "model.pt", model, metadata)
