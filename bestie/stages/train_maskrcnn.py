"""``python -m bestie train-maskrcnn``: train the Mask R-CNN refinement model (paper §4.3).

Reads the train records and a COCO instances file: ``maskrcnn/pseudo_gt_train.json`` (the
instance network's confident train predictions, ``export-pseudo-gt``) or, for the fully
supervised upper bound (``maskrcnn.source: gt``), the ground truth ``dataset/train_gt.json``.
That oracle is the only training path of the pipeline that reads ground truth, and the
workflow hands it the GT file only under ``maskrcnn.source: gt``. Writes
``maskrcnn/model.pt``, ``maskrcnn/train_log.csv`` and ``maskrcnn/checkpoints/last.pt``; a
rerun resumes from the checkpoint. Under ``torchrun`` it trains data-parallel over the job's
GPUs (gloo on CPU).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from bestie.artifacts import read_json, read_records
from bestie.config import load_sections
from bestie.data.maskrcnn_dataset import MaskRcnnDataset, ground_truth_instances, training_records
from bestie.engine.checkpoint import inputs_key, save_model
from bestie.engine.distributed import cleanup, init_process
from bestie.engine.maskrcnn_trainer import train_maskrcnn
from bestie.models.maskrcnn import build_maskrcnn, maskrcnn_metadata

LOG = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="JSON of the maskrcnn and seed sections")
    parser.add_argument("--records", required=True, help="records JSON of the train split")
    parser.add_argument(
        "--annotations",
        required=True,
        help="COCO instances to learn: maskrcnn/pseudo_gt_train.json (ground truth: oracle)",
    )
    parser.add_argument("--out", required=True, help="output model.pt")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")


def run(args: argparse.Namespace) -> None:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cfg = load_sections(args.config)
    mcfg = cfg.maskrcnn
    process = init_process(args.device)
    try:
        records, categories = read_records(args.records)
        instances = ground_truth_instances(read_json(args.annotations), records)
        chosen = training_records(records, instances, mcfg.empty_policy)
        source = "ground truth (oracle)" if mcfg.source == "gt" else "pseudo ground truth"
        LOG.info(
            "training on %s: %d of %d images (empty_policy %s), %d instances",
            source,
            len(chosen),
            len(records),
            mcfg.empty_policy,
            sum(len(instances[record.id]) for record in chosen),
        )
        dataset = MaskRcnnDataset(chosen, instances, flip=mcfg.flip, seed=cfg.seed)
        torch.manual_seed(cfg.seed)  # the random init of every process is the same
        model = build_maskrcnn(
            len(categories),
            backbone=mcfg.backbone,
            min_size=mcfg.min_size,
            max_size=mcfg.max_size,
            anchor_sizes=mcfg.anchor_sizes,
            roi_batch_size=mcfg.roi_batch_size,
            fpn_channels=mcfg.fpn_channels,
            weights=mcfg.weights,
            backbone_weights=mcfg.backbone_weights,
            trainable_layers=mcfg.trainable_layers,
        )
        key = inputs_key(args.config, [args.records, args.annotations], [r.file for r in records])
        output = Path(args.out).parent
        model = train_maskrcnn(mcfg, model, dataset, output, process, seed=cfg.seed, key=key)
        if process.is_main:
            metadata = maskrcnn_metadata(
                model, categories, source=mcfg.source, iterations=mcfg.iterations
            )
            save_model(args.out, model, metadata)
            LOG.info("saved %s", args.out)
    finally:
        cleanup(process)
