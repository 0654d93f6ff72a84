"""``python -m bestie evaluate-curve``: VOC mAP of every training snapshot (the paper's Fig. 7).

Each model file in ``instance/snapshots/`` (kept every ``instance.snapshot_every``
iterations) predicts the split and is scored like the final model. Training never reads the
evaluation split; this rule runs after it, for the curve only: no checkpoint is selected.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from bestie.artifacts import read_json, read_records, write_json
from bestie.config import load_sections
from bestie.data.io import read_image
from bestie.selection import score_model
from bestie.stages.predict_instance import load_instance_net, pick_device

LOG = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="JSON of 'decode' and 'evaluation'")
    parser.add_argument("--snapshots", required=True, help="folder of snapshot model files")
    parser.add_argument("--records", required=True, help="records JSON of the split")
    parser.add_argument("--gt", required=True, help="COCO ground truth of the split")
    parser.add_argument("--out", required=True, help="output JSON: one entry per snapshot")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def run(args: argparse.Namespace) -> None:
    cfg = load_sections(args.config)
    device = pick_device(args.device)
    records, categories = read_records(args.records)
    gt = read_json(args.gt)
    images = {record.id: read_image(record.file) for record in records}
    thresholds = list(cfg.evaluation.iou_thresholds)
    curve = []
    for path in sorted(Path(args.snapshots).glob("iter_*.pt")):
        model = load_instance_net(str(path), device)
        scores = score_model(
            model, records, images, gt, cfg.decode, thresholds, len(categories), device
        )
        entry = {"iteration": int(path.stem.split("_")[1]), **scores}
        curve.append(entry)
        LOG.info("%s: %s", path.name, entry)
    write_json(args.out, curve, indent=1)
